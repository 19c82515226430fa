"""The outbox in the shop's own PostgreSQL database, on SQLAlchemy Core and psycopg 3.

Every web host and sender shares the database the shop already runs: senders on any number
of hosts claim with ``SELECT … FOR UPDATE SKIP LOCKED``, so no two hold the same entry, and
:meth:`PostgresOutbox.put_in` writes an event in the shop's own transaction (the
transactional outbox): the conversion commits with the order, or not at all.

The tables are :data:`metadata`'s (see :mod:`.postgres_tables`), all named ``dedupkit_*``; an
app that manages its schema with Alembic adds :data:`metadata` to its ``target_metadata``
(they are otherwise created on first use). One database holds several shops: every row
carries its ``namespace`` (``dedupkit:<ad account id>`` by default) and no method reads or
changes another namespace's rows. A namespace belongs to the first ad account that uses it (a
process configured for another is refused), and every event carries the ad account that
stored it: a sender claims only its own account's events (and those stored by a tool without
one).

``Claimed.id`` is ``<row id>:<claim number>`` (as in SQLite): ``retry``/``dead`` only match
the current claim. :attr:`DeadLetter.id` is the bare row id.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigurationError, OutboxError
from ..redaction import REDACTED, redact
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
from .postgres_tables import SCHEMA_VERSION as SCHEMA_VERSION
from .postgres_tables import Status, meta_table
from .postgres_tables import metadata as metadata
from .postgres_transaction import Transaction, call_after_commit
from .postgres_transaction import connection_of as connection_of

#: How many recent delivery errors :meth:`PostgresOutbox.stats` reports.
LAST_ERRORS_KEPT = 10
#: After a failed connection, timed puts fail at once for this long instead of each waiting
#: for the connect timeout: a page never waits on a database that is down.
UNREACHABLE_BACKOFF = 1.0
#: Seconds to wait for a new connection: libpq's smallest (a refused one fails at once).
CONNECT_TIMEOUT = 2
#: The key of the advisory lock that serialises creating the tables.
_SCHEMA_LOCK = 0x64656475  # "dedu"

_STATES = {
    Status.PENDING: EventState.PENDING,
    Status.IN_FLIGHT: EventState.SENDING,
    Status.DELIVERED: EventState.DELIVERED,
    Status.DEAD: EventState.DEAD,
}
_PENDING, _IN_FLIGHT, _DELIVERED, _DEAD = (int(s) for s in Status)

_PUT = sa.text(f"""
INSERT INTO dedupkit_outbox (
    namespace, account, event_name, event_id, payload, event_time, status, due_at, created_at,
    changed_at, fields, value, currency
)
VALUES (
    :namespace, :account, :event_name, :event_id, :payload, :event_time, {_PENDING}, :now,
    :now, :now, :fields, :value, :currency
)
ON CONFLICT (namespace, event_name, event_id) DO NOTHING
""")
# SKIP LOCKED: a row another sender is claiming right now is left to it, not waited for.
_CLAIM = sa.text(f"""
WITH due AS (
    SELECT id FROM dedupkit_outbox
    WHERE namespace = :namespace AND status IN ({_PENDING}, {_IN_FLIGHT}) AND due_at <= :now
        AND (CAST(:account AS TEXT) IS NULL OR account IS NULL OR account = :account)
    ORDER BY due_at, id LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE dedupkit_outbox o SET status = {_IN_FLIGHT}, due_at = :lease_end, claims = o.claims + 1
FROM due WHERE o.id = due.id
RETURNING o.id, o.claims, o.payload, o.attempts, o.event_time
""")
# A late ack wins over a dead letter written by a sender that reclaimed the entry.
_ACK = sa.text(f"""
UPDATE dedupkit_outbox o SET status = {_DELIVERED}, changed_at = :now, last_error = NULL,
    attempts = o.attempts + 1, test = :test, device = coalesce(d.device, o.device)
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:devices AS TEXT[])) AS d(id, device)
WHERE o.namespace = :namespace AND o.id = d.id AND o.status != {_DELIVERED}
RETURNING coalesce(o.event_time, o.created_at)
""")
# Only the current claim: a stale sender's late call matches no row.
_RETRY = sa.text(f"""
UPDATE dedupkit_outbox o SET status = {_PENDING}, attempts = o.attempts + :sent,
    due_at = :not_before, last_error = :error, changed_at = :now
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:claims AS INTEGER[])) AS c(id, claim)
WHERE o.namespace = :namespace AND o.id = c.id AND o.claims = c.claim
    AND o.status = {_IN_FLIGHT}
