"""Delivery: claim a batch from the outbox, send it, record what became of each event.

The sender composes three parts and does the outbox's and the application's side of them:

- the gate (:mod:`dedupkit.delivery.gate`) says whether a request may go and how many
  events it may carry, and is told each answer: every pause and backoff lives there;
- the triage (:mod:`dedupkit.delivery.triage`) says what became of each event of a request;
- the worker (:mod:`dedupkit.delivery.worker`) runs :meth:`Sender.run_once` in a loop, in a
  thread of each process (:class:`BackgroundSender`).

Expired events never hold up fresh ones: a claim dead-letters the events past their window
in bulk, without a request, and looks further for events that can still be sent; a probe
after a credentials pause is the first of those, never an expired one.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from blinker import NamedSignal

from ..outbox.base import Claimed, Outbox
from ..signals import delivery_paused, delivery_resumed, event_dead, event_delivered
from .browsers import device_labels
from .client import MAX_BATCH_SIZE, MAX_BODY_BYTES, BatchResult
from .gate import CREDENTIALS, MAX_RETRY_AFTER, PROBE_SIZE, RATE_LIMIT, Decision, Gate, Permit
from .retry import RandomSource, RetryPolicy
from .triage import EXPIRED, OFFLINE_MAX_AGE, Triage, partition, triage
from .worker import MAX_IDLE, BackgroundWorker, Wakeups, idle_wait, run_loop

__all__ = [
    "CREDENTIALS",
    "DELIVERED_KEPT",
    "EXPIRED",
    "MAX_REQUESTS_PER_BATCH",
    "OFFLINE_MAX_AGE",
    "PROBE_SIZE",
    "RATE_LIMIT",
    "BackgroundSender",
    "DeliveryTotals",
    "Sender",
    "idle_wait",
]

logger = logging.getLogger("dedupkit.sender")

#: How long delivered entries stay in the outbox: the same (name, event_id) tracked again
#: within this time, a thank-you page reloaded days later, is still recognised and not resent.
DELIVERED_KEPT = 7 * 24 * 3600.0
#: Requests one claimed batch may cost while it is halved to isolate refused events; one bad
#: event among 1000 takes 21. What is left over is given back, unsent, for the next claim.
MAX_REQUESTS_PER_BATCH = 64
#: Claims one :meth:`Sender.run_once` may make while it finds only expired events: each
#: dead-letters a batch of them in bulk; the worker comes back at once for more.
MAX_CLAIMS_PER_RUN = 10

# ``{"data":[`` and ``]}`` around the events of a request body.
_BODY_OVERHEAD = 11
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
    """Moves events from an outbox to Pinterest, one claim at a time.

    :param outbox: where the events wait.
    :param client: sends a batch; never raises for what Pinterest or the network does.
    :param policy: the backoff of retried events, and of the sender after a failed request.
    :param retry_window: seconds after ``event_time`` during which an event is retried;
        after that it becomes a dead letter with reason ``"expired"``. An event replayed as
        ``offline`` is sent up to :data:`OFFLINE_MAX_AGE` instead.
    :param send_expired_as_offline: gone; must be ``False``. Late web events sent as offline
        count twice when their tag fired: replay them explicitly instead.
    :param batch_size: events per request, at most 1000.
    :param lease: seconds a claimed batch belongs to this sender before another may take it;
        more than twice the client's ``timeout``, so that no request outlives its claim.
    :param clock: the wall clock, replaceable in tests.
    :param signal_sender: the ``sender`` of the :mod:`dedupkit.signals` (the Flask app).
    :param max_body_bytes: the largest request body; a claimed batch is split to fit.
    :param max_retry_after: the longest pause ``Retry-After`` may impose
        (``DEDUPKIT_MAX_RETRY_AFTER``).
    :param rng: the source of jitter, seeded in tests.
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
        max_retry_after: float = MAX_RETRY_AFTER,
        rng: RandomSource = random,
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
        timeout = getattr(client, "timeout", None)
        if isinstance(timeout, (int, float)) and timeout * 2 > lease:
            raise ValueError(
                f"the client's timeout ({timeout:g} s) must be at most half the lease "
                f"({lease:g} s): a request must never outlive its claim"
            )
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
        self.rng = rng
        #: The client's token fingerprint, stored with a credentials pause.
        self.token_id = str(getattr(client, "token_id", "") or "")
        #: Every pause and backoff (see :mod:`dedupkit.delivery.gate`).
        self.gate = Gate(
            token_id=self.token_id,
            batch_size=batch_size,
            policy=policy,
            max_retry_after=max_retry_after,
            rng=rng,
        )
        #: What this sender did so far.
        self.totals = DeliveryTotals()
        #: Nothing is sent before this time (wall clock), as of the last look.
        self.hold_until = 0.0
        self._more = False
        self._wakeups = Wakeups(batch_size)

    def __repr__(self) -> str:
        return f"<Sender {self.outbox!r} -> {self.client!r}>"

    # -- one claim ------------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> int:
        """Claim due events, send those still inside their window, record each outcome.

        Sends nothing while the gate holds delivery (the outbox's shared pause, this sender's
        backoff), except that a credentials pause recorded for another token is probed at once
        (the token was rotated and this process started with the new one).

        :param now: the current time; by default ``clock()``, read again once Pinterest
            answered, so that waits count from the answer.
        :returns: how many events were claimed.
        :raises dedupkit.errors.OutboxError: when the outbox fails.
        """
        fixed_now = now
        now = self.clock() if fixed_now is None else fixed_now
        self._more = False
        permit = self._permit(now)
        if not permit.open:
            return 0
        batch = _Batch()
        sendable = self._claim(batch, permit, now)
        if sendable:
            now = self._deliver(batch, sendable, permit, fixed_now)
        self._store(batch, now)
        self._signal(batch)
        return batch.claimed

    def held_for(self) -> float:
        """Seconds before the gate lets a request go, as of the last :meth:`run_once`."""
        return max(0.0, self.hold_until - self.clock())

    def more_waiting(self) -> bool:
        """The last :meth:`run_once` stopped at a limit: more events may be due now."""
        return self._more

    def _permit(self, now: float) -> Permit:
        permit = self.gate.permit(now, self.outbox.pause(now=now))
        self.hold_until = now + permit.wait
        return permit

    def _claim(self, batch: _Batch, permit: Permit, now: float) -> list[Claimed]:
        """Claim until events inside their window turn up, dead-lettering expired ones."""
        # A probe claims a whole batch too: it sends the first event that can still be sent,
        # however many expired ones come before it.
        for _ in range(MAX_CLAIMS_PER_RUN):
            claimed = self.outbox.claim(self.batch_size, now=now, lease=self.lease)
            batch.claimed += len(claimed)
            sendable, expired = partition(claimed, now, self.retry_window)
            if expired:
                # In bulk, at once: they are never sent, and must not wait for a request.
                self.outbox.dead([e.id for e in expired], reason=EXPIRED, now=now, sent=False)
                batch.expired += expired
                batch.dead_written += len(expired)
            if sendable or len(claimed) < self.batch_size:
                self._more = len(claimed) >= self.batch_size
                return sendable
        self._more = True
        return []

    def _deliver(
        self, batch: _Batch, entries: list[Claimed], permit: Permit, fixed_now: float | None
    ) -> float:
        """Send ``entries`` in requests that fit, halving any refused as a whole.

        A probe goes alone first; the rest follow only if Pinterest judged it.
        """
        now = self.clock() if fixed_now is None else fixed_now
        groups: deque[list[Claimed]] = deque()
        waiting: list[Claimed] = []
        if permit.probe:
            probe, waiting = entries[:PROBE_SIZE], entries[PROBE_SIZE:]
            groups.append(probe)
        else:
            groups.extend(self._fit(batch, entries))
        started = time.monotonic()
        while groups:
            group = groups.popleft()
            over_time = time.monotonic() - started > self.lease / 2
            if batch.requests >= MAX_REQUESTS_PER_BATCH or over_time:
                # Keep within the lease: what is left goes back, unsent, for the next claim.
                batch.unsent += group
                self._more = True
                continue
            batch.requests += 1
            result = self.client.send([entry.raw for entry in group])
            now = self.clock() if fixed_now is None else fixed_now
            sorted_ = triage(
                group,
                result,
                now=now,
                policy=self.policy,
                retry_window=self.retry_window,
                rng=self.rng,
            )
            decision = self.gate.told(now, sorted_.told)
            self._apply(batch, decision, now)
            if sorted_.split:
                half = len(group) // 2
                groups.extendleft([group[half:], group[:half]])
                continue
            batch.add(sorted_)
            if self.gate.probing or decision.share is not None or decision.backoff > 0:
                # Held by a pause or a backoff: the rest goes back unsent.
                for rest in groups:
                    batch.unsent += rest
                batch.unsent += waiting
                groups.clear()
                waiting = []
                break
            if waiting:
                # The probe was judged: the credentials work, send the rest of the claim.
                groups.extend(self._fit(batch, waiting))
                waiting = []
                self._more = True
        return now

    def _fit(self, batch: _Batch, entries: list[Claimed]) -> list[list[Claimed]]:
        """``entries`` cut into runs whose request bodies stay within ``max_body_bytes``;
        an event too large for any request is refused here."""
        groups: list[list[Claimed]] = []
        current: list[Claimed] = []
        size = _BODY_OVERHEAD
        for entry in entries:
            weight = _size(entry.raw) + 1  # the comma
            if weight + _BODY_OVERHEAD - 1 > self.max_body_bytes:
                limit = f"{self.max_body_bytes} bytes"
                batch.refused_unsent[f"the event is larger than a request may be ({limit})"] += [
                    entry
                ]
                continue
            if current and size + weight > self.max_body_bytes:
                groups.append(current)
                current, size = [], _BODY_OVERHEAD
            current.append(entry)
            size += weight
        if current:
            groups.append(current)
        return groups

    def _apply(self, batch: _Batch, decision: Decision, now: float) -> None:
        """Carry out what the gate decided: share a pause, lift one, say it is over."""
        if decision.share is not None:
            pause = decision.share
            self.outbox.set_pause_until(
                pause.until, reason=pause.reason, kind=pause.kind, token_id=pause.token_id
            )
            self.totals.paused += 1
            batch.pause = (pause.until, pause.kind, pause.reason)
            self._send_signal(
                delivery_paused, kind=pause.kind, reason=pause.reason, until=pause.until
            )
        if decision.lift is not None:
            self.outbox.clear_pause(kind=decision.lift)
        if decision.resumed is not None:
            logger.info(
                "delivery works again after the %s pause", decision.resumed.replace("_", " ")
            )
            self._send_signal(delivery_resumed, kind=decision.resumed)
        self.hold_until = max(self.hold_until, now + decision.backoff)
        if decision.share is not None:
            self.hold_until = max(self.hold_until, decision.share.until)

    def _store(self, batch: _Batch, now: float) -> None:
        # Acks first: they are what keeps an event from being sent twice.
        totals = self.totals
        outbox = self.outbox
        if batch.delivered:
            # The ledger shows events sent with ?test=true as "test": Pinterest records nothing.
            test = getattr(self.client, "test_mode", None)
            delivered = batch.delivered
            outbox.ack(
                [entry.id for entry in delivered], test=test, devices=device_labels(delivered)
            )
            totals.delivered += len(batch.delivered)
        for message, entries in batch.refused.items():
            outbox.dead([e.id for e in entries], reason=message, now=now)
            totals.dead_by_reason[message] += len(entries)
        for message, entries in batch.refused_unsent.items():
            outbox.dead([e.id for e in entries], reason=message, now=now, sent=False)
            totals.dead_by_reason[message] += len(entries)
        if len(batch.expired) > batch.dead_written:
            # Expired after a failed attempt: that attempt counts.
            late = batch.expired[batch.dead_written :]
            outbox.dead([e.id for e in late], reason=EXPIRED, now=now)
        if batch.expired:
            totals.dead_by_reason[EXPIRED] += len(batch.expired)
        totals.dead += batch.dead_count
        for (not_before, message), entries in batch.retried.items():
            outbox.retry([e.id for e in entries], not_before=not_before, error=message)
            totals.retried += len(entries)
        if batch.unsent:
            # Never sent: given back due now (the gate says when), no attempt counted.
            reason = batch.pause[2] if batch.pause else "not sent yet: kept for the next request"
            outbox.retry([e.id for e in batch.unsent], not_before=now, error=reason, sent=False)
        self._log(batch, now)

    def _log(self, batch: _Batch, now: float) -> None:
        if not batch.claimed:
            return
        retried = sum(map(len, batch.retried.values()))
        why = sorted({message for _, message in batch.retried})
        refused = [*batch.refused.items(), *batch.refused_unsent.items()]
        dead = _grouped([*refused, (EXPIRED, batch.expired)])
        logger.info(
            "batch of %d: sent %d, retried %d%s, dead %d%s%s",
            batch.claimed,
            len(batch.delivered),
            retried,
            f" ({'; '.join(why[:3])})" if why else "",
            batch.dead_count,
            f" ({'; '.join(f'{n}: {example}' for n, example in dead.values())})" if dead else "",
            f", {len(batch.unsent)} kept for later" if batch.unsent else "",
        )
        for count, example in dead.values():
            if example == EXPIRED:
                example = _EXPIRED_ADVICE.format(window=self.retry_window)
            logger.warning("%d event(s) dead: %s", count, example)
        if batch.pause is not None:
            until, kind, reason = batch.pause
            if kind == CREDENTIALS:
                logger.warning(
                    "delivery paused for every process, next try in %.0f s: %s; "
                    "%d event(s) kept, none lost",
                    until - now,
                    reason,
                    len(batch.unsent) + len(batch.held),
                )
            else:
                # Pacing before the limit is normal work; being told to wait is not.
                pacing = reason.startswith("Pinterest's rate limit")
                logger.log(
                    logging.INFO if pacing else logging.WARNING, "delivery paused: %s", reason
                )

    def _signal(self, batch: _Batch) -> None:
        if event_delivered.receivers:
            for entry in batch.delivered:
                self._send_signal(event_delivered, event=entry.payload)
        if event_dead.receivers:
            for message, entries in [*batch.refused.items(), *batch.refused_unsent.items()]:
                for entry in entries:
                    self._send_signal(event_dead, event=entry.payload, reason=message)
            for entry in batch.expired:
                self._send_signal(event_dead, event=entry.payload, reason=EXPIRED)

    def _send_signal(self, signal: NamedSignal, **kwargs: Any) -> None:
        try:
            signal.send(self.signal_sender, **kwargs)
        except Exception:
            logger.exception("a receiver of dedupkit's %s signal failed", signal.name)

    # -- the loop -------------------------------------------------------------------------

    def wake(self) -> None:
        """Say one event was enqueued: :meth:`run` sends it within its ``flush_interval``,
        or at once when a full batch is waiting."""
        self._wakeups.wake()

    def interrupt(self) -> None:
        """Make :meth:`run` look at its ``stop`` event now rather than after its idle wait."""
        self._wakeups.interrupt()

    def run(
        self, stop: threading.Event, *, flush_interval: float = 1.0, max_idle: float = MAX_IDLE
    ) -> None:
        """Send batches until ``stop`` is set, then send one more batch of due events (see
        :func:`dedupkit.delivery.worker.run_loop`). After setting ``stop``, call :meth:`interrupt`
        for the loop to end without waiting."""
        run_loop(self, self._wakeups, stop, flush_interval=flush_interval, max_idle=max_idle)

    def prune(self) -> None:
        """Forget delivered entries older than :data:`DELIVERED_KEPT` (or the retry window)."""
        # Without it a SQLite outbox would grow by every event ever sent.
        try:
            pruned = self.outbox.prune(max(DELIVERED_KEPT, self.retry_window))
        except Exception:
            logger.exception("could not prune delivered events from the outbox")
        else:
            if pruned:
                logger.info("pruned %d delivered event(s) from the outbox", pruned)


