"""Tag evidence: whether the browser really made the ``pintrk`` call for an event.

Two sources, both beacons to ``POST {prefix}/events``:

- a browser event's own beacon carries ``tag: 1`` (the tag was there and the call made) or
  ``tag: 0`` (blocked or absent): :func:`tag_flag` reads it and the intake stores it in the
  same write as the event's outcome;
- an event the server tracked and the page mirrored with ``{{ dedupkit.pintrk(event) }}`` sends
  ``{"evidence": 1, "event_name": …, "event_id": …, "tag": 1|0}``: :func:`record_evidence`.

Evidence only colours the ledger's verdicts; it never changes what is sent. A beacon is
untrusted, so both are bounded (see :data:`~dedupkit.outbox.base.EVIDENCE_KEPT`); a failing
outbox keeps it in memory, as events are (:meth:`~dedupkit.state.State.record_tag`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..errors import InvalidEvent
from ..state import State

logger = logging.getLogger("dedupkit")

#: Longest event name and id accepted (Pinterest's ``event_id`` limit is 256 characters).
MAX_NAME_LENGTH = 100
MAX_ID_LENGTH = 256
#: The keys an evidence beacon may have.
EVIDENCE_KEYS = frozenset({"evidence", "event_name", "event_id", "tag"})


def is_evidence(body: Mapping[str, object]) -> bool:
    """Whether a beacon body is an evidence beacon rather than an event."""
    return body.get("evidence") in (1, True)


def record_evidence(state: State, body: Mapping[str, object]) -> None:
    """Check an evidence beacon and store what it says.

    :raises InvalidEvent: for a body that is not ``{"evidence": 1, "event_name": <known
        name>, "event_id": <1-256 printable characters>, "tag": 0|1}``, naming the key.
    """
    unknown = sorted(str(key)[:40] for key in body if key not in EVIDENCE_KEYS)
    if unknown:
        raise InvalidEvent(f"an evidence beacon has no key {unknown[0]!r}")
    if not is_evidence(body):
        raise InvalidEvent("evidence must be 1")
    fired = tag_flag(body.get("tag"))
    if fired is None:
        raise InvalidEvent("tag must be 1 (the tag call was made) or 0 (blocked or absent)")
    name = _text(body.get("event_name"), "event_name", MAX_NAME_LENGTH)
    event_id = _text(body.get("event_id"), "event_id", MAX_ID_LENGTH)
    # Evidence is stored under the CAPI name, as the entries are; unknown names are refused.
    state.record_tag(state.names.resolve(name).capi, event_id, fired)


def tag_flag(value: object) -> bool | None:
    """A beacon's ``tag`` flag: ``True`` for 1, ``False`` for 0, ``None`` for anything else
    (no flag: nothing is stored)."""
    if value in (1, True) and not isinstance(value, float):
        return True
    if value in (0, False) and not isinstance(value, float):
        return False
    return None


def _text(value: object, key: str, longest: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= longest:
        raise InvalidEvent(f"{key} must be a string of 1 to {longest} characters")
    if not value.isprintable():
        raise InvalidEvent(f"{key} must not hold control characters")
    return value
