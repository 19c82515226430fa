"""What the outbox could not take, kept in memory until it can, and never lost quietly.

While the outbox is down (disk full, Redis restarting, a file locked for long) a page must not
wait and an intake outcome must not vanish. :class:`Fallback` keeps the outcomes (events, skip
counts, tag evidence: see :mod:`dedupkit.fallback_records`), a drain thread writes them as soon
as the outbox works again, and at exit (or on SIGTERM) what is still held goes to the outbox
or, failing that, to a spill file of this process read back at the next start.

Spill files are written whole or not at all (write, fsync, rename) under a name of their own
per process, and a starting process claims each one by renaming it before reading it: a
process spilling while another starts can never have its file deleted unread. A line that
cannot be read back is moved to a ``.bad`` file beside them, counted, logged and recorded as
a loss the ledger and the metrics show. If the memory cap is ever reached, each outcome
dropped is counted and logged as an error.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import logging
import os
import signal
import threading
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from ..errors import OutboxError
from ..vocabulary import SkipReason
from .fallback_records import Record, parse_record

logger = logging.getLogger("dedupkit")

#: Outcomes kept in memory at most; beyond it the oldest is dropped, counted and logged.
MAX_KEPT = 10_000
#: First and longest wait of the drain thread between two tries.
FIRST_RETRY = 0.2
MAX_RETRY = 5.0
#: Longest spill-file line read back; a longer one is unreadable (moved to the .bad file).
MAX_LINE = 1_000_000

#: Writes one record to the outbox, raising :class:`OutboxError` when it cannot, and
#: ``ValueError`` for a record the outbox will never take.
Write = Callable[[Record], object]
#: Told how many outcomes were lost, and why; may raise :class:`OutboxError`.
OnLost = Callable[[SkipReason, int], None]


class Fallback:
    """Outcomes waiting for the outbox, in memory, with spill files as the last resort.

    :param write: writes one record to the outbox.
    :param spill_dir: the folder of the spill files (the app's instance folder).
    :param spill_name: the spill files' name prefix: one per outbox, so that two shops in one
        folder never read each other's.
    :param on_lost: records losses where the ledger and metrics see them.
    :param cap: how many records are kept in memory at most.
    """

    def __init__(
        self,
        write: Write,
        *,
        spill_dir: str,
        spill_name: str = "dedupkit-fallback",
        on_lost: OnLost | None = None,
        cap: int = MAX_KEPT,
    ) -> None:
        self._write = write
        self.spill_dir = spill_dir
        self.spill_name = spill_name
        self._on_lost = on_lost
        self._records: deque[Record] = deque()
        self.cap = cap
        # Reentrant: the SIGTERM handler runs in the main thread, maybe inside keep().
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: Records dropped because the cap was reached, since start (also reported).
        self.lost = 0
        self._unreported: Counter[SkipReason] = Counter()
        ref = weakref.ref(self)
        atexit.register(_flush_at_exit, ref)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))
        _LIVE.add(self)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bad_path(self) -> str:
        """Where unreadable spill lines are moved, one per line, never deleted."""
        return os.path.join(self.spill_dir, f"{self.spill_name}.bad")

    def spill_files(self) -> list[str]:
        """The spill files waiting to be read back (complete ones only), oldest name first."""
        return sorted(glob.glob(os.path.join(glob.escape(self.spill_dir), self._pattern())))

    def _pattern(self) -> str:
        return f"{glob.escape(self.spill_name)}.*.jsonl"

    def keep(self, record: Record) -> None:
        """Hold ``record`` until the outbox works; past the cap the oldest is dropped (and
        counted as lost). The drain thread starts if needed."""
        with self._lock:
            if len(self._records) >= self.cap:
                self._records.popleft()
                self.lost += 1
                self._unreported[SkipReason.LOST_MEMORY_FULL] += 1
                logger.error(
                    "dedupkit LOST a conversion: %d records are waiting in memory for the "
                    "outbox (the most it keeps); fix the outbox (see 'flask dedupkit status')",
                    self.cap,
                )
            self._records.append(record)
            held = len(self._records)
        self._held(held)

    def try_keep(self, record: Record) -> bool:
        """Hold ``record`` unless the cap is reached: then ``False``, and nothing is dropped
        (the caller says the event was not kept)."""
        with self._lock:
            if len(self._records) >= self.cap:
                return False
            self._records.append(record)
            held = len(self._records)
        self._held(held)
        return True

    def _held(self, held: int) -> None:
        if held == 1 or held % 1000 == 0:
            logger.warning(
                "dedupkit keeps %d record(s) in memory until the outbox can be written again",
                held,
            )
        self._ensure_draining()

    def drain(self) -> int:
        """Write what is held to the outbox, oldest first; returns how many were written.

        A record the outbox refuses as malformed (``ValueError``) is moved to the ``.bad``
        file and counted as lost, never retried: one bad record cannot hold the others.

        :raises OutboxError: when the outbox still fails (what is left stays held).
        """
        written = 0
        while True:
            with self._lock:
                if not self._records:
                    break
                record = self._records[0]
            try:
                self._write(record)
            except (ValueError, TypeError) as exc:
                self._set_aside([json.dumps(record, default=str)], f"the outbox refused it: {exc}")
            else:
                written += 1
            with self._lock:
                # keep() may have dropped it meanwhile (cap); only remove what was handled.
                if self._records and self._records[0] is record:
                    self._records.popleft()
        self._report_lost()
        if written:
            logger.warning(
                "the dedupkit outbox works again: %d record(s) kept in memory were written",
                written,
            )
        return written

    def _report_lost(self) -> None:
        with self._lock:
            lost, self._unreported = self._unreported, Counter()
        if self._on_lost is None:
            return
        for reason, count in lost.items():
            try:
                self._on_lost(reason, count)
            except OutboxError:
                with self._lock:
                    self._unreported[reason] += count

    def _ensure_draining(self) -> None:
        self._wake.set()
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._drain_until_empty, name="dedupkit-fallback", daemon=True
            )
            self._thread.start()

    def _drain_until_empty(self) -> None:
        delay = FIRST_RETRY
        while True:
            with self._lock:
                # Decided under the lock keep() takes: a record kept after this finds no
                # thread and starts one.
                if not self._records and not self._unreported:
                    self._thread = None
                    return
            # Cleared before the try: a keep() during it wakes the next wait, not every one.
            self._wake.clear()
            try:
                self.drain()
                if self._unreported:
                    raise OutboxError("losses not recorded yet")
                delay = FIRST_RETRY
                continue
            except OutboxError as exc:
                logger.debug("the outbox still fails (%s); next try in %.1f s", exc, delay)
            except Exception:
                logger.exception("could not write records kept in memory to the outbox")
                delay = MAX_RETRY
            self._wake.wait(delay)
            delay = min(delay * 2, MAX_RETRY)

    def restore(self) -> int:
        """Claim the spill files left by earlier processes and hold their records; returns
        how many. Each file is renamed before it is read, so only one process reads it and
        a file still being written (under another name until it is whole) is never taken."""
        restored = 0
        for path in [*self.spill_files(), *self._orphans()]:
            token = uuid.uuid4().hex[:8]
            # Known before the rename: another thread of this process then never takes the
            # claim for an orphan.
            _CLAIMS.add(token)
            try:
                claimed = f"{path.split('.claimed-')[0]}.claimed-{os.getpid()}-{token}"
                try:
                    os.rename(path, claimed)
                except FileNotFoundError:  # another process claimed it first
                    continue
                except OSError as exc:
                    logger.error("could not claim the dedupkit spill file %s: %s", path, exc)
                    continue
                restored += self._read_back(claimed)
            finally:
                _CLAIMS.discard(token)
        if restored:
            logger.warning(
                "dedupkit found %d record(s) a previous process could not store; writing them now",
                restored,
            )
        return restored

    def _orphans(self) -> list[str]:
        """Files claimed by a process that died before it finished reading them."""
        pattern = os.path.join(glob.escape(self.spill_dir), self._pattern() + ".claimed-*")
        orphans = []
        for path in glob.glob(pattern):
            pid, _, token = path.rsplit(".claimed-", 1)[1].partition("-")
            if not pid.isdigit():
                continue
            if int(pid) == os.getpid():
                # This pid's claims are read and deleted within restore(): one that no thread
                # of this process is reading was left by an earlier process with the same pid
                # (a container's PID 1, restarted).
                if token not in _CLAIMS:
                    orphans.append(path)
            elif not _alive(int(pid)):
                orphans.append(path)
        return orphans

    def _read_back(self, claimed: str) -> int:
        try:
            with open(claimed, "rb") as file:
                data = file.read()
        except OSError as exc:
            logger.error("could not read the dedupkit spill file %s: %s", claimed, exc)
            return 0
        records, bad = parse_lines(data)
        for record in records:
            self.keep(record)
        if bad:
            self._set_aside(bad, f"unreadable lines of {os.path.basename(claimed)}")
            self._report_lost_soon()
        with contextlib.suppress(OSError):
            os.unlink(claimed)
        return len(records)

    def _report_lost_soon(self) -> None:
        # The drain thread records the loss once the outbox works.
        self._ensure_draining()

    def _set_aside(self, lines: list[str], why: str) -> None:
        """Move ``lines`` to the ``.bad`` file, count them as lost and say so."""
        with self._lock:
            self._unreported[SkipReason.LOST_UNREADABLE] += len(lines)
        try:
            os.makedirs(self.spill_dir, exist_ok=True)
            with open(self.bad_path, "a", encoding="utf-8", errors="backslashreplace") as file:
                file.writelines(line.rstrip("\n") + "\n" for line in lines)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            logger.error(
                "dedupkit LOST %d record(s) (%s) and could not keep them in %s: %s",
                len(lines),
                why,
                self.bad_path,
                exc,
            )
            return
        logger.error(
            "dedupkit could not use %d record(s) (%s); they were moved to %s",
            len(lines),
            why,
            self.bad_path,
        )

    def flush(self) -> None:
        """At exit or SIGTERM: write to the outbox, or else to a spill file. Never raises."""
        if not self._records:
            return
        try:
            self.drain()
            return
        except Exception:
            pass
        with self._lock:
            held = list(self._records)
            self._records.clear()
        self.spill(held)

    def spill(self, records: Iterable[Record]) -> str | None:
        """Write ``records`` to a new spill file of this process, whole (write, fsync,
        rename); returns its path, ``None`` when nothing could be written (logged as lost)."""
        lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records]
        if not lines:
            return None
        name = f"{self.spill_name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        path = os.path.join(self.spill_dir, name)
        partial = path + ".partial"
        try:
            os.makedirs(self.spill_dir, exist_ok=True)
            with open(partial, "w", encoding="utf-8") as file:
                file.writelines(lines)
                file.flush()
                os.fsync(file.fileno())
            os.rename(partial, path)
            _sync_directory(self.spill_dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            logger.error(
                "dedupkit LOST %d record(s) at exit: neither the outbox nor %s could be "
                "written (%s)",
                len(lines),
                path,
                exc,
            )
            return None
        logger.warning(
            "dedupkit wrote %d record(s) it could not store to %s; they are written after the "
            "next start",
            len(lines),
            path,
        )
        return path


def parse_lines(data: bytes) -> tuple[list[Record], list[str]]:
    """The records of a spill file's bytes, and the lines that are not one (as text)."""
    records: list[Record] = []
    bad: list[str] = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            if len(raw) > MAX_LINE:
                raise ValueError("line too long")
            records.append(parse_record(json.loads(raw.decode("utf-8"))))
        except (ValueError, TypeError, RecursionError):
            bad.append(raw[:MAX_LINE].decode("utf-8", errors="backslashreplace"))
    return records, bad


def _sync_directory(path: str) -> None:
    # The rename is durable only once the directory is: fsync it where the OS allows.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: The tokens of the spill files this process is reading back now.
_CLAIMS: set[str] = set()
#: Every fallback of this process, for the SIGTERM handler.
_LIVE: weakref.WeakSet[Fallback] = weakref.WeakSet()
_previous_sigterm: Any = None


def spill_on_sigterm() -> None:
    """Make SIGTERM (``docker stop``, systemd, Kubernetes) spill every fallback as Ctrl-C
    does, then do what the handler installed before did (the app's own, or the default:
    the process ends by the signal). Only from the main thread; installed once."""
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    for fallback in list(_LIVE):
        fallback.flush()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        # The default action, as if dedupkit had not been there: end by the signal.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _flush_at_exit(ref: weakref.ReferenceType[Fallback]) -> None:
    fallback = ref()
    if fallback is not None:
        fallback.flush()


def _reset_after_fork(ref: weakref.ReferenceType[Fallback]) -> None:
    # The parent keeps (and writes) its records; a child starting with a copy would only
    # write them twice.
    fallback = ref()
    if fallback is not None:
        fallback._lock = threading.RLock()
        fallback._records = deque()
        fallback._thread = None
        fallback._unreported = Counter()
