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


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One event as the dedup ledger dashboard shows it: what was sent, never who to.

    Built from the stored payload, whose user data is already hashed; even so only the
    *names* of the identity fields are kept (``user_fields``), never their values.
    """

    event_name: str
    event_id: str
    state: EntryState
    #: Failed delivery attempts so far (a reclaimed lease is not an attempt).
    attempts: int
    #: The payload's ``event_time``, ``None`` when it has none.
    event_time: float | None
    #: When the entry last changed state (see each backend for what it records).
    updated_at: float
    #: Pinterest's (or the network's) message for the last failed attempt or the dead letter.
    last_error: str | None
    #: Whether ``user_data.click_id`` (the ``_epik`` click id) was sent.
    has_click_id: bool
    #: The ``user_data`` keys present, in payload order, e.g. ``("em", "client_ip_address")``.
    user_fields: tuple[str, ...] = ()


def ledger_entry(
    raw: str,
    *,
    event_name: str,
    event_id: str,
    state: EntryState,
    attempts: int,
    event_time: float | None,
    updated_at: float,
    last_error: str | None,
) -> LedgerEntry:
    """A :class:`LedgerEntry` from a stored payload's JSON text; a payload that does not
    decode still gives its row, with no identity fields."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    user = payload.get("user_data") if isinstance(payload, dict) else None
    fields = tuple(str(k) for k, v in user.items() if v) if isinstance(user, dict) else ()
    if event_time is None and isinstance(payload, dict):
        event_time = event_time_of(payload)
    return LedgerEntry(
        event_name=event_name,
        event_id=event_id,
        state=state,
        attempts=attempts,
        event_time=event_time,
        updated_at=updated_at,
        last_error=last_error or None,
        has_click_id="click_id" in fields,
        user_fields=fields,
    )


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

    def recent(self, limit: int = 100) -> list[LedgerEntry]:
        """Up to ``limit`` entries, the most recently changed first, for the ledger dashboard.

        A backend that does not keep delivered entries (Redis) only counts them in
        :meth:`stats` and lists what it still holds.
        """

    def replay_dead(self, ids: Sequence[str] | None = None, *, now: float | None = None) -> int:
        """Make dead letters pending again (all of them when ``ids`` is None)."""

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Forget delivered entries older than ``older_than`` seconds; returns how many.

        Their ``(event_name, event_id)`` may be enqueued again afterwards.
        """

    def close(self) -> None: ...
