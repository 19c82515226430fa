"""CAPI event dicts for tests that drive the outbox and the sender directly."""

from __future__ import annotations

import time
from typing import Any


def capi_event(
    event_id: str, *, name: str = "checkout", event_time: float | None = None, **extra: Any
) -> dict[str, Any]:
    """A minimal event that Pinterest's schema accepts (IP + user agent as the identity)."""
    return {
        "event_name": name,
        "event_id": event_id,
        "event_time": int(time.time() if event_time is None else event_time),
        "action_source": "web",
        "user_data": {"client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": "10.00", "currency": "USD"},
        **extra,
    }
