"""The exceptions dedupkit raises.

::

    DedupKitError
    ├── ConfigurationError        a DEDUPKIT_* value is missing or wrong
    ├── InvalidEvent              an event dedupkit refuses to build (also a ValueError)
    │   ├── UnknownEventName      neither a Pinterest event, ``custom`` nor advertiser-defined
    │   └── EventNotAllowed       the browser may not report this event on its own
    ├── OutboxError               the durable queue could not be read or written
    └── BeaconRefused             the events endpoint refused a browser event (also a werkzeug
                                  HTTPException: a 4xx with a JSON reason)
"""

from __future__ import annotations

from werkzeug.exceptions import HTTPException


class DedupKitError(Exception):
    """Base class of every error dedupkit raises."""


class ConfigurationError(DedupKitError):
    """A ``DEDUPKIT_*`` setting is missing or has a value dedupkit cannot use."""


class InvalidEvent(DedupKitError, ValueError):
    """The event cannot be built: the message names the offending field."""


class UnknownEventName(InvalidEvent):
    """The event name is not a Pinterest event, ``custom``, nor a configured advertiser name."""


class OutboxError(DedupKitError):
    """The outbox (SQLite file or Redis) failed; the original error is chained as ``__cause__``."""


class EventNotAllowed(InvalidEvent):
    """A browser reported an event outside ``DEDUPKIT_BROWSER_EVENTS`` (answered with 403)."""


class BeaconRefused(DedupKitError, HTTPException):
    """``POST {prefix}/events`` refused a browser event: a 4xx with ``{"error": description}``.

    Like Flask-WTF's ``CSRFError``, it is a werkzeug exception; the blueprint answers it with
    JSON and the CORS headers the beacon's origin needs.

    :param code: the HTTP status (400, 403, 409, 413, 415, 429).
    :param retry_after: whole seconds for a ``Retry-After`` header (a 429).
    """

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description=description)
        self.code = code
        self.retry_after = retry_after
