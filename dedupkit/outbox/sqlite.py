"""The embedded outbox: one SQLite file shared by every process of one host.

WAL lets the request path write while a sender reads; every state change is one statement
or one ``BEGIN IMMEDIATE`` transaction, so several gunicorn workers can share the file.
Connections are lent per operation by a :class:`~.sqlite_pool.ConnectionPool`.

``Claimed.id`` is ``<rowid>:<claim number>``: each claim bumps the entry's ``claims`` column,
and ``retry``/``dead`` only match the current claim number (see the stale-claim rule in
:class:`~dedupkit.outbox.base.Outbox`). :attr:`DeadLetter.id` is the bare rowid.
"""

from __future__ import annotations

import enum
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import OutboxError
from ..vocabulary import EventState
from .base import (
    DUPLICATE,
    EVIDENCE_KEPT,
    EVIDENCE_TTL,
    LAG_BUCKETS,
    MAX_MESSAGE_LENGTH,
    SKIPS_KEPT,
    TOTALS,
    Claimed,
    DeadLetter,
    LedgerEntry,
    NewerOutbox,
    OutboxStats,
    Pause,
    Skip,
    as_offline_text,
    device_labels_by_row,
    event_time_of,
    foreign_outbox,
    lag_bucket,
    ledger_entry,
    parse_row_ids,
    stored_entry,
    summary_of,
)
from .sqlite_pool import MAX_IDLE, ConnectionPool

#: The schema this version writes (``PRAGMA user_version``); a file with a higher one was
#: written by a newer dedupkit and is refused. The first migration will read a lower one.
SCHEMA_VERSION = 1

_T = TypeVar("_T")

#: How many recent delivery errors :meth:`SQLiteOutbox.stats` reports.
LAST_ERRORS_KEPT = 10


class _Status(enum.IntEnum):
    PENDING = 0
    IN_FLIGHT = 1
    DELIVERED = 2
    DEAD = 3


_STATES = {
    _Status.PENDING: EventState.PENDING,
    _Status.IN_FLIGHT: EventState.SENDING,
    _Status.DELIVERED: EventState.DELIVERED,
    _Status.DEAD: EventState.DEAD,
}


# ``due_at`` is when a pending entry may be sent, or when the lease of an in-flight one ends;
# ``changed_at`` is when it was last stored, rescheduled, delivered or killed (not claimed: the
# outbox_changed index, which the ledger dashboard reads newest first, then costs claims
# nothing). ``event_time`` repeats the payload's, so that the sender need not decode the
# payload to check its age. ``claims`` counts claims, to tell a stale claim from the current one.
# ``account`` is the ad account the event was stored for: a sender claims only its own.
_SCHEMA = f"""
BEGIN IMMEDIATE;
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
    event_time REAL NOT NULL,
    claims INTEGER NOT NULL DEFAULT 0,
    fields TEXT NOT NULL,
    value REAL,
    currency TEXT,
    test INTEGER,
    account TEXT NOT NULL,
    device TEXT,
    UNIQUE (event_name, event_id)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, due_at);
CREATE INDEX IF NOT EXISTS outbox_changed ON outbox (changed_at);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tag INTEGER NOT NULL,
    at REAL NOT NULL,
    UNIQUE (event_name, event_id)
);
CREATE TABLE IF NOT EXISTS skips (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    event_name TEXT,
    event_id TEXT
);
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

# Statuses go into the SQL as the numbers of _Status.
_PENDING, _IN_FLIGHT, _DELIVERED, _DEAD = (int(s) for s in _Status)

_PUT = f"""
INSERT INTO outbox (
    event_name, event_id, payload, event_time, status, due_at, created_at, changed_at,
    fields, value, currency, account
)
VALUES (?, ?, ?, ?, {_PENDING}, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_name, event_id) DO NOTHING
"""

_CLAIM = f"""
UPDATE outbox SET status = {_IN_FLIGHT}, due_at = :lease_end, claims = claims + 1
WHERE id IN (
    SELECT id FROM outbox WHERE status IN ({_PENDING}, {_IN_FLIGHT}) AND due_at <= :now
        AND (:account IS NULL OR account IN (:account, ''))
    ORDER BY due_at, id LIMIT :limit
)
RETURNING id, claims, payload, attempts, event_time
"""

# A late ack wins over a dead letter written by a sender that reclaimed the entry: Pinterest
# did receive it.
_ACK = f"""
UPDATE outbox SET status = {_DELIVERED}, changed_at = :now, last_error = NULL,
    attempts = attempts + 1, test = :test, device = coalesce(:device, device)
