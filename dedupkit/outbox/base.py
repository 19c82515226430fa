"""What every outbox backend provides: the contract the sender and the extension rely on.

An outbox holds CAPI event dicts (PII already hashed) keyed by ``(event_name, event_id)``.
Delivery is at least once: an entry is claimed with a lease, then acked, rescheduled or
dead-lettered; a claim whose lease ran out (its process died) can be claimed again.
``tests/test_outbox_contract.py`` holds every backend to this module's :class:`Outbox`.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from ..errors import ConfigurationError, OutboxError
from ..event.wire import encode_event
from ..vocabulary import EventState

#: Longer pause reasons (and, in Redis, error messages) are cut: a verbose answer must not
#: bloat the store.
MAX_MESSAGE_LENGTH = 1000
#: Upper bounds (seconds) of the delivery-lag histogram, from ``event_time`` to the ack; the
#: one-hour dedup deadline is one of them.
LAG_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
#: Skipped events remembered one by one (:meth:`Outbox.recent_skips`); counters are kept for all.
SKIPS_KEPT = 500
#: Tag evidence remembered at most, and for how long: forged beacons cannot grow the store
#: beyond this, and evidence outlives the entries it is about no longer than they are kept.
EVIDENCE_KEPT = 100_000
EVIDENCE_TTL = 7 * 24 * 3600.0
#: Longest device label kept (:meth:`Outbox.ack`).
MAX_DEVICE_LENGTH = 80
#: The outcome counter of puts that found their ``(event_name, event_id)`` already stored.
DUPLICATE = "duplicate"
#: The outcomes counted for ever in :attr:`OutboxStats.totals`, shared by every process: events
#: stored, delivered, dead-lettered, replayed from the dead letters, and duplicate puts. They
#: only go up: pruning delivered entries or replaying dead letters lowers none of them.
TOTALS = ("queued", "delivered", "dead", "replayed", DUPLICATE)


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
    if event_time_of(payload) is None:
        raise ValueError("an outbox payload needs a numeric 'event_time'")
    try:
        text = encode_event(payload)
        # Lone surrogates pass json but not UTF-8: refuse them here, the same for every backend.
        text.encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the outbox payload cannot be stored as UTF-8 JSON: {exc}") from None
    return name, event_id, text


class NewerOutbox(OutboxError):
    """The outbox was written by a newer dedupkit (a higher schema version): not used."""


def foreign_outbox(where: str, recorded: str, account: str) -> ConfigurationError:
    """The start-up error of a process whose ad account is not the one its outbox belongs to."""
    return ConfigurationError(
        f"the dedupkit outbox {where} belongs to ad account {recorded}, but this app is "
        f"configured for ad account {account} (DEDUPKIT_AD_ACCOUNT_ID): one outbox serves "
        "one shop. Give this app its own DEDUPKIT_QUEUE_URL (or DEDUPKIT_QUEUE_NAMESPACE for "
        "Redis), or correct DEDUPKIT_AD_ACCOUNT_ID"
    )


def as_offline_text(raw: str) -> str:
    """A stored payload's text with ``action_source`` set to ``"offline"``, re-encoded with
    :func:`~dedupkit.event.wire.encode_event`; text that does not decode to an object is kept."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(payload, dict):
        return raw
    payload["action_source"] = "offline"
    return encode_event(payload)


def summary_of(payload: Mapping[str, Any]) -> tuple[str, float | None, str | None]:
    """What coverage needs of a payload, stored beside it so that no payload is decoded:
    ``(",em,click_id,", value, currency)`` (the ``user_data`` keys with a value, comma-framed
    so that ``",em,"`` finds a key), ``custom_data.value`` as a number and its currency."""
    user = payload.get("user_data")
    keys = [str(k) for k, v in user.items() if v] if isinstance(user, Mapping) else []
    custom = payload.get("custom_data")
    value: float | None = None
    currency: str | None = None
    if isinstance(custom, Mapping):
        try:
            raw = custom.get("value")
            value = None if raw is None or isinstance(raw, bool) else float(raw)
        except (TypeError, ValueError):
            value = None
        if value is not None and not math.isfinite(value):
            value = None
        cur = custom.get("currency")
        currency = cur[:8] if isinstance(cur, str) and cur else None
    return "," + ",".join(keys) + ",", value, currency


def parse_row_ids(ids: Sequence[str]) -> list[tuple[int, int | None]]:
    """``(row id, claim number or None)`` of each well-formed ``"<row>[:<claim>]"`` id of a
    SQL outbox; the others (not digits, or past a 64-bit row id) are ignored."""
    parsed: list[tuple[int, int | None]] = []
    for item in ids:
        row, sep, claim = str(item).partition(":")
        if row.isdigit() and (claim.isdigit() if sep else True) and len(row) < 19:
            parsed.append((int(row), int(claim) if sep and len(claim) < 10 else None))
    return parsed


