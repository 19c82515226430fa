"""The exceptions dedupkit raises.

::

    DedupKitError
    ├── ConfigurationError        a DEDUPKIT_* value is missing or wrong
    ├── InvalidEvent              an event dedupkit refuses to build (also a ValueError)
    │   ├── UnknownEventName      neither a Pinterest event, ``custom`` nor advertiser-defined
    │   └── EventNotAllowed       the browser may not report this event on its own
    └── OutboxError               the durable queue could not be read or written
"""

from __future__ import annotations


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
