"""Events the outbox could not take, kept in memory until it can, and never lost quietly.

While the outbox is down (disk full, Redis restarting, a file locked for long) a page must not
wait and an event must not vanish. :class:`Fallback` keeps the events, a drain thread writes
them as soon as the outbox works again (with or without new traffic), and at exit what is
still held goes to the outbox or, failing that, to a JSON-lines file read back at the next
start. If the cap is ever reached, each event dropped is counted and logged as an error.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import OutboxError
from ..event.wire import encode_event

logger = logging.getLogger("dedupkit")

#: Events kept in memory at most; beyond it the oldest is dropped, counted and logged.
MAX_KEPT = 10_000
#: First and longest wait of the drain thread between two tries.
FIRST_RETRY = 0.2
MAX_RETRY = 5.0

#: Writes one event to the outbox; ``False`` means it was a duplicate (still done).
Put = Callable[[Mapping[str, Any]], bool]


class Fallback:
    """Events waiting for the outbox, in memory, with a file as the last resort.

    :param put: writes one event to the outbox, raising :class:`OutboxError` when it cannot.
    :param spill_path: the file events still held at exit are written to.
    :param on_lost: told how many events were dropped because the cap was reached.
    :param cap: how many events are kept at most.
    """

    def __init__(
        self,
        put: Put,
        *,
        spill_path: str,
        on_lost: Callable[[int], None] | None = None,
        cap: int = MAX_KEPT,
    ) -> None:
        self._put = put
        self.spill_path = spill_path
        self._on_lost = on_lost
        self._events: deque[Mapping[str, Any]] = deque()
        self._cap = cap
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: Events dropped because the cap was reached, since start (also reported).
        self.lost = 0
        self._unreported_lost = 0
        ref = weakref.ref(self)
        atexit.register(_flush_at_exit, ref)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def __len__(self) -> int:
        return len(self._events)

    def keep(self, payload: Mapping[str, Any]) -> None:
        """Hold ``payload`` until the outbox works; the drain thread starts if needed."""
        with self._lock:
            if len(self._events) >= self._cap:
                self._events.popleft()
                self.lost += 1
                self._unreported_lost += 1
                logger.error(
                    "dedupkit LOST a conversion: %d events are waiting in memory for the outbox "
                    "(the most it keeps); fix the outbox (see 'flask dedupkit status')",
                    self._cap,
                )
            self._events.append(payload)
            held = len(self._events)
        if held == 1 or held % 1000 == 0:
            logger.warning(
                "dedupkit keeps %d event(s) in memory until the outbox can be written again",
                held,
            )
        self._ensure_draining()

    def drain(self) -> int:
        """Write what is held to the outbox, oldest first; returns how many were written.

        :raises OutboxError: when the outbox still fails (what is left stays held).
        """
        written = 0
        while True:
            with self._lock:
                if not self._events:
                    break
                payload = self._events[0]
            self._put(payload)
            with self._lock:
                # keep() may have dropped it meanwhile (cap); only remove what was written.
                if self._events and self._events[0] is payload:
                    self._events.popleft()
            written += 1
        self._report_lost()
        if written:
            logger.warning(
                "the dedupkit outbox works again: %d event(s) kept in memory were written", written
            )
        return written

    def _report_lost(self) -> None:
        with self._lock:
            lost, self._unreported_lost = self._unreported_lost, 0
        if lost and self._on_lost is not None:
            try:
                self._on_lost(lost)
            except OutboxError:
                with self._lock:
                    self._unreported_lost += lost

    def _ensure_draining(self) -> None:
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._drain_until_empty, name="dedupkit-fallback", daemon=True
            )
            self._thread.start()

    def _drain_until_empty(self) -> None:
        delay = FIRST_RETRY
        while self._events:
            try:
                self.drain()
            except OutboxError as exc:
                logger.debug("the outbox still fails (%s); next try in %.1f s", exc, delay)
                self._wake.clear()
                self._wake.wait(delay)
                delay = min(delay * 2, MAX_RETRY)
            except Exception:
                logger.exception("could not write events kept in memory to the outbox")
                self._wake.wait(MAX_RETRY)

    def restore(self) -> int:
        """Read back a file left by an earlier process and hold its events; returns how many."""
        try:
            with open(self.spill_path, encoding="utf-8") as file:
                lines = file.readlines()
            os.unlink(self.spill_path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            logger.error("could not read the dedupkit fallback file %s: %s", self.spill_path, exc)
            return 0
        restored = 0
        for line in lines:
            try:
                payload = json.loads(line)
            except ValueError:
                continue
            if isinstance(payload, dict):
                self.keep(payload)
                restored += 1
        if restored:
            logger.warning(
                "dedupkit found %d event(s) a previous process could not store; writing them now",
                restored,
            )
        return restored

    def flush(self) -> None:
        """At exit: write to the outbox, or else to :attr:`spill_path`. Never raises."""
        if not self._events:
            return
        try:
            self.drain()
            return
        except Exception:
            pass
        with self._lock:
            held = list(self._events)
            self._events.clear()
        try:
            directory = os.path.dirname(os.path.abspath(self.spill_path))
            os.makedirs(directory, exist_ok=True)
            with open(self.spill_path, "a", encoding="utf-8") as file:
                file.writelines(encode_event(p) + "\n" for p in held)
        except OSError as exc:
            logger.error(
                "dedupkit LOST %d conversion(s) at exit: neither the outbox nor %s could be "
                "written (%s)",
                len(held),
                self.spill_path,
                exc,
            )
            return
        logger.warning(
            "dedupkit wrote %d event(s) it could not store to %s; they are sent after the next "
            "start",
            len(held),
            self.spill_path,
        )


def _flush_at_exit(ref: weakref.ReferenceType[Fallback]) -> None:
    fallback = ref()
    if fallback is not None:
        fallback.flush()


def _reset_after_fork(ref: weakref.ReferenceType[Fallback]) -> None:
    # The parent keeps (and writes) its events; a child starting with a copy would only
    # write them twice.
    fallback = ref()
    if fallback is not None:
        fallback._lock = threading.Lock()
        fallback._events = deque()
        fallback._thread = None