def device_labels_by_row(devices: Mapping[str, str] | None) -> dict[int, str]:
    """The device labels of ``ack(devices=…)`` by row id, each cut to its limit."""
    labels: dict[int, str] = {}
    for item, label in (devices or {}).items():
        parsed = parse_row_ids([item])
        if parsed and isinstance(label, str) and label:
            labels[parsed[0][0]] = label[:MAX_DEVICE_LENGTH]
    return labels


def lag_bucket(lag: float) -> int:
    """The index in :data:`LAG_BUCKETS` of the first bound ``lag`` fits under (its length
    for longer lags, the ``+Inf`` bucket)."""
    return bisect.bisect_left(LAG_BUCKETS, lag)


@dataclass(frozen=True, slots=True)
class Skip:
    """One event deliberately not sent (the tag may still have counted it)."""

    at: float
    reason: str
    event_name: str | None
    event_id: str | None


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
    #: Puts that found their ``(event_name, event_id)`` already stored, ever.
    duplicates: int = 0
    #: Delivered events by lag (``event_time`` to ack), one count per :data:`LAG_BUCKETS`
    #: bound plus the ``+Inf`` one, not cumulative; ever, not only those still kept.
    lag_counts: Sequence[int] = ()
    #: The sum of those lags, in seconds.
    lag_sum: float = 0.0
    #: Monotonic counts of each of :data:`TOTALS`, ever (missing ones are 0).
    totals: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One event as the dedup ledger dashboard shows it: what was sent, never who to.

    Built from the stored payload, whose user data is already hashed; even so only the
    *names* of the identity fields are kept (``user_fields``), never their values.
    """

    event_name: str
    event_id: str
    state: EventState
    #: Requests that carried the event so far: failed ones, plus the one that delivered it or
    #: was refused (a reclaimed lease, or a credentials pause, is not an attempt).
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
    #: When the entry was stored (``None`` when the backend did not say).
    created_at: float | None = None
    #: ``custom_data.value`` and ``currency`` as sent.
    value: float | None = None
    currency: str | None = None
    #: Delivered with ``?test=true`` (``True``), for real (``False``), or not recorded (``None``).
    test: bool | None = None
    #: Tag evidence: the browser said the tag call was made (``True``), that the tag was blocked
    #: or absent (``False``), or nothing (``None``).
    tag: bool | None = None
    #: The visitor's browser, OS and device type (:func:`dedupkit.delivery.browsers.device_label`),
    #: labelled when the entry was delivered; ``None`` before, or without a user agent.
    device: str | None = None


def ledger_entry(
    raw: str,
    *,
    event_name: str,
    event_id: str,
    state: EventState,
    attempts: int,
    event_time: float | None,
    updated_at: float,
    last_error: str | None,
    fields: str | None = None,
    created_at: float | None = None,
    value: float | None = None,
    currency: str | None = None,
    test: bool | None = None,
    tag: bool | None = None,
    device: str | None = None,
) -> LedgerEntry:
    """A :class:`LedgerEntry` from what a backend stored: the comma-framed ``fields`` of
    :func:`summary_of` when it has them, otherwise the payload's JSON text (decoded only
    then); a payload that does not decode still gives its row, with no identity fields."""
    if fields is not None:
        keys = tuple(k for k in fields.split(",") if k)
    else:
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            framed, value, currency = summary_of(payload)
            keys = tuple(k for k in framed.split(",") if k)
            if event_time is None:
                event_time = event_time_of(payload)
        else:
            keys = ()
    return LedgerEntry(
        event_name=event_name,
        event_id=event_id,
        state=state,
        attempts=attempts,
        event_time=event_time,
        updated_at=updated_at,
        last_error=last_error or None,
        has_click_id="click_id" in keys,
        user_fields=keys,
        created_at=created_at,
        value=value,
        currency=currency,
        test=test,
        tag=tag,
        device=device,
    )


class Outbox(Protocol):
    """The storage contract. Every method may raise :class:`dedupkit.errors.OutboxError`.

    **Claims.** ``Claimed.id`` names one claim of one entry. ``retry()`` and ``dead()`` act
    only for the entry's *current* claim: a sender whose lease ran out and whose entry another
    sender has since claimed cannot reschedule or dead-letter it (the call ignores that id),
    so a stalled sender never undoes the new claimer's work. ``ack()`` is honoured from any
    claim, even over a dead letter: Pinterest did receive the event. Ids that name no entry,
    or are malformed, are ignored by every method. ``attempts`` counts requests that carried
    the entry: ``retry()``, ``ack()`` and ``dead(sent=True)`` add one; a reclaim does not.

    **Errors.** Storage failures are :class:`~dedupkit.errors.OutboxError`; a payload that is
    not an event (see :func:`stored_entry`) or a nonsensical argument is a ``ValueError``.
    """

    def put(
        self,
        payload: Mapping[str, Any],
        *,
        now: float | None = None,
        timeout: float | None = None,
        tag: bool | None = None,
    ) -> bool:
        """Store an event as :func:`~dedupkit.event.wire.encode_event`'s text; ``False`` if
        ``(event_name, event_id)`` was already stored (counted in
        :attr:`OutboxStats.duplicates`). A stored event counts as ``queued`` in
        :attr:`OutboxStats.totals`.

        With ``tag`` the event's tag evidence (see :meth:`record_tag`) is stored in the same
        write: a beacon's outcome is one write, whole or not at all.

        With ``timeout`` the call waits at most about that many seconds for a lock or a slow
        store, then raises :class:`~dedupkit.errors.OutboxError` (for the request path, which
        must never hold a page); without it the backend's own timeout applies.
        """

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        """Claim up to ``limit`` due entries (pending, or in flight past their lease)."""

    def ack(
        self,
        ids: Sequence[str],
        *,
        test: bool | None = None,
        devices: Mapping[str, str] | None = None,
    ) -> None:
        """Mark claimed entries delivered (ids from any claim of them); attempts + 1.

        :param test: the request was sent with ``?test=true`` (Pinterest records nothing):
            kept with each entry for the ledger's *test* verdict; ``None`` records nothing.
        :param devices: the visitor's device label by id (see :mod:`dedupkit.delivery.browsers`),
            kept with each entry for the ledger's "where the tag is lost"; at most
            :data:`MAX_DEVICE_LENGTH` characters of each are kept.
        Each delivery also counts its lag, from ``event_time`` (else the put) to now, in
        :attr:`OutboxStats.lag_counts`.
        """

    def retry(
        self, ids: Sequence[str], *, not_before: float, error: str, sent: bool = True
    ) -> None:
        """Give entries back, due again at ``not_before``; current claims only.

        :param sent: the entries were in a request that failed (attempts + 1); ``False`` for
            those given back unsent (held by a pause, left over by a probe or a budget).
        """

    def dead(
        self, ids: Sequence[str], *, reason: str, now: float | None = None, sent: bool = True
    ) -> None:
        """Move entries to the dead letters with ``reason``; current claims only.

        :param sent: the entries were in a request Pinterest refused (attempts + 1); ``False``
            for those given up without a request (expired at claim, too large to send).
        """

    def set_pause_until(
        self, when: float, *, reason: str = "", kind: str = "rate_limit", token_id: str = ""
    ) -> None:
        """Raise the shared pause to ``when``, with why (see :class:`Pause`); never lowers it.

        A ``when`` at or below the current pause changes nothing, its reason included.
        """

    def pause(self, *, now: float | None = None) -> Pause | None:
        """The pause in force, ``None`` when there is none (its ``until`` is not after ``now``)."""

    def clear_pause(self, *, kind: str | None = None) -> None:
        """Lift the pause now, whatever it was (``flask dedupkit resume``), or only when it is
        of ``kind`` (a successful probe lifts a credentials pause, not a rate limit)."""

    def record_skip(
        self,
        reason: str,
        *,
        event_name: str | None = None,
        event_id: str | None = None,
        now: float | None = None,
        timeout: float | None = None,
        tag: bool | None = None,
        count: int = 1,
    ) -> None:
        """Count ``count`` events that were deliberately not enqueued (or lost: see
        :class:`~dedupkit.vocabulary.SkipReason`); with a name and id the event is also
        remembered among the last :data:`SKIPS_KEPT` (see :meth:`recent_skips`), and with
        ``tag`` its tag evidence is stored, all in one write. ``timeout`` bounds the write
        as in :meth:`put`."""

    def recent_skips(self, limit: int = 100) -> list[Skip]:
        """Up to ``limit`` of the skipped events recorded with a name and id, newest first."""

    def record_tag(
        self,
        event_name: str,
        event_id: str,
        fired: bool,
        *,
        now: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Remember whether the browser made the tag call for ``(event_name, event_id)``;
        ``timeout`` bounds the write as in :meth:`put`.

        Evidence may come before the entry, or for an entry never stored. ``fired`` once stays
        fired (a blocked reload does not undo it). Bounded: the oldest evidence goes beyond
        :data:`EVIDENCE_KEPT` records or after :data:`EVIDENCE_TTL`.
        """

    def entries_since(self, since: float, *, limit: int = 20_000) -> list[LedgerEntry]:
        """Entries stored at or after ``since`` (any state), newest first, at most ``limit``,
        with their tag evidence: what the coverage summary is computed from.

        A backend may have forgotten delivered entries older than a day (Redis).
        """

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
        """Up to ``limit`` entries, the most recently changed first, for the ledger dashboard,
        with their tag evidence.

        Delivered entries are listed while the backend keeps them (SQLite until pruned, Redis
        for a day).
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
