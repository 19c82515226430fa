"""Blinker signals sent by the sender, so an application can count or alert on deliveries.

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
