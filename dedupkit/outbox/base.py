"""What every outbox backend provides: the contract the sender and the extension rely on.

An outbox holds CAPI event dicts (PII already hashed) keyed by ``(event_name, event_id)``.
Delivery is at least once: an entry is claimed with a lease, then acked, rescheduled or
dead-lettered; a claim whose lease ran out (its process died) can be claimed again.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol


class EntryState(enum.Enum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DEAD = "dead"


# Not slotted: ``payload`` caches what it decodes in the instance's dict.
@dataclass(frozen=True)
class Claimed:
    """An entry handed to one sender until its lease expires."""

    #: Backend-specific id, opaque to callers.
    id: str
    #: The payload exactly as stored, as JSON text: the sender sends it as it is.
    raw: str
    #: How many times delivery was tried before this claim.
    attempts: int = 0
    #: The payload's ``event_time`` (see :func:`event_time_of`) when the backend stored it
    #: beside the payload; ``None`` means "read the payload".
    event_time: float | None = None

    @cached_property
    def payload(self) -> Mapping[str, Any]:
        """The CAPI event dict exactly as enqueued, decoded on first use only: most entries
        are sent as ``raw``, and decoding each at claim would cost more than the claim."""
        payload: Mapping[str, Any] = json.loads(self.raw)
        return payload


def event_time_of(payload: Mapping[str, Any]) -> float | None:
    """The payload's ``event_time`` as a float, ``None`` when it is missing or not a number."""
    value = payload.get("event_time")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    event_name: str
    event_id: str
    reason: str
    died_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counts by state, for ``flask dedupkit status``."""

    pending: int
    in_flight: int
    delivered: int
    dead: int
    #: Age in seconds of the oldest pending entry, ``None`` when nothing is pending.
    oldest_pending_age: float | None
    #: Counters of events not enqueued, by reason (``"bot"``, ``"no_consent"``, ...).
    skipped: Mapping[str, int] = field(default_factory=dict)
    #: The most recent delivery errors, newest first: ``(when, message)``.
    last_errors: Sequence[tuple[float, str]] = ()


class Outbox(Protocol):
    """The storage contract. Every method may raise :class:`dedupkit.errors.OutboxError`."""

    def put(self, payload: Mapping[str, Any], *, now: float | None = None) -> bool:
        """Store an event; ``False`` if ``(event_name, event_id)`` was already stored."""

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        """Claim up to ``limit`` due entries (pending, or in flight past their lease)."""

    def ack(self, ids: Sequence[str]) -> None:
        """Mark claimed entries delivered."""

    def retry(self, ids: Sequence[str], *, not_before: float, error: str) -> None:
        """Give claimed entries back, due again at ``not_before`` (attempts + 1)."""

    def dead(self, ids: Sequence[str], *, reason: str, now: float | None = None) -> None:
        """Move claimed entries to the dead letters with ``reason``."""

    def pause_until(self) -> float:
        """The shared "no request to Pinterest before" time (0 when none)."""

    def set_pause_until(self, when: float) -> None:
        """Raise the shared pause (after a 429/503 ``Retry-After``); never lowers it."""

    def record_skip(self, reason: str) -> None:
        """Count an event that was deliberately not enqueued."""

    def stats(self, *, now: float | None = None) -> OutboxStats: ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    def replay_dead(self, ids: Sequence[str] | None = None, *, now: float | None = None) -> int:
        """Make dead letters pending again (all of them when ``ids`` is None)."""

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Forget delivered entries older than ``older_than`` seconds; returns how many.

        Their ``(event_name, event_id)`` may be enqueued again afterwards.
        """

    def close(self) -> None: ...
