"""The public surface of ``dedupkit``, pinned (as httpx does): what ``import *`` gives."""

from __future__ import annotations
import __future__

import types

import dedupkit

PUBLIC = [
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


def test_all_is_the_pinned_public_surface_in_order() -> None:
    assert dedupkit.__all__ == PUBLIC


def test_every_public_name_of_the_package_is_exported() -> None:
    names = {
        name
        for name, value in vars(dedupkit).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert names == set(dedupkit.__all__)


def test_every_exported_name_resolves() -> None:
    for name in dedupkit.__all__:
        assert getattr(dedupkit, name) is not None
