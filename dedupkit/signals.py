"""Blinker signals sent by the sender, so an application can count or alert on deliveries
and pauses.

::

    from dedupkit.signals import event_dead

    @event_dead.connect
    def alert(sender, event, reason, **extra):
        metrics.increment("pinterest.dead", tags={"event": event["event_name"]})

The sender (first argument) is the Flask app when the extension runs the delivery, else
``None``. ``event`` is the CAPI event dict as sent; its user data is already hashed. Receivers
run in the delivery thread after the outcome is stored; an exception in one is logged and does
not affect delivery.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Pinterest processed an event. Keyword argument: ``event``.
event_delivered = _signals.signal(
    "dedupkit.event-delivered", doc="Pinterest processed an event (kwarg: event)."
)

#: An event became a dead letter and will not be sent again unless replayed. Keyword
#: arguments: ``event`` and ``reason`` (Pinterest's message, or ``"expired"`` when it could
#: not be delivered within the retry window).
event_dead = _signals.signal(
    "dedupkit.event-dead", doc="An event became a dead letter (kwargs: event, reason)."
)

#: Delivery stopped for a while, for every process sharing the outbox. Keyword arguments:
#: ``kind`` (``"credentials"``: the token or ad account is wrong, events are kept until it
#: works; ``"rate_limit"``: Pinterest asked to wait), ``reason`` (plain words naming the
#: setting to fix, never the token) and ``until`` (Unix time of the next attempt).
delivery_paused = _signals.signal(
    "dedupkit.delivery-paused",
    doc="Delivery paused for every process (kwargs: kind, reason, until).",
)

#: Delivery works again after a pause this process started. Keyword argument: ``kind``, the
#: kind of the pause that ended.
delivery_resumed = _signals.signal(
    "dedupkit.delivery-resumed", doc="Delivery works again after a pause (kwarg: kind)."
)
