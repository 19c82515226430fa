"""The delivery worker: the loop that decides *when* to deliver, and the thread it runs in.

What to send and what became of it is the sender's (:mod:`dedupkit.delivery.sender`);
whether Pinterest may be called is the gate's (:mod:`dedupkit.delivery.gate`). This module
owns the rest: the wake-ups of enqueued events, the idle wait, the poll of a pause (so that a
pause that ends, or ``flask dedupkit resume``, takes effect within :data:`PAUSE_POLL`),
pruning, errors, the thread of each process and its shutdown.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger("dedupkit.sender")

#: The longest wait between two looks at the outbox when nothing wakes the loop. With the
#: default 30 s lease, a batch claimed by a process that died is sent again within 60 s.
MAX_IDLE = 10.0
#: While delivery is paused, the pause is read again this often: one that ends early
#: (``flask dedupkit resume``, a probe of another process) is seen within this time.
PAUSE_POLL = 1.0
#: How often the loop forgets delivered entries kept long enough.
PRUNE_EVERY = 3600.0
#: The backoff of the loop after an error of the outbox: one second doubling to a minute.
_ERROR_BASE, _ERROR_CAP = 1.0, 60.0


class Deliverer(Protocol):
    """What the loop needs of a :class:`~dedupkit.delivery.sender.Sender`."""

    @property
    def batch_size(self) -> int: ...

    def run_once(self, now: float | None = None) -> int:
        """Send one claim's worth of events; how many were claimed."""

    def held_for(self) -> float:
        """Seconds the gate holds delivery, as of the last :meth:`run_once`."""

    def more_waiting(self) -> bool:
        """The last :meth:`run_once` was cut short by its limit: look again at once."""

    def prune(self) -> None:
        """Forget delivered entries kept long enough."""


class Wakeups:
    """Counts enqueued events and wakes the loop when a batch is due.

    :param batch_size: events that make a full batch, which goes at once.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._count = 0
        self._first = 0.0

    def wake(self) -> None:
        """Say one event was enqueued."""
        with self._lock:
            self._count += 1
            first = self._count == 1
            if first:
                self._first = time.monotonic()
            full = self._count >= self.batch_size
        if first or full:
            self._event.set()

    def interrupt(self) -> None:
        """End the current wait now (to look at the stop event)."""
        self._event.set()

    def pending(self) -> tuple[int, float]:
        """``(events enqueued since the last take, when the first of them came)``."""
        with self._lock:
            return self._count, self._first

    def take(self) -> None:
        """Forget the enqueued events: a look at the outbox is about to see them."""
        with self._lock:
            self._count = 0

    def clear(self) -> None:
        self._event.clear()

    def wait(self, seconds: float) -> None:
        self._event.wait(seconds)


def idle_wait(empty_runs: int, *, flush_interval: float, max_idle: float) -> float:
    """How long the loop idles after ``empty_runs`` looks found nothing: the flush interval,
    doubling from the second empty look, at most ``max_idle``."""
    growth: float = 2.0 ** min(max(empty_runs - 1, 0), 64)
    return min(flush_interval * growth, max_idle)


def run_loop(
    deliverer: Deliverer,
    wakeups: Wakeups,
    stop: threading.Event,
    *,
    flush_interval: float = 1.0,
    max_idle: float = MAX_IDLE,
    pause_poll: float = PAUSE_POLL,
) -> None:
    """Deliver until ``stop`` is set, then deliver once more.

    A look at the outbox happens when ``batch_size`` events were enqueued, when
    ``flush_interval`` passed since the first of them, when the previous look was cut short,
    or after an idle wait growing from ``flush_interval`` to ``max_idle``. While the gate
    holds delivery, the pause is looked at every ``pause_poll`` seconds instead. Errors are
    logged and followed by a backoff.
    """
    idle = flush_interval
    last_run = last_prune = float("-inf")
    full = False
    errors = empty_runs = 0
    error_until = 0.0
    while not stop.is_set():
        wakeups.clear()
        mono = time.monotonic()
        count, first = wakeups.pending()
        if full or count >= deliverer.batch_size:
            due = mono
        elif count:
            due = min(first + flush_interval, last_run + idle)
        else:
            due = last_run + idle
        held = deliverer.held_for() if last_run > float("-inf") else 0.0
        if held > 0:
            # Nothing may go before the hold ends, but the pause may be lifted meanwhile.
            due = min(mono + held, last_run + pause_poll)
        due = max(due, error_until)
        if due > mono:
            wakeups.wait(min(due - mono, max_idle))
            continue
        wakeups.take()
        try:
            claimed = deliverer.run_once()
        except Exception:
            errors += 1
            delay = min(_ERROR_CAP, _ERROR_BASE * 2.0 ** min(errors - 1, 16))
            logger.exception("delivery failed; trying again in %.1f s", delay)
            error_until = time.monotonic() + delay
            claimed, full = 0, False
        else:
            errors = 0
            full = deliverer.more_waiting()
        last_run = time.monotonic()
        if last_run - last_prune >= PRUNE_EVERY:
            last_prune = last_run
            deliverer.prune()
        empty_runs = 0 if claimed else min(empty_runs + 1, 32)
        idle = idle_wait(empty_runs, flush_interval=flush_interval, max_idle=max_idle)
    try:
        deliverer.run_once()
    except Exception:
        logger.exception("the last delivery before stopping failed")


class Runnable(Protocol):
    """What :class:`BackgroundWorker` runs: a sender's loop."""

    def run(self, stop: threading.Event, *, flush_interval: float = ...) -> None: ...

    def wake(self) -> None: ...

    def interrupt(self) -> None: ...


R = TypeVar("R", bound=Runnable)


class BackgroundWorker(Generic[R]):
    """Runs a sender's loop in a daemon thread of each process that needs one.

    The thread starts on the first :meth:`ensure_started` of a process, so a forked gunicorn
    worker gets its own thread, sender, HTTP pool and database connection; it stops at
    interpreter exit after sending one last batch.

    :param sender_factory: builds the sender, once per process.
    :param flush_interval: the longest time an enqueued event waits for a batch.
    """

    def __init__(self, sender_factory: Callable[[], R], *, flush_interval: float = 1.0) -> None:
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
        self._sender: R | None = None
        self._stop = threading.Event()

    @property
    def sender(self) -> R | None:
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

    def _run(self, sender: R, stop: threading.Event) -> None:
        sender.run(stop, flush_interval=self.flush_interval)

    def wake(self) -> None:
        """Tell the running sender an event was enqueued."""
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


def _stop_at_exit(ref: weakref.ReferenceType[BackgroundWorker[R]]) -> None:
    background = ref()
    if background is not None:
        background.stop()


def _reset_after_fork(ref: weakref.ReferenceType[BackgroundWorker[R]]) -> None:
    # Only the forking thread survives a fork: the delivery thread, and any lock another
    # thread held, stay behind in the parent.
    background = ref()
    if background is not None:
        background._reset()