WHERE id = :id AND status != {_DELIVERED}
RETURNING event_time
"""
# Only the current claim: a stale sender's late call matches no row.
_RETRY = f"""
UPDATE outbox SET status = {_PENDING}, attempts = attempts + ?, due_at = ?, last_error = ?,
    changed_at = ?
WHERE id = ? AND claims = ? AND status = {_IN_FLIGHT}
"""
_DEAD_LETTER = f"""
UPDATE outbox SET status = {_DEAD}, last_error = ?, changed_at = ?, attempts = attempts + ?
WHERE id = ? AND claims = ? AND status = {_IN_FLIGHT}
"""
_REPLAY = f"""
UPDATE outbox SET status = {_PENDING}, attempts = 0, due_at = :now, last_error = NULL,
    changed_at = :now, payload = coalesce(:payload, payload)
WHERE status = {_DEAD}
"""
_DEAD_PAYLOADS = f"SELECT id, payload FROM outbox WHERE status = {_DEAD}"
_COUNTS = "SELECT status, count(*) FROM outbox GROUP BY status"
_OLDEST = f"SELECT min(created_at) FROM outbox WHERE status IN ({_PENDING}, {_IN_FLIGHT})"
# A dead letter's reason is its last_error and it died when it last changed.
_DEAD_FILTER = f"""
WHERE status = {_DEAD} AND (:reason IS NULL OR last_error = :reason)
    AND (:since IS NULL OR changed_at >= :since)
