"""The embedded outbox: one SQLite file shared by every process of one host.

WAL lets the request path write while a sender reads; every state change is one statement
or one ``BEGIN IMMEDIATE`` transaction, so several gunicorn workers can share the file.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import InvalidEvent, OutboxError
from .base import (
    Claimed,
    DeadLetter,
    EntryState,
    LedgerEntry,
    OutboxStats,
    event_time_of,
    ledger_entry,
)

#: How many recent delivery errors :meth:`SQLiteOutbox.stats` reports.
LAST_ERRORS_KEPT = 10


class _Status(enum.IntEnum):
    PENDING = 0
    IN_FLIGHT = 1
    DELIVERED = 2
    DEAD = 3


_STATES = {
    _Status.PENDING: EntryState.PENDING,
    _Status.IN_FLIGHT: EntryState.IN_FLIGHT,
    _Status.DELIVERED: EntryState.DELIVERED,
    _Status.DEAD: EntryState.DEAD,
}


# ``due_at`` is when a pending entry may be sent, or when the lease of an in-flight one ends;
# ``changed_at`` is when it was last stored, rescheduled, delivered or killed (not claimed: the
# outbox_changed index, which the ledger dashboard reads newest first, then costs claims
# nothing). ``event_time`` repeats the payload's, so that the sender need not decode the
# payload to check its age.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    created_at REAL NOT NULL,
    changed_at REAL NOT NULL,
    last_error TEXT,
    event_time REAL,
    UNIQUE (event_name, event_id)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, due_at);
CREATE INDEX IF NOT EXISTS outbox_changed ON outbox (changed_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""

# Statuses go into the SQL as the numbers of _Status.
_PENDING, _IN_FLIGHT, _DELIVERED, _DEAD = (int(s) for s in _Status)

_PUT = f"""
INSERT INTO outbox (
    event_name, event_id, payload, event_time, status, due_at, created_at, changed_at
)
VALUES (?, ?, ?, ?, {_PENDING}, ?, ?, ?)
ON CONFLICT (event_name, event_id) DO NOTHING
"""

_CLAIM = f"""
UPDATE outbox SET status = {_IN_FLIGHT}, due_at = :lease_end
WHERE id IN (
    SELECT id FROM outbox WHERE status IN ({_PENDING}, {_IN_FLIGHT}) AND due_at <= :now
    ORDER BY due_at, id LIMIT :limit
)
RETURNING id, payload, attempts, event_time
"""

# A late ack wins over a dead letter written by a sender that reclaimed the entry: Pinterest
# did receive it.
_ACK = f"""
UPDATE outbox SET status = {_DELIVERED}, changed_at = ?, last_error = NULL
WHERE id = ? AND status != {_DELIVERED}
"""
_RETRY = f"""
UPDATE outbox SET status = {_PENDING}, attempts = attempts + 1, due_at = ?, last_error = ?,
    changed_at = ?