""")
_DEAD_LETTER = sa.text(f"""
UPDATE dedupkit_outbox o SET status = {_DEAD}, last_error = :reason, changed_at = :now,
    attempts = o.attempts + :sent
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:claims AS INTEGER[])) AS c(id, claim)
WHERE o.namespace = :namespace AND o.id = c.id AND o.claims = c.claim
    AND o.status = {_IN_FLIGHT}
""")
_REPLAY_SET = f"""
UPDATE dedupkit_outbox SET status = {_PENDING}, attempts = 0, due_at = :now, last_error = NULL,
    changed_at = :now
WHERE namespace = :namespace AND status = {_DEAD}
"""
_REPLAY_ALL = sa.text(_REPLAY_SET)
_REPLAY_IDS = sa.text(_REPLAY_SET + " AND id = ANY(CAST(:ids AS BIGINT[]))")
_REPLAY_OFFLINE = sa.text(f"""
UPDATE dedupkit_outbox o SET status = {_PENDING}, attempts = 0, due_at = :now,
    last_error = NULL, changed_at = :now, payload = p.payload
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:payloads AS TEXT[])) AS p(id, payload)
WHERE o.namespace = :namespace AND o.id = p.id AND o.status = {_DEAD}
""")
_DEAD_PAYLOADS = sa.text(f"""
SELECT id, payload FROM dedupkit_outbox
WHERE namespace = :namespace AND status = {_DEAD}
    AND (CAST(:ids AS BIGINT[]) IS NULL OR id = ANY(CAST(:ids AS BIGINT[])))
FOR UPDATE
""")
_COUNTS = sa.text(
    "SELECT status, count(*) FROM dedupkit_outbox WHERE namespace = :namespace GROUP BY status"
)
_OLDEST = sa.text(f"""
SELECT min(created_at) FROM dedupkit_outbox
WHERE namespace = :namespace AND status IN ({_PENDING}, {_IN_FLIGHT})
""")
_DEAD_FILTER = f"""
WHERE namespace = :namespace AND status = {_DEAD}
    AND (CAST(:reason AS TEXT) IS NULL OR last_error = :reason)
    AND (CAST(:since AS DOUBLE PRECISION) IS NULL OR changed_at >= :since)
"""
_DEAD_LETTERS = sa.text(f"""
SELECT id, event_name, event_id, last_error, changed_at, attempts FROM dedupkit_outbox
{_DEAD_FILTER} ORDER BY changed_at DESC, id DESC LIMIT :limit
""")
_COUNT_DEAD = sa.text(f"SELECT count(*) FROM dedupkit_outbox {_DEAD_FILTER}")
_ENTRY_COLUMNS = """
o.event_name, o.event_id, o.status, o.attempts, o.event_time, o.changed_at, o.last_error,
CASE WHEN o.fields IS NULL THEN o.payload END, o.fields, o.created_at, o.value, o.currency,
o.test, e.tag, o.device
FROM dedupkit_outbox o LEFT JOIN dedupkit_evidence e
    ON e.namespace = o.namespace AND e.event_name = o.event_name AND e.event_id = o.event_id
"""
_RECENT = sa.text(f"""
SELECT {_ENTRY_COLUMNS} WHERE o.namespace = :namespace
ORDER BY o.changed_at DESC, o.id DESC LIMIT :limit
""")
_SINCE = sa.text(f"""
SELECT {_ENTRY_COLUMNS} WHERE o.namespace = :namespace AND o.created_at >= :since
ORDER BY o.created_at DESC, o.id DESC LIMIT :limit
""")
# Fired once stays fired.
_TAG = sa.text("""
INSERT INTO dedupkit_evidence (namespace, event_name, event_id, tag, at)
VALUES (:namespace, :event_name, :event_id, :tag, :at)
ON CONFLICT (namespace, event_name, event_id)
DO UPDATE SET tag = dedupkit_evidence.tag OR excluded.tag, at = excluded.at
""")
# Keeps the ``:kept`` newest rows of the namespace (by id); the limit is read at each call.
_TRIM = """
DELETE FROM {table} WHERE namespace = :namespace AND id <= (
    SELECT id FROM {table} WHERE namespace = :namespace ORDER BY id DESC OFFSET :kept LIMIT 1
)
"""
_TRIM_EVIDENCE = sa.text(_TRIM.format(table="dedupkit_evidence"))
_TRIM_SKIPS = sa.text(_TRIM.format(table="dedupkit_skips"))
_PRUNE_EVIDENCE = sa.text(
    "DELETE FROM dedupkit_evidence WHERE namespace = :namespace AND at < :cutoff"
)
_PRUNE = sa.text(f"""
DELETE FROM dedupkit_outbox
WHERE namespace = :namespace AND status = {_DELIVERED} AND changed_at < :cutoff
""")
_SKIP = sa.text("""
INSERT INTO dedupkit_skips (namespace, at, reason, event_name, event_id)
VALUES (:namespace, :at, :reason, :event_name, :event_id)
""")
_RECENT_SKIPS = sa.text("""
SELECT at, reason, event_name, event_id FROM dedupkit_skips WHERE namespace = :namespace
ORDER BY id DESC LIMIT :limit
""")
_COUNT = sa.text("""
INSERT INTO dedupkit_counters (namespace, name, value) VALUES (:namespace, :name, :value)
ON CONFLICT (namespace, name) DO UPDATE SET value = dedupkit_counters.value + excluded.value
""")
_COUNTERS = sa.text("SELECT name, value FROM dedupkit_counters WHERE namespace = :namespace")
# The namespace's row; the first process with an ad account binds it, and learns whose it is.
_BIND = sa.text("""
INSERT INTO dedupkit_namespaces (namespace, account) VALUES (:namespace, :account)
ON CONFLICT (namespace) DO UPDATE
    SET account = coalesce(dedupkit_namespaces.account, excluded.account)
