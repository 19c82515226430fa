"""dedupkit: count every Pinterest conversion once, and keep the click that caused it.

The Pinterest Tag in the browser and the Conversions API on the server carry one shared
``event_id``; the ``epik`` click id lives in a first-party cookie the server sets.
"""

from __future__ import annotations

from .delivery.client import CapiClient as CapiClient
from .errors import BeaconRefused as BeaconRefused
from .errors import ConfigurationError as ConfigurationError
from .errors import DedupKitError as DedupKitError
from .errors import InvalidEvent as InvalidEvent
from .errors import OutboxError as OutboxError
from .errors import UnknownEventName as UnknownEventName
from .event.model import Event as Event
from .event.model import build_event as build_event
from .extension import DedupKit as DedupKit
from .signals import delivery_paused as delivery_paused
from .signals import delivery_resumed as delivery_resumed
from .signals import event_dead as event_dead
from .signals import event_delivered as event_delivered

#: The one version: pyproject reads it (hatch), the snippet carries the same.
__version__ = "0.1.0"

# No NullHandler on the "dedupkit" logger: it would hide every failure from an app that
# configures no logging. init_app installs dedupkit.logs' handler, which defers to any the
# app sets up.

__all__ = [
    "BeaconRefused",
    "CapiClient",
    "ConfigurationError",
    "DedupKit",
    "DedupKitError",
    "Event",
    "InvalidEvent",
    "OutboxError",
    "UnknownEventName",
    "build_event",
    "delivery_paused",
    "delivery_resumed",
    "event_dead",
    "event_delivered",
]