WHERE id = ? AND status = {_IN_FLIGHT}
"""
_DEAD_LETTER = f"""
UPDATE outbox SET status = {_DEAD}, last_error = ?, changed_at = ?
WHERE id = ? AND status = {_IN_FLIGHT}
"""
_REPLAY = f"""
UPDATE outbox SET status = {_PENDING}, attempts = 0, due_at = ?, last_error = NULL, changed_at = ?
WHERE status = {_DEAD}
"""
_COUNTS = "SELECT status, count(*) FROM outbox GROUP BY status"
_OLDEST = f"SELECT min(created_at) FROM outbox WHERE status IN ({_PENDING}, {_IN_FLIGHT})"
_DEAD_LETTERS = f"""
SELECT id, event_name, event_id, last_error, changed_at, attempts FROM outbox
WHERE status = {_DEAD} ORDER BY changed_at DESC, id DESC LIMIT ?
"""
# Walks the outbox_changed index backwards: the cost is the limit, not the table.
_RECENT = """
SELECT event_name, event_id, status, attempts, event_time, changed_at, last_error, payload
FROM outbox ORDER BY changed_at DESC, id DESC LIMIT ?
"""
_PRUNE = f"DELETE FROM outbox WHERE status = {_DELIVERED} AND changed_at < ?"

_RAISE_PAUSE = """
INSERT INTO meta (key, value) VALUES ('pause_until', ?)
ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)
"""
_COUNT_SKIP = """
INSERT INTO meta (key, value) VALUES (?, 1)
ON CONFLICT (key) DO UPDATE SET value = value + 1
"""
_SKIP_PREFIX = "skipped:"

# What to check, by the words of SQLite's message.
_HINTS = (
    ("full", "free some disk space"),
    ("readonly", "check the file and its directory are writable by this user"),
    ("locked", "another connection held the database longer than busy_timeout"),
    ("busy", "another connection held the database longer than busy_timeout"),
    ("unable to open", "check the directory exists, is writable and the path is not a directory"),
    ("not a database", "the path points to a file that is not a SQLite database"),
    ("malformed", "the database file is corrupt; move it aside to start a new one"),
)


class SQLiteOutbox:
    """The :class:`~dedupkit.outbox.Outbox` in a SQLite file, created on first use.

    Delivered entries are kept, so a repeated ``(event_name, event_id)`` stays a duplicate;
    :meth:`prune` removes old ones. ``oldest_pending_age`` counts pending and in-flight entries.

    :param path: the database file; missing parent directories are created.
    :param busy_timeout: seconds to wait for another process's write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[int, sqlite3.Connection]] = []
        self._generation = 0
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_lock(ref))

    def __repr__(self) -> str:
        return f"<SQLiteOutbox {self.path!r}>"

    def put(self, payload: Mapping[str, Any], *, now: float | None = None) -> bool:
        name, event_id = payload.get("event_name"), payload.get("event_id")
        if not isinstance(name, str) or not isinstance(event_id, str):
            raise InvalidEvent("an outbox entry needs a string event_name and event_id")
        # The very text sent to Pinterest (see dedupkit.client.encode_batch).
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        now = _now(now)
        params = (name, event_id, data, event_time_of(payload), now, now, now)
        with self._errors("store an event in"):
            cursor = self._conn().execute(_PUT, params)
        return cursor.rowcount > 0

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = _now(now)
        params = {"now": now, "lease_end": now + lease, "limit": limit}
        with self._errors("claim events from"), self._transaction() as conn:
            rows = conn.execute(_CLAIM, params).fetchall()
        # RETURNING gives no order guarantee; keep the order of insertion.
        rows.sort(key=lambda row: row[0])
        return [
            Claimed(str(id_), data, attempts, event_time=event_time)
            for id_, data, attempts, event_time in rows
        ]

    def ack(self, ids: Sequence[str]) -> None:
        now = time.time()
        with self._errors("acknowledge events in"), self._transaction() as conn:
            conn.executemany(_ACK, [(now, int(id_)) for id_ in ids])

    def retry(self, ids: Sequence[str], *, not_before: float, error: str) -> None:
        now = time.time()
        with self._errors("reschedule events in"), self._transaction() as conn:
            conn.executemany(_RETRY, [(not_before, error, now, int(id_)) for id_ in ids])
            if ids:
                self._log_error(conn, now, error)

    def dead(self, ids: Sequence[str], *, reason: str, now: float | None = None) -> None:
        now = _now(now)
        with self._errors("dead-letter events in"), self._transaction() as conn:
            conn.executemany(_DEAD_LETTER, [(reason, now, int(id_)) for id_ in ids])
            if ids:
                self._log_error(conn, now, reason)

    def pause_until(self) -> float:
        with self._errors("read the pause from"):
            row = (
                self._conn().execute("SELECT value FROM meta WHERE key = 'pause_until'").fetchone()
            )
        return float(row[0]) if row else 0.0

    def set_pause_until(self, when: float) -> None:
        with self._errors("store the pause in"):
            self._conn().execute(_RAISE_PAUSE, (when,))

    def record_skip(self, reason: str) -> None:
        with self._errors("count a skipped event in"):
            self._conn().execute(_COUNT_SKIP, (_SKIP_PREFIX + reason,))

    def stats(self, *, now: float | None = None) -> OutboxStats:
        now = _now(now)
        with self._errors("read the statistics of"), self._transaction("DEFERRED") as conn:
            counts = dict.fromkeys(_Status, 0)
            for status, count in conn.execute(_COUNTS):
                counts[_Status(status)] = count
            (oldest,) = conn.execute(_OLDEST).fetchone()
            skipped = {
                key[len(_SKIP_PREFIX) :]: int(value)
                for key, value in conn.execute(
                    "SELECT key, value FROM meta WHERE key LIKE 'skipped:%'"
                )
            }
            errors = _recent_errors(conn)
        return OutboxStats(
            pending=counts[_Status.PENDING],
            in_flight=counts[_Status.IN_FLIGHT],
            delivered=counts[_Status.DELIVERED],
            dead=counts[_Status.DEAD],
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
            skipped=skipped,
            last_errors=[(when, message) for when, message in reversed(errors)],
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._errors("read the dead letters of"):
            rows = self._conn().execute(_DEAD_LETTERS, (limit,))
            return [
                DeadLetter(str(id_), name, event_id, reason or "", died_at, attempts)
                for id_, name, event_id, reason, died_at, attempts in rows
            ]

    def recent(self, limit: int = 100) -> list[LedgerEntry]:
        """The ``limit`` most recently changed entries (delivered ones included), newest first.

        ``updated_at`` is when an entry was stored, rescheduled, delivered, dead-lettered or
        replayed (a claim does not count); only the returned rows' payloads are decoded.
        """
        if limit <= 0:
            return []
        with self._errors("read the recent entries of"):
            rows = self._conn().execute(_RECENT, (limit,)).fetchall()
        return [
            ledger_entry(
                payload,
                event_name=name,
                event_id=event_id,
                state=_STATES[_Status(status)],
                attempts=attempts,
                event_time=event_time,
                updated_at=changed_at,
                last_error=error,
            )
            for name, event_id, status, attempts, event_time, changed_at, error, payload in rows
        ]

    def replay_dead(self, ids: Sequence[str] | None = None, *, now: float | None = None) -> int:
        now = _now(now)
        with self._errors("replay the dead letters of"), self._transaction() as conn:
            if ids is None:
                return conn.execute(_REPLAY, (now, now)).rowcount
            cursor = conn.executemany(
                _REPLAY + " AND id = ?", [(now, now, int(id_)) for id_ in ids]
            )
            return cursor.rowcount

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Delete delivered entries acknowledged more than ``older_than`` seconds ago.

        Their ``(event_name, event_id)`` can then be enqueued again, so keep at least the
        retry window (Pinterest no longer deduplicates such late events anyway).

        :returns: how many entries were deleted.
        """
        if older_than < 0:
            raise ValueError(f"older_than must be positive, got {older_than}")
        cutoff = _now(now) - older_than
        with self._errors("prune"):
            cursor = self._conn().execute(_PRUNE, (cutoff,))
        return cursor.rowcount

    def close(self) -> None:
        """Close this process's connections; the next call opens new ones."""
        with self._lock:
            mine = [conn for pid, conn in self._connections if pid == os.getpid()]
            self._connections = []
            self._generation += 1
        for conn in mine:
            conn.close()

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        # A connection must never cross a fork (sqlite.org/howtocorrupt.html §2.6), nor be
        # used after close().
        if getattr(local, "key", None) != (os.getpid(), self._generation):
            local.conn = self._connect()
            local.file = self._file_identity()
            local.key = (os.getpid(), self._generation)
        elif self._file_identity() != local.file:
            # SQLite would go on writing to the deleted file, and reopening the path while
            # other processes still use the old one would share their -wal and -shm files.
            raise OutboxError(
                f"the dedupkit outbox {self.path!r} was deleted or replaced while in use; "
                "restart the processes that use it"
            )
        conn: sqlite3.Connection = local.conn
        return conn

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _connect(self) -> sqlite3.Connection:
        with self._errors("open"):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                self._set_up(conn)
            except BaseException:
                conn.close()
                raise
        with self._lock:
            self._connections.append((os.getpid(), conn))
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                # In WAL mode NORMAL survives a killed process; only power loss may drop the
                # last commits.
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
                _add_event_time(conn)
                return
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL answers "locked" at once, without the busy
                # timeout, while another connection opens it: wait here instead.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute(f"BEGIN {mode}")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full) leaves the transaction open.
            if conn.in_transaction:
                conn.rollback()
            raise

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            text = str(exc)
            hint = next(
                (h for words, h in _HINTS if words in text.lower()),
                "check the path, its permissions and the free disk space",
            )
            raise OutboxError(
                f"could not {action} the dedupkit outbox at {self.path!r}: {text} ({hint})"
            ) from exc

    def _log_error(self, conn: sqlite3.Connection, now: float, message: str) -> None:
        errors = _recent_errors(conn)
        # One failed batch reschedules its events in several calls: one entry is enough.
        if errors and errors[-1][1] == message:
            errors.pop()
        errors = [*errors, (now, message)][-LAST_ERRORS_KEPT:]
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_errors', ?)",
            (json.dumps(errors),),
        )


def _forget_lock(ref: weakref.ReferenceType[SQLiteOutbox]) -> None:
    # Another thread of the parent may have held the lock when it forked.
    outbox = ref()
    if outbox is not None:
        outbox._lock = threading.Lock()


def _add_event_time(conn: sqlite3.Connection) -> None:
    # Files created before the column existed; their entries keep a NULL event_time, for
    # which the sender reads the payload.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    if "event_time" not in columns:
        try:
            conn.execute("ALTER TABLE outbox ADD COLUMN event_time REAL")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it meanwhile
                raise


def _recent_errors(conn: sqlite3.Connection) -> list[tuple[float, str]]:
    """Recent errors, oldest first."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'last_errors'").fetchone()
    return [(float(when), str(message)) for when, message in json.loads(row[0])] if row else []


def _now(now: float | None) -> float:
    return time.time() if now is None else now
