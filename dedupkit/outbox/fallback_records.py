"""The intake outcomes the memory fallback holds, as JSON-ready dicts, and how each is written.

One record is one write to the outbox, whatever it holds:

- ``{"event": <CAPI payload>, "tag": true|false|null}``: an event, with a beacon's tag flag;
- ``{"skip": <reason>, "event_name": …, "event_id": …, "tag": …}``: a skipped event;
- ``{"evidence": true|false, "event_name": …, "event_id": …}``: tag evidence alone.

The same dicts are the lines of the spill files; :func:`parse_record` checks one read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Outbox, stored_entry

Record = dict[str, Any]

#: Longest skip reason, event name and event id a record read back may carry.
MAX_REASON = 64
MAX_NAME = 256


def event_record(payload: Mapping[str, Any], tag: bool | None = None) -> Record:
    return {"event": dict(payload), "tag": tag}


def skip_record(
    reason: str, event_name: str | None, event_id: str | None, tag: bool | None = None
) -> Record:
    return {"skip": reason, "event_name": event_name, "event_id": event_id, "tag": tag}


def evidence_record(event_name: str, event_id: str, fired: bool) -> Record:
    return {"evidence": fired, "event_name": event_name, "event_id": event_id}


def write_record(outbox: Outbox, record: Record, *, timeout: float | None = None) -> bool:
    """Write one record in one outbox call; ``True`` when it stored a new event.

    :raises OutboxError: when the outbox fails.
    :raises ValueError: for a record that is none of the three kinds.
    """
    if "event" in record:
        return outbox.put(record["event"], timeout=timeout, tag=record.get("tag"))
    if "skip" in record:
        outbox.record_skip(
            record["skip"],
            event_name=record.get("event_name"),
            event_id=record.get("event_id"),
            timeout=timeout,
            tag=record.get("tag"),
        )
        return False
    if "evidence" in record:
        outbox.record_tag(
            record["event_name"], record["event_id"], bool(record["evidence"]), timeout=timeout
        )
        return False
    raise ValueError("a fallback record is an event, a skip or tag evidence")


def parse_record(value: object) -> Record:
    """``value`` (a decoded spill line) checked to be a record :func:`write_record` takes.

    :raises ValueError: naming what is wrong.
    """
    if not isinstance(value, dict):
        raise ValueError("a record is a JSON object")
    tag = value.get("tag")
    if tag is not None and not isinstance(tag, bool):
        raise ValueError("tag must be true, false or null")
    if "event" in value:
        payload = value["event"]
        if not isinstance(payload, dict):
            raise ValueError("event must be an object")
        stored_entry(payload)
        return {"event": payload, "tag": tag}
    name, event_id = value.get("event_name"), value.get("event_id")
    for field in (name, event_id):
        if field is not None and not (isinstance(field, str) and len(field) <= MAX_NAME):
            raise ValueError("event_name and event_id must be short strings")
    if "skip" in value:
        reason = value["skip"]
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
            raise ValueError("skip must be a reason")
        return skip_record(reason, name, event_id, tag)
    if "evidence" in value:
        if not isinstance(value["evidence"], bool) or name is None or event_id is None:
            raise ValueError("evidence needs true or false, an event_name and an event_id")
        return evidence_record(name, event_id, value["evidence"])
    raise ValueError("a record is an event, a skip or tag evidence")
