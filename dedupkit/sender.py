"""Delivery: claim a batch from the outbox, send it, record what became of each event.

:class:`Sender` does one batch per :meth:`~Sender.run_once` and loops in :meth:`~Sender.run`;
:class:`BackgroundSender` runs that loop in a daemon thread of each process.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from blinker import NamedSignal

from .client import MAX_BATCH_SIZE, BatchResult, Outcome
from .outbox.base import Claimed, Outbox, event_time_of
from .retry import RetryPolicy
from .signals import event_dead, event_delivered

logger = logging.getLogger("dedupkit.sender")

#: A claimed entry and, when the sender changed it, the payload it sends instead.
_Item: TypeAlias = tuple[Claimed, Mapping[str, Any] | None]

#: The dead-letter reason of an event not delivered within the retry window.
EXPIRED = "expired"
#: How long after ``event_time`` an event sent late as ``offline`` is still tried: Pinterest
#: reportedly refuses events older than seven days (pinterest.md §4).
OFFLINE_MAX_AGE = 7 * 24 * 3600.0
#: How long delivered entries stay in the outbox: the same (name, event_id) tracked again
#: within this time, a thank-you page reloaded days later, is still recognised and not resent.
DELIVERED_KEPT = 7 * 24 * 3600.0
#: How often :meth:`Sender.run` forgets delivered entries older than :data:`DELIVERED_KEPT`.
PRUNE_EVERY = 3600.0
#: The longest wait between two looks at the outbox when nothing wakes the loop. With the
#: default 30 s lease, a batch claimed by a process that died is sent again within 60 s.
MAX_IDLE = 10.0


class DeliveryClient(Protocol):
    """What the sender needs of :class:`~dedupkit.client.CapiClient`."""

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        """Send CAPI event dicts, and event JSON texts unchanged."""


class Sender:
    """Moves events from an outbox to Pinterest, one batch at a time.

    :param outbox: where the events wait.
    :param client: sends a batch; never raises for what Pinterest or the network does.
    :param policy: the backoff of retried events, and of the sender after a failed batch.
    :param retry_window: seconds after ``event_time`` during which an event is retried;
        after that it becomes a dead letter with reason ``"expired"``.
    :param send_expired_as_offline: send events past the window with ``action_source``
        ``"offline"`` (up to :data:`OFFLINE_MAX_AGE`) instead; Pinterest cannot deduplicate them.
    :param batch_size: events per request, at most 1000.
    :param lease: seconds a claimed batch belongs to this sender before another may take it.
    :param clock: the wall clock, replaceable in tests.
    :param signal_sender: the ``sender`` of the :mod:`dedupkit.signals` (the Flask app).
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
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
        if retry_window <= 0:
            raise ValueError(f"retry_window must be positive, got {retry_window}")
        if lease <= 0:
            raise ValueError(f"lease must be positive, got {lease}")
        self.outbox = outbox
        self.client = client
        self.policy = policy
        self.retry_window = retry_window
        self.send_expired_as_offline = send_expired_as_offline
        self.batch_size = batch_size
        self.lease = lease
        self.clock = clock
        self.signal_sender = signal_sender
        #: Nothing is sent before this time (wall clock): a shared pause or a local backoff.
        self.hold_until = 0.0
        self._backoff_until = 0.0
        self._failures = 0
        self._nudge = threading.Event()
        self._nudge_lock = threading.Lock()
        self._nudges = 0
        self._first_nudge = 0.0

    def __repr__(self) -> str:
        return f"<Sender {self.outbox!r} -> {self.client!r}>"

    def run_once(self, now: float | None = None) -> int:
        """Claim one batch of due events, send it and record each outcome.

        Sends nothing while the outbox's shared pause or this sender's backoff after a failed
        batch lasts.

        :param now: the current time; by default ``clock()``, read again once Pinterest
            answered, so that waits count from the answer.
        :returns: how many events were claimed; ``batch_size`` means more may be waiting.
        :raises dedupkit.errors.OutboxError: when the outbox fails.
        """
        fixed_now = now
        now = self.clock() if fixed_now is None else fixed_now
        self.hold_until = max(self.outbox.pause_until(), self._backoff_until)
        if self.hold_until > now:
            return 0
        claimed = self.outbox.claim(self.batch_size, now=now, lease=self.lease)
        if not claimed:
            return 0
        batch = _Batch()
        to_send: list[_Item] = []
        for entry in claimed:
            event_time = _event_time(entry)
            if now < event_time + self.retry_window:
                to_send.append((entry, None))
            elif self.send_expired_as_offline and now < event_time + OFFLINE_MAX_AGE:
                to_send.append((entry, {**entry.payload, "action_source": "offline"}))
            else:
                batch.expired.append((entry, None))
        if to_send:
            result = self.client.send([_wire(entry, changed) for entry, changed in to_send])
            now = self.clock() if fixed_now is None else fixed_now
            self._sort(batch, to_send, result, now)
        self._store(batch, now)
        self._signal(batch)
        return len(claimed)

    def _sort(
        self,
        batch: _Batch,
        to_send: list[_Item],
        result: BatchResult,
        now: float,
    ) -> None:
        delays: dict[int, float] = {}
        for item, verdict in zip(to_send, result.results, strict=True):
            entry = item[0]
            if verdict.outcome is Outcome.DELIVERED:
                batch.delivered.append(item)
            elif verdict.outcome is Outcome.PERMANENT:
                batch.refused[verdict.message or "refused by Pinterest"].append(item)
            else:
                if entry.attempts not in delays:
                    delays[entry.attempts] = self.policy.delay(
                        entry.attempts, retry_after=result.retry_after
                    )
                not_before = now + delays[entry.attempts]
                if not_before >= _event_time(entry) + self._final_window():
                    batch.expired.append(item)
                else:
                    message = verdict.message or "retryable error"
                    batch.retried[(not_before, message)].append(item)
        if result.retry_after is not None:
            logger.warning(
                "Pinterest asked to wait %.0f s (HTTP %s); no request before then",
                result.retry_after,
                result.status_code,
            )
            batch.pause_until = now + result.retry_after
            self.hold_until = max(self.hold_until, batch.pause_until)
        if batch.retried and not batch.delivered:
            # The whole request failed: back off this sender too, so that a backlog of fresh
            # events does not hammer a Pinterest that is down.
            self._backoff_until = now + self.policy.delay(self._failures)
            self._failures += 1
            self.hold_until = max(self.hold_until, self._backoff_until)
        elif batch.delivered:
            self._failures = 0
            self._backoff_until = 0.0

    def _final_window(self) -> float:
        if self.send_expired_as_offline:
            return max(self.retry_window, OFFLINE_MAX_AGE)
        return self.retry_window

    def _store(self, batch: _Batch, now: float) -> None:
        # Acks first: they are what keeps an event from being sent twice.
        if batch.delivered:
            self.outbox.ack([entry.id for entry, _ in batch.delivered])
        if batch.pause_until:
            self.outbox.set_pause_until(batch.pause_until)
        for message, items in batch.refused.items():
            logger.warning("Pinterest refused %d event(s): %s", len(items), message)
            self.outbox.dead([entry.id for entry, _ in items], reason=message, now=now)
        if batch.expired:
            logger.warning(
                "%d event(s) not delivered within %.0f s of their event_time: dead letters",
                len(batch.expired),
                self._final_window(),
            )
            self.outbox.dead([entry.id for entry, _ in batch.expired], reason=EXPIRED, now=now)
        for (not_before, message), items in batch.retried.items():
            logger.warning(
                "%d event(s) not delivered (%s); next try in %.1f s",
                len(items),
                message,
                not_before - now,
            )
            self.outbox.retry(
                [entry.id for entry, _ in items], not_before=not_before, error=message
            )
        logger.debug(
            "batch done: %d delivered, %d refused, %d expired, %d to retry",
            len(batch.delivered),
            sum(map(len, batch.refused.values())),
            len(batch.expired),
            sum(map(len, batch.retried.values())),
        )

    def _signal(self, batch: _Batch) -> None:
        if event_delivered.receivers:
            for item in batch.delivered:
                self._send_signal(event_delivered, event=_payload(item))
        if event_dead.receivers:
            for message, items in batch.refused.items():
                for item in items:
                    self._send_signal(event_dead, event=_payload(item), reason=message)
            for item in batch.expired:
                self._send_signal(event_dead, event=_payload(item), reason=EXPIRED)

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
            idle = min(flush_interval * 2 ** max(empty_runs - 1, 0), max_idle)
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


class _Batch:
    """What became of the events of one claimed batch."""

    def __init__(self) -> None:
        #: When the other senders of the outbox may send again (``Retry-After``), if given.
        self.pause_until = 0.0
        self.delivered: list[_Item] = []
        self.refused: defaultdict[str, list[_Item]] = defaultdict(list)
        self.expired: list[_Item] = []
        self.retried: defaultdict[tuple[float, str], list[_Item]] = defaultdict(list)


def _payload(item: _Item) -> Mapping[str, Any]:
    entry, changed = item
    return entry.payload if changed is None else changed


def _wire(entry: Claimed, changed: Mapping[str, Any] | None) -> Mapping[str, Any] | str:
    # The stored text goes out as it is: decoding and encoding it again would only cost CPU.
    return entry.raw if changed is None else changed


def _event_time(entry: Claimed) -> float:
    value = entry.event_time if entry.event_time is not None else event_time_of(entry.payload)
    # Pinterest will refuse an event without a usable time: let it say so, do not expire it.
    return float("inf") if value is None else value


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