"""
_DEAD_LETTERS = f"""
SELECT id, event_name, event_id, last_error, changed_at, attempts FROM outbox {_DEAD_FILTER}
ORDER BY changed_at DESC, id DESC LIMIT :limit
"""
_COUNT_DEAD = f"SELECT count(*) FROM outbox {_DEAD_FILTER}"
# The columns of a ledger entry, with its tag evidence (the payload is not read).
_ENTRY_COLUMNS = """
o.event_name, o.event_id, o.status, o.attempts, o.event_time, o.changed_at, o.last_error,
o.fields, o.created_at, o.value, o.currency, o.test, e.tag, o.device
FROM outbox o LEFT JOIN evidence e ON e.event_name = o.event_name AND e.event_id = o.event_id
"""
# Walks the outbox_changed index backwards: the cost is the limit, not the table.
_RECENT = f"SELECT {_ENTRY_COLUMNS} ORDER BY o.changed_at DESC, o.id DESC LIMIT ?"
# Walks the outbox_created index backwards from now to ``since``, at most the limit.
_SINCE = f"""
SELECT {_ENTRY_COLUMNS} WHERE o.created_at >= ? ORDER BY o.created_at DESC, o.id DESC LIMIT ?
"""
# Evidence: fired once stays fired. Past EVIDENCE_KEPT rows the oldest ids go.
_TAG = """
INSERT INTO evidence (event_name, event_id, tag, at) VALUES (?, ?, ?, ?)
ON CONFLICT (event_name, event_id) DO UPDATE SET tag = max(tag, excluded.tag), at = excluded.at
"""
_TRIM_EVIDENCE = "DELETE FROM evidence WHERE id <= (SELECT max(id) FROM evidence) - ?"
_PRUNE_EVIDENCE = "DELETE FROM evidence WHERE at < ?"
_SKIP = "INSERT INTO skips (at, reason, event_name, event_id) VALUES (?, ?, ?, ?)"
_TRIM_SKIPS = "DELETE FROM skips WHERE id <= (SELECT max(id) FROM skips) - ?"
_RECENT_SKIPS = "SELECT at, reason, event_name, event_id FROM skips ORDER BY id DESC LIMIT ?"
_PRUNE = f"DELETE FROM outbox WHERE status = {_DELIVERED} AND changed_at < ?"

# ``pause_until`` is the time, ``pause_info`` says why: both written in one transaction.
_PAUSE = "SELECT key, value FROM meta WHERE key IN ('pause_until', 'pause_info')"
_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_CLEAR_PAUSE = "DELETE FROM meta WHERE key IN ('pause_until', 'pause_info')"
_COUNT = """
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = value + excluded.value
"""
_SKIP_PREFIX = "skipped:"
_DUPLICATES = "count:" + DUPLICATE
# The delivery-lag histogram: ``lag:<bucket index>`` counts and ``lag_sum``.
_LAG_PREFIX = "lag:"
_TOTAL_PREFIX = "count:"
_COUNTERS = (
    "SELECT key, value FROM meta WHERE key LIKE 'lag:%' OR key LIKE 'count:%' OR key = 'lag_sum'"
)

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


#: Rows one write transaction of a claim or an ack touches at most: each holds the file's
#: write lock for a few milliseconds, not the 10-20 ms of a 1,000-row batch.
WRITE_CHUNK = 250
#: How often a timed put tries again while another connection holds the write lock.
PUT_POLL = 0.0005


class _Connection(sqlite3.Connection):
    """A connection that remembers its busy timeout, so that a timed put need not set it and
    restore it with two more statements every time."""

    busy_ms: int = 0


class SQLiteOutbox:
    """The :class:`~dedupkit.outbox.Outbox` in a SQLite file, created on first use.

    Delivered entries are kept, so a repeated ``(event_name, event_id)`` stays a duplicate;
    :meth:`prune` removes old ones. ``oldest_pending_age`` counts pending and in-flight entries.
    The file records its schema version (``PRAGMA user_version``) and, with ``account``, the
    ad account it belongs to: a file written by a newer dedupkit, or bound to another account,
    is refused.

    :param path: the database file; missing parent directories are created.
    :param busy_timeout: seconds to wait for another process's write lock.
    :param max_idle: connections kept open between operations (see
        :class:`~.sqlite_pool.ConnectionPool`); more are opened while more threads use the
        outbox at once, and closed after use.
    :param account: the ad account this process sends for: recorded in a new file, checked
        against the one recorded (:class:`~dedupkit.errors.ConfigurationError` when it
        differs), stamped on every stored event, and the only account whose events
        :meth:`claim` returns. ``None`` (tools, tests) binds nothing and claims every event.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        max_idle: int = MAX_IDLE,
        account: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.account = account
        self.busy_timeout = busy_timeout
        self._pool = ConnectionPool(self.path, self._connect, max_idle=max_idle)

    def __repr__(self) -> str:
        return f"<SQLiteOutbox {self.path!r}>"

    def put(
        self,
        payload: Mapping[str, Any],
        *,
        now: float | None = None,
        timeout: float | None = None,
        tag: bool | None = None,
    ) -> bool:
        """Store an event (and its tag evidence) in one transaction; ``False`` if
        ``(event_name, event_id)`` was already stored.

        :param timeout: wait at most this many seconds (instead of ``busy_timeout``) for
            another connection's write lock, then raise :class:`OutboxError`.
        :raises ValueError: for a payload that is not an event (see
            :func:`~dedupkit.outbox.base.stored_entry`).
        """
        name, event_id, data = stored_entry(payload)
        now = _now(now)
        event_time = event_time_of(payload)
        summary = summary_of(payload)
        params = (name, event_id, data, event_time, now, now, now, *summary, self.account or "")

        def write(conn: sqlite3.Connection) -> bool:
            stored = _insert(conn, params)
            if tag is not None:
                _store_tag(conn, name, event_id, tag, now)
            return stored

        return self._write("store an event in", write, timeout)

    def _write(
        self,
        action: str,
        write: Callable[[sqlite3.Connection], _T],
        timeout: float | None,
        *,
        whole: bool = True,
    ) -> _T:
        """Run ``write`` (in one ``BEGIN IMMEDIATE`` transaction when ``whole``), waiting at
        most ``timeout`` seconds for another connection's write lock when it is given."""
        if timeout is None:
            with self._errors(action), self._lend() as conn:
                return _run_write(conn, write, whole)
        # SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms between tries and misses the
        # short gaps between a sender's write transactions; polling every half millisecond
        # takes the first gap, so a page waits about one transaction, not 40 ms.
        deadline = time.monotonic() + timeout
        with self._errors(action), self._lend(0.0) as conn:
            while True:
                try:
                    return _run_write(conn, write, whole)
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() >= deadline:
                        raise OutboxError(
                            f"the dedupkit outbox at {self.path!r} stayed locked for more than "
                            f"{_millis(timeout)} ms (another connection was writing)"
                        ) from exc
                time.sleep(PUT_POLL)

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = _now(now)
        rows: list[Any] = []
        # Several short write transactions rather than one long one: a page's put (which
        # waits at most 50 ms) then never queues behind a 1,000-row claim.
        while len(rows) < limit:
            chunk = min(WRITE_CHUNK, limit - len(rows))
            params = {
                "now": now,
                "lease_end": now + lease,
                "limit": chunk,
                "account": self.account,
            }
            with self._errors("claim events from"), self._transaction() as conn:
                claimed = conn.execute(_CLAIM, params).fetchall()
            rows += claimed
            if len(claimed) < chunk:
                break
        # RETURNING gives no order guarantee; keep the order of insertion.
        rows.sort(key=lambda row: row[0])
        return [
            Claimed(f"{id_}:{claims}", data, attempts, event_time=event_time)
            for id_, claims, data, attempts, event_time in rows
        ]

    def ack(
        self,
        ids: Sequence[str],
        *,
        test: bool | None = None,
        devices: Mapping[str, str] | None = None,
    ) -> None:
        """Mark entries delivered, from any claim of them (even over a dead letter), and count
        their lags; keep each one's device label from ``devices``."""
        labels = device_labels_by_row(devices)
        rows = [row for row, _ in parse_row_ids(ids)]
        if not rows:
            return
        now = time.time()
        flag = None if test is None else int(test)
        for start in range(0, len(rows), WRITE_CHUNK):
            with self._errors("acknowledge events in"), self._transaction() as conn:
                lags = Counter[int]()
                total = 0.0
                for row in rows[start : start + WRITE_CHUNK]:
                    params = {"now": now, "test": flag, "id": row, "device": labels.get(row)}
                    hit = conn.execute(_ACK, params).fetchone()
                    if hit is not None:
                        lag = max(0.0, now - float(hit[0]))
                        lags[lag_bucket(lag)] += 1
                        total += lag
                if lags:
                    counts = [(f"{_LAG_PREFIX}{index}", n) for index, n in lags.items()]
                    delivered = (_TOTAL_PREFIX + "delivered", sum(lags.values()))
                    conn.executemany(_COUNT, [*counts, ("lag_sum", total), delivered])

    def retry(
        self, ids: Sequence[str], *, not_before: float, error: str, sent: bool = True
    ) -> None:
        """Give entries back, due at ``not_before``; only ids of their current claim count."""
        claims = [(row, claim) for row, claim in parse_row_ids(ids) if claim is not None]
        if not claims:
            return
        now = time.time()
        params = [(int(sent), not_before, error, now, row, claim) for row, claim in claims]
        with self._errors("reschedule events in"), self._transaction() as conn:
            cursor = conn.executemany(_RETRY, params)
            if cursor.rowcount > 0 and sent:
                self._log_error(conn, now, error)

    def dead(
        self, ids: Sequence[str], *, reason: str, now: float | None = None, sent: bool = True
    ) -> None:
        """Dead-letter entries with ``reason``; only ids of their current claim count."""
        claims = [(row, claim) for row, claim in parse_row_ids(ids) if claim is not None]
        if not claims:
            return
        now = _now(now)
        with self._errors("dead-letter events in"), self._transaction() as conn:
            cursor = conn.executemany(
                _DEAD_LETTER, [(reason, now, int(sent), row, claim) for row, claim in claims]
            )
            if cursor.rowcount > 0:
                conn.execute(_COUNT, (_TOTAL_PREFIX + "dead", cursor.rowcount))
                self._log_error(conn, now, reason)

    def set_pause_until(
        self, when: float, *, reason: str = "", kind: str = "rate_limit", token_id: str = ""
    ) -> None:
        """Raise the shared pause to ``when`` with why; a lower ``when`` changes nothing."""
        info = {"until": when, "reason": reason[:MAX_MESSAGE_LENGTH], "kind": kind}
        info["token_id"] = token_id
        with self._errors("store the pause in"), self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'pause_until'").fetchone()
            if row is None or when > float(row[0]):
                conn.execute(_SET_META, ("pause_until", when))
                conn.execute(_SET_META, ("pause_info", json.dumps(info)))

    def pause(self, *, now: float | None = None) -> Pause | None:
        """The pause in force with its reason, ``None`` when none (see the protocol)."""
        with self._errors("read the pause from"), self._lend() as conn:
            values = dict(conn.execute(_PAUSE).fetchall())
        until = float(values.get("pause_until") or 0.0)
        if until <= _now(now):
            return None
        return _pause(until, values.get("pause_info"))

    def clear_pause(self, *, kind: str | None = None) -> None:
        """Lift the pause, whatever it was, or only one of ``kind``."""
        if kind is None:
            with self._errors("clear the pause in"), self._lend() as conn:
                conn.execute(_CLEAR_PAUSE)
            return
        with self._errors("clear the pause in"), self._transaction() as conn:
            values = dict(conn.execute(_PAUSE).fetchall())
            if "pause_until" in values:
                until = float(values["pause_until"] or 0.0)
                if _pause(until, values.get("pause_info")).kind == kind:
                    conn.execute(_CLEAR_PAUSE)

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
        """Count a skipped event (and store its tag evidence) in one transaction; with its
        name or id, remember it among the last few."""
        when = _now(now)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(_COUNT, (_SKIP_PREFIX + reason, count))
            if event_name is not None or event_id is not None:
                conn.execute(_SKIP, (when, reason, event_name, event_id))
                conn.execute(_TRIM_SKIPS, (SKIPS_KEPT,))
            if tag is not None and event_name is not None and event_id is not None:
                _store_tag(conn, event_name, event_id, tag, when)

        self._write("count a skipped event in", write, timeout)

    def recent_skips(self, limit: int = 100) -> list[Skip]:
        """The skipped events recorded with a name or id, newest first."""
        if limit <= 0:
            return []
        with self._errors("read the skipped events of"), self._lend() as conn:
            rows = conn.execute(_RECENT_SKIPS, (min(limit, SKIPS_KEPT),)).fetchall()
        return [Skip(at, reason, name, event_id) for at, reason, name, event_id in rows]

    def record_tag(
        self,
        event_name: str,
        event_id: str,
        fired: bool,
        *,
        now: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Remember the tag evidence of one event; the oldest go past ``EVIDENCE_KEPT``."""
        when = _now(now)

        def write(conn: sqlite3.Connection) -> None:
            _store_tag(conn, event_name, event_id, fired, when)

        self._write("store tag evidence in", write, timeout)

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
            counters = dict(conn.execute(_COUNTERS).fetchall())
        return OutboxStats(
            pending=counts[_Status.PENDING],
            in_flight=counts[_Status.IN_FLIGHT],
            delivered=counts[_Status.DELIVERED],
            dead=counts[_Status.DEAD],
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
            skipped=skipped,
            last_errors=[(when, message) for when, message in reversed(errors)],
            duplicates=int(counters.get(_DUPLICATES) or 0),
            lag_counts=[
                int(counters.get(f"{_LAG_PREFIX}{i}") or 0) for i in range(len(LAG_BUCKETS) + 1)
            ],
            lag_sum=float(counters.get("lag_sum") or 0.0),
            totals={outcome: int(counters.get(_TOTAL_PREFIX + outcome) or 0) for outcome in TOTALS},
        )

    def dead_letters(
        self, limit: int = 100, *, reason: str | None = None, since: float | None = None
    ) -> list[DeadLetter]:
        """Dead letters, most recent first; ``reason`` matches exactly, ``since`` is inclusive."""
        if limit <= 0:
            return []
        params = {"limit": limit, "reason": reason, "since": since}
        with self._errors("read the dead letters of"), self._lend() as conn:
            rows = conn.execute(_DEAD_LETTERS, params).fetchall()
        return [
            DeadLetter(str(id_), name, event_id, reason or "", died_at, attempts)
            for id_, name, event_id, reason, died_at, attempts in rows
        ]

    def count_dead(self, *, reason: str | None = None, since: float | None = None) -> int:
        """How many dead letters match (the same filters as :meth:`dead_letters`)."""
        with self._errors("count the dead letters of"), self._lend() as conn:
            (count,) = conn.execute(_COUNT_DEAD, {"reason": reason, "since": since}).fetchone()
        return int(count)

    def recent(self, limit: int = 100) -> list[LedgerEntry]:
        """The ``limit`` most recently changed entries (delivered ones included), newest first.

        ``updated_at`` is when an entry was stored, rescheduled, delivered, dead-lettered or
        replayed (a claim does not count); only the returned rows' payloads are decoded.
        """
        if limit <= 0:
            return []
        with self._errors("read the recent entries of"), self._lend() as conn:
            rows = conn.execute(_RECENT, (limit,)).fetchall()
        return [_entry(row) for row in rows]

    def entries_since(self, since: float, *, limit: int = 20_000) -> list[LedgerEntry]:
        """Entries stored at or after ``since``, newest first, read through an index."""
        if limit <= 0:
            return []
        with self._errors("read the entries of"), self._lend() as conn:
            rows = conn.execute(_SINCE, (since, limit)).fetchall()
        return [_entry(row) for row in rows]

    def replay_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        now: float | None = None,
        as_offline: bool = False,
    ) -> int:
        """Make dead letters pending again (all when ``ids`` is None); see the protocol.

        With ``as_offline`` the payloads are rewritten in Python, with the one encoder, in the
        same transaction.
        """
        now = _now(now)
        rows = None if ids is None else sorted({row for row, _ in parse_row_ids(ids)})
        if rows == []:
            return 0
        with self._errors("replay the dead letters of"), self._transaction() as conn:
            if not as_offline:
                if rows is None:
                    return _count_replayed(
                        conn, conn.execute(_REPLAY, {"now": now, "payload": None})
                    )
                params: list[dict[str, Any]] = [
                    {"now": now, "payload": None, "id": row} for row in rows
                ]
            else:
                found = (
                    conn.execute(_DEAD_PAYLOADS).fetchall()
                    if rows is None
                    else [
                        hit
                        for row in rows
                        for hit in conn.execute(_DEAD_PAYLOADS + " AND id = ?", (row,))
                    ]
                )
                params = [
                    {"now": now, "payload": as_offline_text(data), "id": row} for row, data in found
                ]
            if not params:
                return 0
            return _count_replayed(conn, conn.executemany(_REPLAY + " AND id = :id", params))

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Delete delivered entries acknowledged more than ``older_than`` seconds ago.

        Their ``(event_name, event_id)`` can then be enqueued again, so keep at least the
        retry window (Pinterest no longer deduplicates such late events anyway).

        :returns: how many entries were deleted.
        """
        if older_than < 0:
            raise ValueError(f"older_than must be positive, got {older_than}")
        cutoff = _now(now) - older_than
        with self._errors("prune"), self._transaction() as conn:
            conn.execute(_PRUNE_EVIDENCE, (min(cutoff, _now(now) - EVIDENCE_TTL),))
            return conn.execute(_PRUNE, (cutoff,)).rowcount

    def close(self) -> None:
        """Close this process's idle connections (those in use, when given back); the next
        call opens new ones."""
        self._pool.close()

    def _conn(self) -> sqlite3.Connection:
        """An idle connection of the pool, for tests and benchmarks: the one the next call
        uses when no other thread is using the outbox meanwhile."""
        with self._lend() as conn:
            return conn

    @contextmanager
    def _lend(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """A pooled connection waiting at most ``timeout`` (default ``busy_timeout``) for
        another connection's lock; the PRAGMA runs only when the wait changes."""
        wanted = _millis(self.busy_timeout if timeout is None else timeout)
        with self._pool.connection() as conn:
            if isinstance(conn, _Connection) and conn.busy_ms != wanted:
                conn.execute(f"PRAGMA busy_timeout = {wanted}")
                conn.busy_ms = wanted
            yield conn

    def _connect(self) -> sqlite3.Connection:
        with self._errors("open"):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                # The pool lends a connection to one thread at a time, not always the same one.
                check_same_thread=False,
                factory=_Connection,
            )
            conn.busy_ms = _millis(self.busy_timeout)
            try:
                self._set_up(conn)
            except BaseException:
                conn.close()
                raise
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
                # Reads only, when the file is set up: a new connection then needs no write
                # lock, and opens at once while another process holds it.
                if _schema_version(conn, self.path) == 0:
                    conn.executescript(_SCHEMA)
                    _schema_version(conn, self.path)
                if self.account is not None:
                    _bind(conn, self.path, self.account)
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
        with self._lend() as conn:
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


def _entry(row: Sequence[Any]) -> LedgerEntry:
    (name, event_id, status, attempts, event_time, changed_at, error) = row[:7]
    fields, created_at, value, currency, test, tag, device = row[7:]
    return ledger_entry(
        "",
        event_name=name,
        event_id=event_id,
        state=_STATES[_Status(status)],
        attempts=attempts,
        event_time=event_time,
        updated_at=changed_at,
        last_error=error,
        fields=fields,
        created_at=created_at,
        value=value,
        currency=currency,
        test=None if test is None else bool(test),
        tag=None if tag is None else bool(tag),
        device=device,
    )


def _pause(until: float, info_text: Any) -> Pause:
    try:
        info = json.loads(info_text) if isinstance(info_text, str) else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        info = {}  # a damaged row: the time still holds
    return Pause(
        until=until,
        reason=str(info.get("reason", "")),
        kind=str(info.get("kind", "rate_limit")),
        token_id=str(info.get("token_id", "")),
    )


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version (0: a new file).

    :raises OutboxError: for a file written by a newer dedupkit, which this one cannot read.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise NewerOutbox(
            f"the dedupkit outbox at {path!r} was written by a newer dedupkit (schema version "
            f"{version}; this one knows {SCHEMA_VERSION}): upgrade dedupkit, or point "
            "DEDUPKIT_QUEUE_URL at another file"
        )
    return int(version)


def _bind(conn: sqlite3.Connection, path: str, account: str) -> None:
    """Record ``account`` as the file's owner if it has none; refuse another owner's file."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
    if row is None:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('account', ?)", (account,))
        row = conn.execute("SELECT value FROM meta WHERE key = 'account'").fetchone()
    if row[0] != account:
        raise foreign_outbox(f"the SQLite file {path!r}", str(row[0]), account)


def _insert(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    """Store one entry and count it; count a duplicate instead. ``True`` when it was stored."""
    if conn.execute(_PUT, params).rowcount > 0:
        conn.execute(_COUNT, (_TOTAL_PREFIX + "queued", 1))
        return True
    conn.execute(_COUNT, (_DUPLICATES, 1))
    return False


def _count_replayed(conn: sqlite3.Connection, cursor: sqlite3.Cursor) -> int:
    if cursor.rowcount > 0:
        conn.execute(_COUNT, (_TOTAL_PREFIX + "replayed", cursor.rowcount))
    return cursor.rowcount


def _store_tag(conn: sqlite3.Connection, name: str, event_id: str, fired: bool, at: float) -> None:
    conn.execute(_TAG, (name, event_id, int(fired), at))
    conn.execute(_TRIM_EVIDENCE, (EVIDENCE_KEPT,))


def _run_write(
    conn: sqlite3.Connection, write: Callable[[sqlite3.Connection], _T], whole: bool
) -> _T:
    """``write(conn)``, in one ``BEGIN IMMEDIATE`` transaction when ``whole``."""
    if not whole:
        return write(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = write(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


def _millis(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _recent_errors(conn: sqlite3.Connection) -> list[tuple[float, str]]:
    """Recent errors, oldest first."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'last_errors'").fetchone()
    return [(float(when), str(message)) for when, message in json.loads(row[0])] if row else []


def _now(now: float | None) -> float:
    return time.time() if now is None else now
