"""The one encoder of the bytes sent to Pinterest for an event.

Both outboxes store :func:`encode_event`'s text and the client joins those texts with
:func:`encode_batch`; so what is stored is, byte for byte, what is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# json.dumps builds an encoder on every call with arguments; one batch has many events.
# NaN and Infinity are not JSON: Pinterest would refuse the whole request.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_event(payload: Mapping[str, Any]) -> str:
    """One CAPI event as compact JSON text, non-ASCII kept as is."""
    return _ENCODER.encode(dict(payload))


def encode_batch(events: Sequence[Mapping[str, Any] | str]) -> bytes:
    """The request body ``{"data": [...]}``, UTF-8.

    An event given as text (from :func:`encode_event`, as stored) is inserted as it is.
    """
    parts = [event if isinstance(event, str) else encode_event(event) for event in events]
    return ('{"data":[' + ",".join(parts) + "]}").encode()
