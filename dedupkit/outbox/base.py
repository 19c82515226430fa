"""What every outbox backend provides: the contract the sender and the extension rely on.

An outbox holds CAPI event dicts (PII already hashed) keyed by ``(event_name, event_id)``.
Delivery is at least once: an entry is claimed with a lease, then acked, rescheduled or
dead-lettered; a claim whose lease ran out (its process died) can be claimed again.
``tests/test_outbox_contract.py`` holds every backend to this module's :class:`Outbox`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from ..wire import encode_event

#: Longer pause reasons (and, in Redis, error messages) are cut: a verbose answer must not
#: bloat the store.
MAX_MESSAGE_LENGTH = 1000


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
class Pause:
    """Why no request goes to Pinterest before ``until``, shared by every sender of the outbox."""

    #: Unix time before which no sender calls Pinterest.
    until: float
    #: What Pinterest (or the operator) said, for ``status`` and the ledger; never a secret.
    reason: str
    #: ``"rate_limit"`` (429/503 ``Retry-After``), ``"credentials"`` (401/403/404), or another
    #: word the sender chooses.
    kind: str
    #: Which token the pause is about, as an identifier safe to show (e.g. a short hash),
    #: never the token itself; ``""`` when it does not matter.
    token_id: str


def stored_entry(payload: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(event_name, event_id, text)`` of a payload to store; ``text`` is what is sent.

    :raises ValueError: (never :class:`~dedupkit.errors.InvalidEvent`, which is about what a
        shop passed to ``track()``) when the payload has no string ``event_name`` or
        ``event_id``, or cannot be sent as UTF-8 JSON text: the intake checks events before
        they reach storage, so this is a programming error, not an outbox failure.
    """
    name, event_id = payload.get("event_name"), payload.get("event_id")
    if not isinstance(name, str) or not isinstance(event_id, str):
        raise ValueError("an outbox payload needs a string 'event_name' and 'event_id'")
    try:
        text = encode_event(payload)
        # Lone surrogates pass json but not UTF-8: refuse them here, the same for every backend.
        text.encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the outbox payload cannot be stored as UTF-8 JSON: {exc}") from None
    return name, event_id, text


def as_offline_text(raw: str) -> str:
    """A stored payload's text with ``action_source`` set to ``"offline"``, re-encoded with
    :func:`~dedupkit.wire.encode_event`; text that does not decode to an object is kept."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(payload, dict):
        return raw
    payload["action_source"] = "offline"
    return encode_event(payload)


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
    """The storage contract. Every method may raise :class:`dedupkit.errors.OutboxError`.

    **Claims.** ``Claimed.id`` names one claim of one entry. ``retry()`` and ``dead()`` act
    only for the entry's *current* claim: a sender whose lease ran out and whose entry another
    sender has since claimed cannot reschedule or dead-letter it (the call ignores that id),
    so a stalled sender never undoes the new claimer's work. ``ack()`` is honoured from any
    claim, even over a dead letter: Pinterest did receive the event. Ids that name no entry,
    or are malformed, are ignored by every method. A reclaim is not an attempt; only
    ``retry()`` counts one.

    **Errors.** Storage failures are :class:`~dedupkit.errors.OutboxError`; a payload that is
    not an event (see :func:`stored_entry`) or a nonsensical argument is a ``ValueError``.
    """

    def put(
        self, payload: Mapping[str, Any], *, now: float | None = None, timeout: float | None = None
    ) -> bool:
        """Store an event as :func:`~dedupkit.wire.encode_event`'s text; ``False`` if
        ``(event_name, event_id)`` was already stored.

        With ``timeout`` the call waits at most about that many seconds for a lock or a slow
        store, then raises :class:`~dedupkit.errors.OutboxError` (for the request path, which
        must never hold a page); without it the backend's own timeout applies.
        """

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        """Claim up to ``limit`` due entries (pending, or in flight past their lease)."""

    def ack(self, ids: Sequence[str]) -> None:
        """Mark claimed entries delivered (ids from any claim of them)."""

    def retry(self, ids: Sequence[str], *, not_before: float, error: str) -> None:
        """Give entries back, due again at ``not_before`` (attempts + 1); current claims only."""

    def dead(self, ids: Sequence[str], *, reason: str, now: float | None = None) -> None:
        """Move entries to the dead letters with ``reason``; current claims only."""

    def pause_until(self) -> float:
        """The shared "no request to Pinterest before" time (0 when none)."""

    def set_pause_until(
        self, when: float, *, reason: str = "", kind: str = "rate_limit", token_id: str = ""
    ) -> None:
        """Raise the shared pause to ``when``, with why (see :class:`Pause`); never lowers it.

        A ``when`` at or below the current pause changes nothing, its reason included.
        """

    def pause(self, *, now: float | None = None) -> Pause | None:
        """The pause in force, ``None`` when there is none (its ``until`` is not after ``now``).

        A pause raised by an older dedupkit, without a reason, has ``reason=""`` and
        ``kind="rate_limit"``.
        """

    def clear_pause(self) -> None:
        """Lift the pause now, whatever it was (``flask dedupkit resume``, a successful probe)."""

    def record_skip(self, reason: str) -> None:
        """Count an event that was deliberately not enqueued."""

    def stats(self, *, now: float | None = None) -> OutboxStats: ...

    def dead_letters(
        self, limit: int = 100, *, reason: str | None = None, since: float | None = None
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, the most recent first.

        :param reason: only those whose reason is exactly this (e.g. ``"expired"``).
        :param since: only those that died at or after this Unix time.
        """

    def count_dead(self, *, reason: str | None = None, since: float | None = None) -> int:
        """How many dead letters :meth:`dead_letters` would list without a limit."""

    def recent(self, limit: int = 100) -> list[LedgerEntry]:
        """Up to ``limit`` entries, the most recently changed first, for the ledger dashboard.

        A backend that does not keep delivered entries (Redis) only counts them in
        :meth:`stats` and lists what it still holds.
        """

    def replay_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        now: float | None = None,
        as_offline: bool = False,
    ) -> int:
        """Make dead letters pending again, due at ``now``, attempts reset; returns how many.

        ``ids`` are :attr:`DeadLetter.id` values (all dead letters when ``None``); other ids
        are ignored. With ``as_offline`` each replayed payload's ``action_source`` becomes
        ``"offline"`` (see :func:`as_offline_text`), the only change made to a stored payload.
        """

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Forget delivered entries older than ``older_than`` seconds; returns how many.

        Their ``(event_name, event_id)`` may be enqueued again afterwards.
        """

    def close(self) -> None: ...