class BackgroundSender(BackgroundWorker[Sender]):
    """Runs a :class:`Sender` in a daemon thread of each process that needs one (see
    :class:`dedupkit.delivery.worker.BackgroundWorker`)."""


class _Batch:
    """What became of the events of one claim."""

    def __init__(self) -> None:
        self.claimed = 0
        self.delivered: list[Claimed] = []
        self.refused: defaultdict[str, list[Claimed]] = defaultdict(list)
        #: Refused without a request (too large to send).
        self.refused_unsent: defaultdict[str, list[Claimed]] = defaultdict(list)
        self.expired: list[Claimed] = []
        #: How many of :attr:`expired` (the first ones) are already dead-lettered.
        self.dead_written = 0
        self.retried: defaultdict[tuple[float, str], list[Claimed]] = defaultdict(list)
        #: Kept for after a credentials pause (given back unsent).
        self.held: list[Claimed] = []
        #: Not sent: given back without an attempt counted.
        self.unsent: list[Claimed] = []
        #: ``(until, kind, reason)`` of the pause this claim started.
        self.pause: tuple[float, str, str] | None = None
        self.requests = 0

    @property
    def dead_count(self) -> int:
        refused = sum(map(len, self.refused.values()))
        return refused + sum(map(len, self.refused_unsent.values())) + len(self.expired)

    def add(self, sorted_: Triage) -> None:
        self.delivered += sorted_.delivered
        for message, entries in sorted_.refused.items():
            self.refused[message] += entries
        for key, entries in sorted_.retried.items():
            self.retried[key] += entries
        self.expired += sorted_.expired
        self.unsent += sorted_.held


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
