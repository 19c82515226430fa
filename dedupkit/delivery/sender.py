"""Delivery: claim a batch from the outbox, send it, record what became of each event.

:class:`Sender` does one batch per :meth:`~Sender.run_once` and loops in :meth:`~Sender.run`;
:class:`BackgroundSender` runs that loop in a daemon thread of each process.

What a batch meets, and what the sender does about it:

- a verdict per event: delivered ones are acked, refused ones become dead letters with
  Pinterest's message, the others are retried with backoff until their retry window ends;
- a whole-batch refusal (400, 413, an answer that is not Pinterest's JSON): the batch is
  halved until the events at fault are alone, so one bad event never costs its neighbours;
- a credentials failure (401, 403, 404): delivery pauses for every process, the events stay
  pending (no attempt counted), and one small probe after the pause tells when it works again;
- ``Retry-After`` or ``x-ratelimit-remaining: 0``: a shared pause, capped at an hour.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from blinker import NamedSignal

from ..outbox.base import Claimed, Outbox, Pause, event_time_of
from ..signals import delivery_paused, delivery_resumed, event_dead, event_delivered
from .client import MAX_BATCH_SIZE, MAX_BODY_BYTES, BatchResult, Outcome
from .retry import RetryPolicy

logger = logging.getLogger("dedupkit.sender")

#: The dead-letter reason of an event not delivered within the retry window.
EXPIRED = "expired"
#: How long after ``event_time`` an event replayed as ``offline`` (``flask dedupkit dead
#: --replay --as-offline``) is still sent: Pinterest refuses events older than seven days
#: (pinterest.md §4).
OFFLINE_MAX_AGE = 7 * 24 * 3600.0
#: How long delivered entries stay in the outbox: the same (name, event_id) tracked again
#: within this time, a thank-you page reloaded days later, is still recognised and not resent.
DELIVERED_KEPT = 7 * 24 * 3600.0
#: How often :meth:`Sender.run` forgets delivered entries older than :data:`DELIVERED_KEPT`.
PRUNE_EVERY = 3600.0
#: The longest wait between two looks at the outbox when nothing wakes the loop. With the
#: default 30 s lease, a batch claimed by a process that died is sent again within 60 s.
MAX_IDLE = 10.0
#: The longest pause Pinterest can impose (``Retry-After``, ``x-ratelimit-reset``): a
#: ``Retry-After: 31536000`` must not stop delivery for a year.
MAX_PAUSE = 3600.0
#: The pause after a credentials failure: one minute, doubling up to fifteen.
CREDENTIALS_BACKOFF = RetryPolicy(base=60.0, factor=2.0, cap=900.0, jitter=0.1)
#: Events sent by the probe that follows a credentials pause.
PROBE_SIZE = 1
#: Requests one claimed batch may cost while it is halved to isolate refused events; one bad
#: event among 1000 takes 21. What is left over is retried later.
MAX_REQUESTS_PER_BATCH = 64
#: Pause kinds (:attr:`dedupkit.outbox.base.Pause.kind`).
CREDENTIALS = "credentials"
RATE_LIMIT = "rate_limit"

# ``{"data":[`` and ``]}`` around the events of a request body.
_BODY_OVERHEAD = 11
# The stored text of an event replayed as offline (the outbox encodes compact JSON).
_OFFLINE_MARK = '"action_source":"offline"'
# Numbers vary from event to event in Pinterest's messages (timestamps): one log line per
# message shape, not per event.
_NUMBER = re.compile(r"[0-9]+")
# Settings named by the expiry warning.
_EXPIRED_ADVICE = (
    "not delivered within DEDUPKIT_RETRY_WINDOW ({window:.0f} s) of their event_time; if "
    "their tag never fired, `flask dedupkit dead --replay --as-offline` sends them"
)


class DeliveryClient(Protocol):
    """What the sender needs of :class:`~dedupkit.delivery.client.CapiClient`.

    A ``token_id`` attribute (:func:`~dedupkit.delivery.client.token_fingerprint`), when the
    client has one, is stored with a credentials pause so that a sender with another token
    probes at once.
    """

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        """Send CAPI event dicts, and event JSON texts unchanged."""


@dataclass
class DeliveryTotals:
    """What one sender did since it was built, for ``flask dedupkit worker``'s summary."""

    delivered: int = 0
    #: Events given back to be sent again later (one count per attempt).
    retried: int = 0
    dead: int = 0
    #: Pauses this sender started (credentials, rate limit).
    paused: int = 0
    dead_by_reason: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line in plain words, e.g. ``sent 998, retried 3, dead 2 (expired: 2), paused 0``."""
        reasons = ", ".join(f"{reason}: {n}" for reason, n in self.dead_by_reason.most_common(3))
        dead = f"dead {self.dead}" + (f" ({reasons})" if reasons else "")
        return f"sent {self.delivered}, retried {self.retried}, {dead}, paused {self.paused}"


class Sender:
    """Moves events from an outbox to Pinterest, one batch at a time.

    :param outbox: where the events wait.
    :param client: sends a batch; never raises for what Pinterest or the network does.
    :param policy: the backoff of retried events, and of the sender after a failed batch.
    :param retry_window: seconds after ``event_time`` during which an event is retried;
        after that it becomes a dead letter with reason ``"expired"``. An event replayed as
        ``offline`` is sent up to :data:`OFFLINE_MAX_AGE` instead.
    :param send_expired_as_offline: gone; must be ``False``. Late web events sent as offline
        count twice when their tag fired: replay them explicitly instead.
    :param batch_size: events per request, at most 1000.
    :param lease: seconds a claimed batch belongs to this sender before another may take it.
    :param clock: the wall clock, replaceable in tests.
    :param signal_sender: the ``sender`` of the :mod:`dedupkit.signals` (the Flask app).
    :param max_body_bytes: the largest request body; a claimed batch is split to fit.
    :raises ValueError: for an impossible setting, or ``send_expired_as_offline=True``.
    """

    def __init__(
        self,
        outbox: Outbox,
        client: DeliveryClient,
        *,
        policy: RetryPolicy = RetryPolicy(),  # noqa: B008 (frozen, so sharing it is safe)
        retry_window: float = 3600.0,
        send_expired_as_offline: bool = False,
        batch_size: int = MAX_BATCH_SIZE,
        lease: float = 30.0,
        clock: Callable[[], float] = time.time,
        signal_sender: Any = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if send_expired_as_offline:
            raise ValueError(
                "send_expired_as_offline is no longer supported: late web events sent as "
                "offline count twice when their tag fired. Events past the retry window are "
                "dead letters; replay those whose tag never fired with "
                "`flask dedupkit dead --replay --as-offline`"
            )
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
        if retry_window <= 0:
            raise ValueError(f"retry_window must be positive, got {retry_window}")
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        if max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
        self.outbox = outbox
        self.client = client
        self.policy = policy
        self.retry_window = retry_window
        self.batch_size = batch_size
        self.lease = lease
        self.clock = clock
        self.signal_sender = signal_sender
        self.max_body_bytes = max_body_bytes
        #: The client's token fingerprint, stored with a credentials pause.
        self.token_id = str(getattr(client, "token_id", "") or "")
        #: What this sender did so far.
        self.totals = DeliveryTotals()
        #: Nothing is sent before this time (wall clock): a shared pause or a local backoff.
        self.hold_until = 0.0
        self._backoff_until = 0.0
        self._failures = 0
        self._credential_failures = 0
        # After a credentials pause (seen or started), the next batch is a small probe.
        self._probing = False
        # The kind of the pause this sender started and has not yet seen end.
        self._started: str | None = None
        self._nudge = threading.Event()
        self._nudge_lock = threading.Lock()
        self._nudges = 0
        self._first_nudge = 0.0

    def __repr__(self) -> str:
        return f"<Sender {self.outbox!r} -> {self.client!r}>"

    def run_once(self, now: float | None = None) -> int:
        """Claim one batch of due events, send it and record each outcome.

        Sends nothing while the outbox's shared pause or this sender's backoff lasts, except
        that a credentials pause recorded for another token is probed at once (the token was
        rotated and this process started with the new one).

        :param now: the current time; by default ``clock()``, read again once Pinterest
            answered, so that waits count from the answer.
        :returns: how many events were claimed; ``batch_size`` means more may be waiting.
        :raises dedupkit.errors.OutboxError: when the outbox fails.
        """
        fixed_now = now
        now = self.clock() if fixed_now is None else fixed_now
        pause = self.outbox.pause(now=now)
        if pause is not None and pause.kind == CREDENTIALS:
            self._probing = True
        elif pause is None and self._started == CREDENTIALS:
            # 'flask dedupkit resume' cleared the shared pause: stop this sender's own wait.
            self._backoff_until = 0.0
        self.hold_until = self._backoff_until
        if pause is not None and not self._other_token(pause):
            self.hold_until = max(self.hold_until, pause.until)
        if self.hold_until > now:
            return 0
        limit = PROBE_SIZE if self._probing else self.batch_size
        claimed = self.outbox.claim(limit, now=now, lease=self.lease)
        if not claimed:
            return 0
        batch = _Batch(len(claimed))
        to_send: list[Claimed] = []
        for entry in claimed:
            if now < _deadline(entry, self.retry_window):
                to_send.append(entry)
            else:
                batch.expired.append(entry)
                batch.never_sent.add(entry.id)
        if to_send:
            now = self._deliver(batch, to_send, fixed_now)
        self._store(batch, now)
        self._signal(batch)
        return len(claimed)

    def _other_token(self, pause: Pause) -> bool:
        return (
            pause.kind == CREDENTIALS
            and bool(pause.token_id and self.token_id)
            and pause.token_id != self.token_id
        )

    def _deliver(self, batch: _Batch, entries: list[Claimed], fixed_now: float | None) -> float:
        """Send ``entries`` in requests that fit, halving any refused as a whole."""
        now = self.clock() if fixed_now is None else fixed_now
        groups: deque[list[Claimed]] = deque()
        for group in self._fit(entries):
            if len(group) == 1 and _size(group[0].raw) + _BODY_OVERHEAD > self.max_body_bytes:
                limit = f"{self.max_body_bytes} bytes"
                batch.refused[f"the event is larger than a request may be ({limit})"] += group
                batch.never_sent.add(group[0].id)
            else:
                groups.append(group)
        started = time.monotonic()
        while groups:
            group = groups.popleft()
            over_time = time.monotonic() - started > self.lease / 2
            if batch.requests >= MAX_REQUESTS_PER_BATCH or over_time:
                # Keep within the lease: what is left goes back to the outbox for later.
                batch.unsent += group
                continue
            batch.requests += 1
            result = self.client.send([entry.raw for entry in group])
            now = self.clock() if fixed_now is None else fixed_now
            whole = result.whole
            if whole is not Outcome.CREDENTIALS:
                self._note_answer(batch, result)
            if whole is Outcome.SPLIT and len(group) > 1:
                half = len(group) // 2
                groups.extendleft([group[half:], group[:half]])
                continue
            if whole is Outcome.CREDENTIALS:
                batch.credentials = result.message or "Pinterest refused the credentials"
                batch.held += group
                for rest in groups:
                    batch.held += rest
                break
            self._sort(batch, group, result, now)
            if batch.pause is not None and groups:
                # Pinterest asked to wait: the rest of the claim waits with the others.
                for rest in groups:
                    batch.held += rest
                break
        return now

    def _fit(self, entries: list[Claimed]) -> list[list[Claimed]]:
        """``entries`` cut into runs whose request bodies stay within ``max_body_bytes``."""
        groups: list[list[Claimed]] = []
        current: list[Claimed] = []
        size = _BODY_OVERHEAD
        for entry in entries:
            weight = _size(entry.raw) + 1  # the comma
            if current and size + weight > self.max_body_bytes:
                groups.append(current)
                current, size = [], _BODY_OVERHEAD
            current.append(entry)
            size += weight
        if current:
            groups.append(current)
        return groups

    def _note_answer(self, batch: _Batch, result: BatchResult) -> None:
        """A request Pinterest judged (not a credentials failure) proves the credentials work."""
        status = result.status_code
        if status is None or status >= 500 or status in (408, 429):
            return
        batch.judged = True
        batch.proved = batch.proved or self._probing
        self._credential_failures = 0
        self._probing = False

    def _sort(self, batch: _Batch, group: list[Claimed], result: BatchResult, now: float) -> None:
        wait = None if result.retry_after is None else min(result.retry_after, MAX_PAUSE)
        delays: dict[int, float] = {}
        retried = delivered = False
        for entry, verdict in zip(group, result.results, strict=True):
            message = verdict.message
            if verdict.outcome is Outcome.DELIVERED:
                batch.delivered.append(entry)
                delivered = True
            elif verdict.outcome in (Outcome.PERMANENT, Outcome.SPLIT):
                batch.refused[message or "refused by Pinterest"].append(entry)
            elif verdict.outcome is Outcome.CREDENTIALS:
                batch.held.append(entry)
            else:
                if entry.attempts not in delays:
                    delays[entry.attempts] = self.policy.delay(entry.attempts)
                not_before = now + delays[entry.attempts]
                # A wait Pinterest asked for is the shared pause, which holds these events
                # too and which ``flask dedupkit resume`` can lift; it does not expire them
                # by itself: the window is judged when they are claimed again.
                if wait is None and not_before >= _deadline(entry, self.retry_window):
                    batch.expired.append(entry)
                else:
                    batch.retried[(not_before, message or "retryable error")].append(entry)
                    retried = True
        if wait is not None:
            asked = result.retry_after or 0.0
            capped = f" (capped at {MAX_PAUSE:.0f} s)" if asked > MAX_PAUSE else ""
            reason = (
                f"Pinterest asked to wait {asked:.0f} s (HTTP {result.status_code}){capped}; "
                "no request before then"
            )
            batch.raise_pause(now + wait, RATE_LIMIT, reason)
        elif result.rate_limit is not None and result.rate_limit.exhausted:
            reset = min(result.rate_limit.reset or 0.0, MAX_PAUSE)
            reason = (
                f"Pinterest's rate limit is used up (x-ratelimit-remaining: 0); next request "
                f"when it resets in {reset:.0f} s"
            )
            batch.raise_pause(now + reset, RATE_LIMIT, reason)
        if retried and not delivered:
            # The whole request failed: back off this sender too, so that a backlog of fresh
            # events does not hammer a Pinterest that is down.
            self._backoff_until = now + self.policy.delay(self._failures)
            self._failures += 1
            self.hold_until = max(self.hold_until, self._backoff_until)
        elif delivered:
            self._failures = 0
            self._backoff_until = 0.0

    def _store(self, batch: _Batch, now: float) -> None:
        # Acks first: they are what keeps an event from being sent twice.
        totals = self.totals
        if batch.delivered:
            # The ledger shows events sent with ?test=true as "test": Pinterest records nothing.
            test = getattr(self.client, "test_mode", None)
            self.outbox.ack([entry.id for entry in batch.delivered], test=test)
            totals.delivered += len(batch.delivered)
        if batch.credentials is not None:
            self._pause_for_credentials(batch, now)
        elif batch.pause is not None:
            until, kind, reason = batch.pause
            self._start_pause(until, kind, reason)
            self.hold_until = max(self.hold_until, until)
        elif batch.judged:
            self._resume(batch, now)
        for message, entries in batch.refused.items():
            self._dead(entries, message, now, batch.never_sent)
            totals.dead_by_reason[message] += len(entries)
        if batch.expired:
            self._dead(batch.expired, EXPIRED, now, batch.never_sent)
            totals.dead_by_reason[EXPIRED] += len(batch.expired)
        totals.dead += batch.dead_count
        if batch.unsent:
            not_before = now + self.policy.delay(0)
            error = "not sent yet: the batch took too many requests to isolate refused events"
            batch.retried[(not_before, error)] += batch.unsent
        for (not_before, message), entries in batch.retried.items():
            self.outbox.retry([entry.id for entry in entries], not_before=not_before, error=message)
            totals.retried += len(entries)
        self._log(batch, now)

    def _dead(self, entries: list[Claimed], reason: str, now: float, never_sent: set[str]) -> None:
        # An attempt is a request that carried the event: one that died unsent adds none.
        sent = [entry.id for entry in entries if entry.id not in never_sent]
        unsent = [entry.id for entry in entries if entry.id in never_sent]
        if sent:
            self.outbox.dead(sent, reason=reason, now=now)
        if unsent:
            self.outbox.dead(unsent, reason=reason, now=now, sent=False)

    def _pause_for_credentials(self, batch: _Batch, now: float) -> None:
        reason = batch.credentials or ""
        until = now + CREDENTIALS_BACKOFF.delay(self._credential_failures)
        self._credential_failures += 1
        self._probing = True
        # This sender waits too, even when another token's longer pause is in force.
        self._backoff_until = until
        self.hold_until = max(self.hold_until, until)
        self._start_pause(until, CREDENTIALS, reason)

    def _start_pause(self, until: float, kind: str, reason: str) -> None:
        token_id = self.token_id if kind == CREDENTIALS else ""
        self.outbox.set_pause_until(until, reason=reason, kind=kind, token_id=token_id)
        self._started = kind
        self.totals.paused += 1
        self._send_signal(delivery_paused, kind=kind, reason=reason, until=until)

    def _resume(self, batch: _Batch, now: float) -> None:
        """Pinterest judged a request: end a credentials pause that another token left, and
        tell the application when a pause this sender started is over."""
        kind, self._started = self._started, None
        if batch.proved:
            current = self.outbox.pause(now=now)
            if current is not None and current.kind == CREDENTIALS:
                self.outbox.clear_pause()
                kind = CREDENTIALS
        if kind is not None:
            logger.info("delivery works again after the %s pause", kind.replace("_", " "))
            self._send_signal(delivery_resumed, kind=kind)

    def _log(self, batch: _Batch, now: float) -> None:
        retried = sum(map(len, batch.retried.values()))
        why = sorted({message for _, message in batch.retried})
        dead = _grouped([*batch.refused.items(), (EXPIRED, batch.expired)])
        logger.info(
            "batch of %d: sent %d, retried %d%s, dead %d%s%s",
            batch.claimed,
            len(batch.delivered),
            retried,
            f" ({'; '.join(why[:3])})" if why else "",
            batch.dead_count,
            f" ({'; '.join(f'{n}: {example}' for n, example in dead.values())})" if dead else "",
            f", {len(batch.held)} kept for later" if batch.held else "",
        )
        for count, example in dead.values():
            if example == EXPIRED:
                example = _EXPIRED_ADVICE.format(window=self.retry_window)
            logger.warning("%d event(s) dead: %s", count, example)
        if batch.credentials is not None:
            logger.warning(
                "delivery paused for every process, next try in %.0f s: %s; "
                "%d event(s) kept, none lost",
                self._backoff_until - now,
                batch.credentials,
                len(batch.held),
            )
        elif batch.pause is not None:
            _, _, reason = batch.pause
            # Pacing before the limit is normal work; being told to wait is not.
            level = logging.INFO if reason.startswith("Pinterest's rate limit") else logging.WARNING
            logger.log(level, "delivery paused: %s", reason)

    def _signal(self, batch: _Batch) -> None:
        if event_delivered.receivers:
            for entry in batch.delivered:
                self._send_signal(event_delivered, event=entry.payload)
        if event_dead.receivers:
            for message, entries in batch.refused.items():
                for entry in entries:
                    self._send_signal(event_dead, event=entry.payload, reason=message)
            for entry in batch.expired:
                self._send_signal(event_dead, event=entry.payload, reason=EXPIRED)

    def _send_signal(self, signal: NamedSignal, **kwargs: Any) -> None:
        try:
            signal.send(self.signal_sender, **kwargs)
        except Exception:
            logger.exception("a receiver of dedupkit's %s signal failed", signal.name)

    def wake(self) -> None:
        """Say one event was enqueued: :meth:`run` sends it within its ``flush_interval``,
        or at once when a full batch is waiting."""
        with self._nudge_lock:
            self._nudges += 1
            first = self._nudges == 1
            if first:
                self._first_nudge = time.monotonic()
            full = self._nudges >= self.batch_size
        if first or full:
            self._nudge.set()

    def interrupt(self) -> None:
        """Make :meth:`run` look at its ``stop`` event now rather than after its idle wait."""
        self._nudge.set()

    def run(
        self, stop: threading.Event, *, flush_interval: float = 1.0, max_idle: float = MAX_IDLE
    ) -> None:
        """Send batches until ``stop`` is set, then send one more batch of due events.

        A batch goes when ``batch_size`` events were enqueued (see :meth:`wake`), when
        ``flush_interval`` passed since the first of them, or when the previous batch was
        full. Otherwise the loop looks at the outbox after an idle wait growing from
        ``flush_interval`` to ``max_idle``. Errors are logged and followed by a backoff.
        After setting ``stop``, call :meth:`interrupt` for the loop to end without waiting.
        """
        idle = flush_interval
        last_run = last_prune = float("-inf")
        full = False
        errors = empty_runs = 0
        while not stop.is_set():
            self._nudge.clear()
            mono = time.monotonic()
            with self._nudge_lock:
                nudges, first_nudge = self._nudges, self._first_nudge
            if full or nudges >= self.batch_size:
                due = mono
            elif nudges:
                due = min(first_nudge + flush_interval, last_run + idle)
            else:
                due = last_run + idle
            wait = max(due - mono, self.hold_until - self.clock())
            if wait > 0:
                self._nudge.wait(min(wait, max_idle))
                continue
            with self._nudge_lock:
                self._nudges = 0
            try:
                count = self.run_once()
            except Exception:
                errors += 1
                delay = self.policy.delay(errors - 1)
                logger.exception("delivery failed; trying again in %.1f s", delay)
                self.hold_until = self.clock() + delay
                count = 0
            else:
                errors = 0
            last_run = time.monotonic()
            if last_run - last_prune >= PRUNE_EVERY:
                last_prune = last_run
                self._prune()
            full = count >= self.batch_size
            empty_runs = 0 if count else min(empty_runs + 1, 32)
            idle = idle_wait(empty_runs, flush_interval=flush_interval, max_idle=max_idle)
        try:
            self.run_once()
        except Exception:
            logger.exception("the last delivery before stopping failed")

    def _prune(self) -> None:
        # Without it a SQLite outbox would grow by every event ever sent.
        try:
            pruned = self.outbox.prune(max(DELIVERED_KEPT, self.retry_window))
        except Exception:
            logger.exception("could not prune delivered events from the outbox")
        else:
            if pruned:
                logger.info("pruned %d delivered event(s) from the outbox", pruned)


def idle_wait(empty_runs: int, *, flush_interval: float, max_idle: float) -> float:
    """How long :meth:`Sender.run` idles after ``empty_runs`` looks found nothing: the flush
    interval, doubling from the second empty look, at most ``max_idle``."""
    growth: float = 2.0 ** min(max(empty_runs - 1, 0), 64)
    return min(flush_interval * growth, max_idle)


class _Batch:
    """What became of the events of one claimed batch."""

    def __init__(self, claimed: int) -> None:
        self.claimed = claimed
        self.delivered: list[Claimed] = []
        self.refused: defaultdict[str, list[Claimed]] = defaultdict(list)
        self.expired: list[Claimed] = []
        self.retried: defaultdict[tuple[float, str], list[Claimed]] = defaultdict(list)
        #: Left claimed without an attempt counted: their lease runs out after the pause.
        self.held: list[Claimed] = []
        #: Not sent within the request budget: retried soon.
        self.unsent: list[Claimed] = []
        #: Ids of entries that die without a request carrying them (expired, too large).
        self.never_sent: set[str] = set()
        #: Why the credentials failed, when they did.
        self.credentials: str | None = None
        #: ``(until, kind, reason)`` of the longest wait Pinterest asked for.
        self.pause: tuple[float, str, str] | None = None
        self.requests = 0
        #: Pinterest judged at least one request (so the credentials work).
        self.judged = False
        #: ... and this sender was probing after a credentials pause.
        self.proved = False

    @property
    def dead_count(self) -> int:
        return sum(map(len, self.refused.values())) + len(self.expired)

    def raise_pause(self, until: float, kind: str, reason: str) -> None:
        if self.pause is None or until > self.pause[0]:
            self.pause = (until, kind, reason)


def _deadline(entry: Claimed, retry_window: float) -> float:
    """When ``entry`` expires: its retry window, or seven days for an explicit offline replay."""
    value = entry.event_time if entry.event_time is not None else event_time_of(entry.payload)
    if value is None:
        # Pinterest will refuse an event without a usable time: let it say so.
        return float("inf")
    offline = _OFFLINE_MARK in entry.raw and entry.payload.get("action_source") == "offline"
    return value + (OFFLINE_MAX_AGE if offline else retry_window)


def _size(text: str) -> int:
    """UTF-8 length of ``text``; ``isascii`` is O(1) for the usual ASCII payload."""
    return len(text) if text.isascii() else len(text.encode())


def _grouped(groups: Iterable[tuple[str, Sequence[Claimed]]]) -> dict[str, tuple[int, str]]:
    """Dead-letter groups merged by the shape of their message: ``shape -> (count, example)``.

    Pinterest's messages carry timestamps, so exact messages would give a line per event.
    """
    shapes: dict[str, tuple[int, str]] = {}
    for message, entries in groups:
        if not entries:
            continue
        shape = _NUMBER.sub("#", message)
        count, example = shapes.get(shape, (0, message))
        shapes[shape] = (count + len(entries), example)
    return shapes


class BackgroundSender:
    """Runs a :class:`Sender` in a daemon thread of each process that needs one.

    The thread starts on the first :meth:`ensure_started` of a process, so a forked gunicorn
    worker gets its own thread, sender, HTTP pool and database connection; it stops at
    interpreter exit after sending one last batch.

    :param sender_factory: builds the sender, once per process.
    :param flush_interval: the longest time an enqueued event waits for a batch.
    """

    def __init__(
        self, sender_factory: Callable[[], Sender], *, flush_interval: float = 1.0
    ) -> None:
        self.sender_factory = sender_factory
        self.flush_interval = flush_interval
        self._stopped = False
        self._reset()
        ref = weakref.ref(self)
        atexit.register(_stop_at_exit, ref)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._sender: Sender | None = None
        self._stop = threading.Event()

    @property
    def sender(self) -> Sender | None:
        """This process's sender, once started."""
        return self._sender

    def ensure_started(self) -> bool:
        """Start this process's delivery thread unless it runs already.

        :returns: whether it runs; ``False`` after :meth:`stop`, or when the sender could not
            be built (the error is logged, and the next call tries again).
        """
        thread = self._thread
        if thread is not None and thread.is_alive():
            return True
        with self._lock:
            if self._stopped:
                return False
            if self._thread is not None and self._thread.is_alive():
                return True
            try:
                sender = self.sender_factory()
            except Exception:
                logger.exception("could not start the dedupkit sender")
                return False
            stop = threading.Event()
            # The thread refers to ``self``, which keeps it alive for the atexit handler.
            thread = threading.Thread(
                target=self._run, args=(sender, stop), name="dedupkit-sender", daemon=True
            )
            thread.start()
            self._sender, self._stop, self._thread = sender, stop, thread
            logger.debug("sender thread started in process %d", self._pid)
            return True

    def _run(self, sender: Sender, stop: threading.Event) -> None:
        sender.run(stop, flush_interval=self.flush_interval)

    def wake(self) -> None:
        """Tell the running sender an event was enqueued (see :meth:`Sender.wake`)."""
        sender = self._sender
        if sender is not None:
            sender.wake()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop the thread after one last batch; it does not start again.

        :param timeout: seconds to wait for the last batch; ``None`` waits as long as it takes.
        :returns: whether the thread has ended (or never ran).
        """
        with self._lock:
            self._stopped = True
            thread, sender = self._thread, self._sender
        if thread is None or sender is None:
            return True
        self._stop.set()
        sender.interrupt()
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("the dedupkit sender did not stop within %s s", timeout)
            return False
        return True


def _stop_at_exit(ref: weakref.ReferenceType[BackgroundSender]) -> None:
    background = ref()
    if background is not None:
        background.stop()


def _reset_after_fork(ref: weakref.ReferenceType[BackgroundSender]) -> None:
    # Only the forking thread survives a fork: the delivery thread, and any lock another
    # thread held, stay behind in the parent.
    background = ref()
    if background is not None:
        background._reset()