RETURNING account
""")
# Raised only: a lower ``until`` (a shorter Retry-After seen elsewhere) changes nothing.
_RAISE_PAUSE = sa.text("""
INSERT INTO dedupkit_namespaces (namespace, pause_until, pause_reason, pause_kind, pause_token_id)
VALUES (:namespace, :until, :reason, :kind, :token_id)
ON CONFLICT (namespace) DO UPDATE SET pause_until = excluded.pause_until,
    pause_reason = excluded.pause_reason, pause_kind = excluded.pause_kind,
    pause_token_id = excluded.pause_token_id
WHERE dedupkit_namespaces.pause_until IS NULL
    OR dedupkit_namespaces.pause_until < excluded.pause_until
""")
_PAUSE = sa.text("""
SELECT pause_until, pause_reason, pause_kind, pause_token_id FROM dedupkit_namespaces
WHERE namespace = :namespace
""")
_CLEAR_PAUSE = sa.text("""
UPDATE dedupkit_namespaces SET pause_until = NULL, pause_reason = NULL, pause_kind = NULL,
    pause_token_id = NULL
WHERE namespace = :namespace AND (CAST(:kind AS TEXT) IS NULL OR pause_kind = :kind)
""")
_ERRORS_FOR_UPDATE = sa.text(
    "SELECT last_errors FROM dedupkit_namespaces WHERE namespace = :namespace FOR UPDATE"
)
_ERRORS = sa.text("SELECT last_errors FROM dedupkit_namespaces WHERE namespace = :namespace")
_SET_ERRORS = sa.text(
    "UPDATE dedupkit_namespaces SET last_errors = :errors WHERE namespace = :namespace"
)
_DATABASE_ID = sa.text("SELECT value FROM dedupkit_meta WHERE key = 'database_id'")
_NEW_DATABASE_ID = sa.text("""
INSERT INTO dedupkit_meta (key, value) VALUES ('database_id', :id) ON CONFLICT (key) DO NOTHING
""")
_TIMEOUTS = sa.text(
    "SELECT set_config('lock_timeout', :ms, true), set_config('statement_timeout', :ms, true)"
)

_SKIP_PREFIX = "skipped:"
#: The outcome totals (:data:`~dedupkit.outbox.base.TOTALS`) are counters ``count:<outcome>``.
_TOTAL_PREFIX = "count:"
_DUPLICATES = _TOTAL_PREFIX + DUPLICATE
_LAG_PREFIX = "lag:"

# What to check, by the words of the server's or the driver's message.
_HINTS = (
    ("password authentication failed", "check the user and password in DEDUPKIT_QUEUE_URL"),
    ("does not exist", "check the database name in DEDUPKIT_QUEUE_URL and that it exists"),
    ("connection refused", "check PostgreSQL runs and listens on that host and port"),
    ("timeout", "the database answered too slowly, or a lock was held too long"),
    ("permission denied", "grant the user CREATE and write access to the dedupkit_* tables"),
    ("no space left", "free some disk space on the database server"),
    ("read-only", "this server is a read-only replica: point DEDUPKIT_QUEUE_URL at the primary"),
)


class PostgresOutbox:
    """The :class:`~dedupkit.outbox.Outbox` in a PostgreSQL database.

    Delivered entries are kept, so a repeated ``(event_name, event_id)`` stays a duplicate;
    :meth:`prune` removes old ones. The tables are created on first use when missing.

    :param url: ``postgresql+psycopg://user:password@host:port/database`` (SQLAlchemy's).
    :param namespace: the partition every row of this outbox belongs to (``dedupkit:<ad
        account id>`` from the extension): shops sharing one database never see each
        other's events.
    :param account: the ad account of this process: the namespace is bound to the first
        account that uses it (another is a :class:`ConfigurationError`), every event stored
        carries it, and claims take only its events (and those stored without an account).
        ``None`` (a tool, a test) binds nothing and claims every event of the namespace.
    :param engine: a ready SQLAlchemy engine to use instead of creating one from ``url``
        (not disposed by :meth:`close`).
    :raises ConfigurationError: ``url`` is not a PostgreSQL URL SQLAlchemy can use.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "dedupkit",
        account: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.namespace = namespace
        self.account = account
        self._owns_engine = engine is None
        self._engine = engine if engine is not None else _create_engine(url)
        #: Where the outbox lives, without the password, for messages and reprs.
        self.location = self._engine.url.render_as_string(hide_password=True)
        self._ready = False
        self._ready_lock = threading.Lock()
        #: What this database's ``dedupkit_meta`` calls it (set with the tables), and the
        #: callers' engines found to be on it.
        self._database_id = ""
        self._same_database: weakref.WeakSet[Engine] = weakref.WeakSet()
        #: Until when timed puts fail at once, and the error that made them.
        self._unreachable = (0.0, "")
        if self._owns_engine:
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _forget_parent_connections(ref))
            # An app dropped without close() (tests, reloads) closes its connections too.
            weakref.finalize(self, self._engine.dispose)

    def __repr__(self) -> str:
        return (
            f"<PostgresOutbox {self.location} namespace={self.namespace!r} "
            f"account={self.account!r}>"
        )

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the outbox uses."""
        return self._engine

    # -- storing -----------------------------------------------------------------------

    def put(
        self,
        payload: Mapping[str, Any],
        *,
        now: float | None = None,
        timeout: float | None = None,
        tag: bool | None = None,
    ) -> bool:
        """Store an event (and a beacon's tag flag) in one transaction; ``False`` if
        ``(event_name, event_id)`` was already stored.

        :param timeout: the longest a statement or a lock may take (``statement_timeout``
            and ``lock_timeout``), then :class:`OutboxError`; while the database was
            unreachable a moment ago a timed put fails at once.
        """
        params = self._put_params(payload, now)
        with self._errors("store an event in"), self._begin(timeout=timeout) as conn:
            return self._insert(conn, params, tag)

    def put_in(
        self,
        transaction: Transaction,
        payload: Mapping[str, Any],
        *,
        now: float | None = None,
        tag: bool | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> bool:
        """Store an event in the caller's transaction: it commits with the caller's work and
        vanishes if that rolls back. ``False`` if ``(event_name, event_id)`` was stored.

        :param after_commit: called once the session's transaction has committed (never
            after a rollback), e.g. to wake the sender; with a bare ``Connection``, which
            tells nobody when it commits, it is not called: senders find the event at their
            next poll.

        :param transaction: a SQLAlchemy :class:`~sqlalchemy.orm.Session` (Flask-SQLAlchemy's
            ``db.session`` as is) or :class:`~sqlalchemy.engine.Connection` on this outbox's
            database; a transaction is begun on it if none is.
        :raises ConfigurationError: ``transaction`` is connected to another database.
        :raises OutboxError: the insert failed (the caller's transaction is then failed too).
        """
        params = self._put_params(payload, now)
        self._ensure_schema()
        with self._errors("store an event in"):
            conn = connection_of(transaction)
            self._check_same_database(conn)
            queued = self._insert(conn, params, tag)
        if queued and after_commit is not None:
            call_after_commit(transaction, after_commit)
        return queued

    def _put_params(self, payload: Mapping[str, Any], now: float | None) -> dict[str, Any]:
        name, event_id, text = stored_entry(payload)
        fields, value, currency = summary_of(payload)
        return {
            "namespace": self.namespace,
            "account": self.account,
            "event_name": name,
            "event_id": event_id,
            "payload": text,
            "event_time": event_time_of(payload),
            "now": _now(now),
            "fields": fields,
            "value": value,
            "currency": currency,
        }

    def _insert(self, conn: Connection, params: Mapping[str, Any], tag: bool | None) -> bool:
        """Store one entry and count it, or count a duplicate; with its tag evidence."""
        queued = conn.execute(_PUT, params).rowcount > 0
        self._count(conn, {_TOTAL_PREFIX + ("queued" if queued else DUPLICATE): 1})
        if tag is not None:
            self._store_tag(conn, params["event_name"], params["event_id"], tag, params["now"])
        return queued

    def _check_same_database(self, conn: Connection) -> None:
        """Refuse a session on another database: its events would wait where no sender looks.

        Host names prove nothing (``db`` and ``10.0.0.5`` may be one server, two servers may
        both have a ``shop`` database), so the session's database is asked for the id this
        outbox stored in its ``dedupkit_meta``: once per engine of the caller, on a
        connection of its own (a failed query must not break the caller's transaction).
        """
        engine = conn.engine
        if engine in self._same_database:
            return
        theirs = engine.url.render_as_string(hide_password=True)
        found: Any = None
        if engine.url.get_backend_name() == "postgresql":
            try:
                with engine.connect() as probe:
                    found = probe.execute(_DATABASE_ID).scalar()
            except sa_exc.SQLAlchemyError:
                found = None  # no dedupkit tables there, or no rights: not the outbox's
        if found is None or found != self._database_id:
            raise ConfigurationError(
                "kit.track(session=…) writes the event in that session's transaction, so the "
                f"session must use the outbox's database: it is connected to {theirs}, "
                f"DEDUPKIT_QUEUE_URL names {self.location}, and they are not the same database"
            )
        self._same_database.add(engine)

    # -- delivering --------------------------------------------------------------------

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = _now(now)
        params = {
            "namespace": self.namespace,
            "account": self.account,
            "now": now,
            "lease_end": now + lease,
            "limit": limit,
        }
        with self._errors("claim events from"), self._begin() as conn:
            found = conn.execute(_CLAIM, params).all()
        # RETURNING gives no order: keep the order of insertion.
        rows = sorted(found, key=lambda row: int(row[0]))
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
        rows = sorted({row for row, _ in parse_row_ids(ids)})
        if not rows:
            return
        now = time.time()
        labels = device_labels_by_row(devices)
        params = {
            "namespace": self.namespace,
            "now": now,
            "test": test,
            "ids": rows,
            "devices": [labels.get(row) for row in rows],
        }
        with self._errors("acknowledge events in"), self._begin() as conn:
            lags = Counter[int]()
            total = 0.0
            for (since,) in conn.execute(_ACK, params):
                lag = max(0.0, now - float(since))
                lags[lag_bucket(lag)] += 1
                total += lag
            if lags:
                counts = {f"{_LAG_PREFIX}{index}": n for index, n in lags.items()}
                delivered = {_TOTAL_PREFIX + "delivered": sum(lags.values())}
                self._count(conn, {**counts, "lag_sum": total, **delivered})

    def retry(
        self, ids: Sequence[str], *, not_before: float, error: str, sent: bool = True
    ) -> None:
        """Give entries back, due at ``not_before``; only ids of their current claim count.
        Unsent ones (``sent=False``) count no attempt and no delivery error."""
        claims = [(row, claim) for row, claim in parse_row_ids(ids) if claim is not None]
        if not claims:
            return
        now = time.time()
        params = {
            "namespace": self.namespace,
            "not_before": not_before,
            "error": error,
            "sent": int(sent),
            "now": now,
            "ids": [row for row, _ in claims],
            "claims": [claim for _, claim in claims],
        }
        with self._errors("reschedule events in"), self._begin() as conn:
            if conn.execute(_RETRY, params).rowcount > 0 and sent:
                self._log_error(conn, now, error)

    def dead(
        self, ids: Sequence[str], *, reason: str, now: float | None = None, sent: bool = True
    ) -> None:
        """Dead-letter entries with ``reason``; only ids of their current claim count."""
        claims = [(row, claim) for row, claim in parse_row_ids(ids) if claim is not None]
        if not claims:
            return
        now = _now(now)
        params = {
            "namespace": self.namespace,
            "reason": reason,
            "now": now,
            "sent": int(sent),
            "ids": [row for row, _ in claims],
            "claims": [claim for _, claim in claims],
        }
        with self._errors("dead-letter events in"), self._begin() as conn:
            killed = conn.execute(_DEAD_LETTER, params).rowcount
            if killed > 0:
                self._count(conn, {_TOTAL_PREFIX + "dead": killed})
                self._log_error(conn, now, reason)

    # -- the shared pause --------------------------------------------------------------

    def pause_until(self) -> float:
        """The shared "no request to Pinterest before" time (0 when none)."""
        with self._errors("read the pause from"), self._begin() as conn:
            row = conn.execute(_PAUSE, {"namespace": self.namespace}).first()
        return float(row[0]) if row is not None and row[0] is not None else 0.0

    def set_pause_until(
        self, when: float, *, reason: str = "", kind: str = "rate_limit", token_id: str = ""
    ) -> None:
        """Raise the shared pause to ``when`` with why; a lower ``when`` changes nothing."""
        params = {
            "namespace": self.namespace,
            "until": when,
            "reason": reason[:MAX_MESSAGE_LENGTH],
            "kind": kind,
            "token_id": token_id,
        }
        with self._errors("store the pause in"), self._begin() as conn:
            conn.execute(_RAISE_PAUSE, params)

    def pause(self, *, now: float | None = None) -> Pause | None:
        """The pause in force with its reason, ``None`` when none."""
        with self._errors("read the pause from"), self._begin() as conn:
            row = conn.execute(_PAUSE, {"namespace": self.namespace}).first()
        if row is None or row[0] is None or float(row[0]) <= _now(now):
            return None
        until, reason, kind, token_id = row
        return Pause(float(until), reason or "", kind or "rate_limit", token_id or "")

    def clear_pause(self, *, kind: str | None = None) -> None:
        """Lift the pause, whatever it was, or only one of ``kind`` (in one statement: a
        rate limit raised meanwhile by another sender stays)."""
        with self._errors("clear the pause in"), self._begin() as conn:
            conn.execute(_CLEAR_PAUSE, {"namespace": self.namespace, "kind": kind})

    # -- skips and tag evidence --------------------------------------------------------

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
        """Count ``count`` skipped events (and store the tag evidence) in one transaction;
        with a name or id, remember the event among the last few."""
        when = _now(now)
        with self._errors("count a skipped event in"), self._begin(timeout=timeout) as conn:
            self._count(conn, {_SKIP_PREFIX + reason: count})
            if event_name is not None or event_id is not None:
                conn.execute(
                    _SKIP,
                    {
                        "namespace": self.namespace,
                        "at": when,
                        "reason": reason,
                        "event_name": event_name,
                        "event_id": event_id,
                    },
                )
                conn.execute(_TRIM_SKIPS, {"namespace": self.namespace, "kept": SKIPS_KEPT})
            if tag is not None and event_name is not None and event_id is not None:
                self._store_tag(conn, event_name, event_id, tag, when)

    def recent_skips(self, limit: int = 100) -> list[Skip]:
        """The skipped events recorded with a name or id, newest first."""
        if limit <= 0:
            return []
        params = {"namespace": self.namespace, "limit": min(limit, SKIPS_KEPT)}
        with self._errors("read the skipped events of"), self._begin() as conn:
            rows = conn.execute(_RECENT_SKIPS, params).all()
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
        with self._errors("store tag evidence in"), self._begin(timeout=timeout) as conn:
            self._store_tag(conn, event_name, event_id, fired, _now(now))

    def _store_tag(
        self, conn: Connection, event_name: str, event_id: str, fired: bool, at: float
    ) -> None:
        params = {
            "namespace": self.namespace,
            "event_name": event_name,
            "event_id": event_id,
            "tag": fired,
            "at": at,
        }
        conn.execute(_TAG, params)
        conn.execute(_TRIM_EVIDENCE, {"namespace": self.namespace, "kept": EVIDENCE_KEPT})

    # -- reading -----------------------------------------------------------------------

    def stats(self, *, now: float | None = None) -> OutboxStats:
        now = _now(now)
        namespace = {"namespace": self.namespace}
        # One snapshot: the counts, the oldest entry and the counters agree.
        with self._errors("read the statistics of"), self._begin("REPEATABLE READ") as conn:
            counts = dict.fromkeys(Status, 0)
            for status, count in conn.execute(_COUNTS, namespace):
                counts[Status(status)] = int(count)
            oldest = conn.execute(_OLDEST, namespace).scalar()
            counters = {name: float(value) for name, value in conn.execute(_COUNTERS, namespace)}
            errors = _errors_of(conn.execute(_ERRORS, namespace).scalar())
        return OutboxStats(
            pending=counts[Status.PENDING],
            in_flight=counts[Status.IN_FLIGHT],
            delivered=counts[Status.DELIVERED],
            dead=counts[Status.DEAD],
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
            skipped={
                name[len(_SKIP_PREFIX) :]: int(value)
                for name, value in counters.items()
                if name.startswith(_SKIP_PREFIX)
            },
            last_errors=[(when, message) for when, message in reversed(errors)],
            duplicates=int(counters.get(_DUPLICATES, 0)),
            lag_counts=[
                int(counters.get(f"{_LAG_PREFIX}{i}", 0)) for i in range(len(LAG_BUCKETS) + 1)
            ],
            lag_sum=counters.get("lag_sum", 0.0),
            totals={name: int(counters.get(_TOTAL_PREFIX + name, 0)) for name in TOTALS},
        )

    def dead_letters(
        self, limit: int = 100, *, reason: str | None = None, since: float | None = None
    ) -> list[DeadLetter]:
        """Dead letters, most recent first; ``reason`` matches exactly, ``since`` is inclusive."""
        if limit <= 0:
            return []
        params = {"namespace": self.namespace, "limit": limit, "reason": reason, "since": since}
        with self._errors("read the dead letters of"), self._begin() as conn:
            rows = conn.execute(_DEAD_LETTERS, params).all()
        return [
            DeadLetter(str(id_), name, event_id, reason or "", died_at, attempts)
            for id_, name, event_id, reason, died_at, attempts in rows
        ]

    def count_dead(self, *, reason: str | None = None, since: float | None = None) -> int:
        """How many dead letters match (the same filters as :meth:`dead_letters`)."""
        params = {"namespace": self.namespace, "reason": reason, "since": since}
        with self._errors("count the dead letters of"), self._begin() as conn:
            return int(conn.execute(_COUNT_DEAD, params).scalar() or 0)

    def recent(self, limit: int = 100) -> list[LedgerEntry]:
        """The ``limit`` most recently changed entries (delivered ones included), newest first."""
        if limit <= 0:
            return []
        with self._errors("read the recent entries of"), self._begin() as conn:
            rows = conn.execute(_RECENT, {"namespace": self.namespace, "limit": limit}).all()
        return [_entry(row) for row in rows]

    def entries_since(self, since: float, *, limit: int = 20_000) -> list[LedgerEntry]:
        """Entries stored at or after ``since``, newest first, read through an index."""
        if limit <= 0:
            return []
        params = {"namespace": self.namespace, "since": since, "limit": limit}
        with self._errors("read the entries of"), self._begin() as conn:
            rows = conn.execute(_SINCE, params).all()
        return [_entry(row) for row in rows]

    # -- operator actions --------------------------------------------------------------

    def replay_dead(
        self,
        ids: Sequence[str] | None = None,
        *,
        now: float | None = None,
        as_offline: bool = False,
    ) -> int:
        """Make dead letters pending again (all when ``ids`` is None); see the protocol."""
        now = _now(now)
        rows = None if ids is None else sorted({row for row, _ in parse_row_ids(ids)})
        if rows == []:
            return 0
        params: dict[str, Any] = {"namespace": self.namespace, "now": now, "ids": rows}
        with self._errors("replay the dead letters of"), self._begin() as conn:
            if not as_offline:
                statement = _REPLAY_ALL if rows is None else _REPLAY_IDS
                replayed = conn.execute(statement, params).rowcount
            elif found := conn.execute(_DEAD_PAYLOADS, params).all():
                params["ids"] = [row for row, _ in found]
                params["payloads"] = [as_offline_text(data) for _, data in found]
                replayed = conn.execute(_REPLAY_OFFLINE, params).rowcount
            else:
                replayed = 0
            if replayed:
                self._count(conn, {_TOTAL_PREFIX + "replayed": replayed})
            return replayed

    def prune(self, older_than: float, *, now: float | None = None) -> int:
        """Delete delivered entries acknowledged more than ``older_than`` seconds ago.

        Their ``(event_name, event_id)`` can then be enqueued again.

        :returns: how many entries were deleted.
        """
        if older_than < 0:
            raise ValueError(f"older_than must be positive, got {older_than}")
        now = _now(now)
        cutoff = now - older_than
        namespace = self.namespace
        with self._errors("prune"), self._begin() as conn:
            evidence_cutoff = min(cutoff, now - EVIDENCE_TTL)
            conn.execute(_PRUNE_EVIDENCE, {"namespace": namespace, "cutoff": evidence_cutoff})
            return conn.execute(_PRUNE, {"namespace": namespace, "cutoff": cutoff}).rowcount

    def close(self) -> None:
        """Close this process's pooled connections; the next call opens new ones."""
        if self._owns_engine:
            self._engine.dispose()

    # -- plumbing ----------------------------------------------------------------------

    @contextmanager
    def _begin(
        self, isolation: str | None = None, *, timeout: float | None = None
    ) -> Iterator[Connection]:
        """A pooled connection in a transaction, committed on success.

        :param timeout: the longest a statement or a lock of the transaction may take (for
            the request path); while the database was unreachable a moment ago, fail at once.
        """
        if timeout is not None:
            until, why = self._unreachable
            if time.monotonic() < until:
                raise OutboxError(f"{why}; not tried again for {UNREACHABLE_BACKOFF:g} s")
        self._ensure_schema()
        with self._engine.connect() as conn:
            if isolation is not None:
                conn = conn.execution_options(isolation_level=isolation)
            with conn.begin():
                if timeout is not None:
                    conn.execute(_TIMEOUTS, {"ms": f"{max(1, round(timeout * 1000))}ms"})
                yield conn

    def _ensure_schema(self) -> None:
        """Create the tables when missing (once per process), and refuse newer ones."""
        if self._ready:
            return
        with self._ready_lock, self._errors("create the tables of"):
            if self._ready:
                return
            with self._engine.connect() as conn, conn.begin():
                # Two processes starting at once must not both create the tables.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
                metadata.create_all(conn, checkfirst=True)
                stored = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                ).scalar()
                if stored is None:
                    conn.execute(
                        meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                    )
                elif int(stored) > SCHEMA_VERSION:
                    raise NewerOutbox(
                        f"the dedupkit outbox at {self.location} was written by a newer dedupkit "
                        f"(schema version {stored}, this one knows {SCHEMA_VERSION}): upgrade "
                        "flask-dedupkit, or point DEDUPKIT_QUEUE_URL at another database"
                    )
                conn.execute(_NEW_DATABASE_ID, {"id": uuid.uuid4().hex})
                self._database_id = str(conn.execute(_DATABASE_ID).scalar())
                owner = conn.execute(
                    _BIND, {"namespace": self.namespace, "account": self.account}
                ).scalar()
                if self.account is not None and owner != self.account:
                    where = f"at {self.location} (namespace {self.namespace!r})"
                    raise foreign_outbox(where, str(owner), self.account)
            self._ready = True

    def _count(self, conn: Connection, counts: Mapping[str, float]) -> None:
        conn.execute(
            _COUNT,
            [{"namespace": self.namespace, "name": name, "value": n} for name, n in counts.items()],
        )

    def _log_error(self, conn: Connection, now: float, message: str) -> None:
        namespace = {"namespace": self.namespace}
        errors = _errors_of(conn.execute(_ERRORS_FOR_UPDATE, namespace).scalar())
        # One failed batch reschedules its events in several calls: one entry is enough.
        if errors and errors[-1][1] == message:
            errors.pop()
        errors = [*errors, (now, message)][-LAST_ERRORS_KEPT:]
        conn.execute(_SET_ERRORS, {**namespace, "errors": json.dumps(errors)})

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sa_exc.SQLAlchemyError as exc:
            original = getattr(exc, "orig", None) or exc
            # The driver's first line: SQLAlchemy's own text repeats the statement.
            text = str(original).strip().splitlines()[0] if str(original).strip() else ""
            password = str(self._engine.url.password or "")
            # Also a password too short for redact() to search for.
            text = redact(text.replace(password, REDACTED) if password else text, [password])
            hint = next(
                (h for words, h in _HINTS if words in text.lower()),
                "check DEDUPKIT_QUEUE_URL, that PostgreSQL runs, and the user's rights",
            )
            message = f"could not {action} the dedupkit outbox at {self.location}: {text} ({hint})"
            if _lost_connection(exc):
                self._unreachable = (time.monotonic() + UNREACHABLE_BACKOFF, message)
            raise OutboxError(message) from exc


def _create_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa_exc.ArgumentError as exc:
        raise ConfigurationError(
            "DEDUPKIT_QUEUE_URL is not a valid PostgreSQL URL: use "
            "postgresql+psycopg://user:password@host:5432/database"
        ) from exc
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigurationError("DEDUPKIT_QUEUE_URL is not a PostgreSQL URL")
    # psycopg 3 is the driver the extra installs: "postgresql://" would ask for psycopg2, and
    # "postgres://" (Heroku's spelling) for nothing SQLAlchemy knows.
    parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(
        parsed,
        # A page's put never queues behind other threads for long: more connections are
        # opened instead (and closed after use) while many threads use the outbox at once.
        pool_size=5,
        max_overflow=20,
        pool_timeout=5,
        # A connection the server closed (restart, idle timeout) is replaced, not failed on.
        pool_pre_ping=False,
        pool_recycle=3600,
        connect_args={"connect_timeout": CONNECT_TIMEOUT, "application_name": "dedupkit"},
    )


def _lost_connection(exc: sa_exc.SQLAlchemyError) -> bool:
    """Whether the database could not be reached (not a statement it refused): a connection
    that failed or was cut has no SQLSTATE, which the server gives every error it reports."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    original = getattr(exc, "orig", None)
    return isinstance(original, psycopg.OperationalError) and original.sqlstate is None


def _forget_parent_connections(ref: weakref.ref[PostgresOutbox]) -> None:
    """In a forked child: open new connections, without closing the parent's sockets."""
    outbox = ref()
    if outbox is not None:
        outbox._engine.dispose(close=False)
        outbox._ready_lock = threading.Lock()


def _entry(row: Sequence[Any]) -> LedgerEntry:
    (name, event_id, status, attempts, event_time, changed_at, error, payload) = row[:8]
    fields, created_at, value, currency, test, tag, device = row[8:]
    return ledger_entry(
        payload,
        event_name=name,
        event_id=event_id,
        state=_STATES[Status(status)],
        attempts=attempts,
        event_time=event_time,
        updated_at=changed_at,
        last_error=error,
        fields=fields,
        created_at=created_at,
        value=value,
        currency=currency,
        test=test,
        tag=tag,
        device=device,
    )


def _errors_of(text: str | None) -> list[tuple[float, str]]:
    """Recent errors, oldest first."""
    if not text:
        return []
    return [(float(when), str(message)) for when, message in json.loads(text)]


def _now(now: float | None) -> float:
    return time.time() if now is None else now
