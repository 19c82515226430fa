"""What only the SQLite outbox does: the file, its schema version, fork, locks and URLs.

The behaviour every outbox shares is in test_outbox_contract.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dedupkit.errors import ConfigurationError, OutboxError
from dedupkit.event.wire import encode_event
from dedupkit.outbox import SQLiteOutbox, open_outbox
from dedupkit.outbox import sqlite as sqlite_outbox

from ..support.payloads import capi_event

T0 = 1_750_000_000.0


def event(event_id: str, name: str = "checkout", **extra: Any) -> dict[str, Any]:
    return capi_event(event_id, name=name, event_time=T0, **extra)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "queue" / "outbox.sqlite3"


@pytest.fixture
def box(db_path: Path) -> Iterator[SQLiteOutbox]:
    outbox = SQLiteOutbox(db_path)
    yield outbox
    outbox.close()


def test_file_directories_and_wal_are_set_up_on_first_use(box: SQLiteOutbox, db_path: Path) -> None:
    assert not db_path.parent.exists()
    box.put(event("e1"))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_prune_deletes_old_delivered_entries_only(box: SQLiteOutbox) -> None:
    now = time.time()
    for name in ("old", "recent", "pending", "dead"):
        box.put(event(name), now=now - 172_800)
    old, recent, pending, dead = box.claim(4, now=now)
    box.ack([old.id])
    # Make "old" look acknowledged two days ago.
    rowid = int(old.id.partition(":")[0])
    box._conn().execute("UPDATE outbox SET changed_at = ? WHERE id = ?", (now - 172_800, rowid))
    box.ack([recent.id])
    box.retry([pending.id], not_before=now, error="HTTP 503")
    box.dead([dead.id], reason="refused", now=now - 172_800)

    assert box.prune(86_400, now=now) == 1
    stats = box.stats()
    assert (stats.delivered, stats.pending, stats.dead) == (1, 1, 1)
    # A recent id stays a duplicate; the pruned one is forgotten.
    assert box.put(event("recent")) is False
    assert box.put(event("old")) is True
    with pytest.raises(ValueError, match="older_than"):
        box.prune(-1)


def test_threads_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    # SQLite answers "locked" at once to a WAL switch racing another connection.
    failures: list[BaseException] = []
    for trial in range(20):
        box = SQLiteOutbox(tmp_path / f"outbox-{trial}.sqlite3")
        start = threading.Barrier(4)

        def first_use(box: SQLiteOutbox = box, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                box.stats()
            except OutboxError as exc:
                failures.append(exc)

        threads = [threading.Thread(target=first_use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        box.close()
    assert failures == []


def _claim_in_child(path: str, out: str, start: Any) -> None:
    outbox = SQLiteOutbox(path)
    start.wait()
    ids: list[str] = []
    while batch := outbox.claim(5, lease=60):
        ids.extend(c.id for c in batch)
    Path(out).write_text(json.dumps(ids))


def _fork_context() -> Any:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs os.fork")
    return multiprocessing.get_context("fork")


def _forking(fn: Callable[[], Any]) -> Any:
    # Python 3.12+ warns when forking a process with threads; these children only touch SQLite.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn()


def test_claims_are_atomic_across_processes(box: SQLiteOutbox, tmp_path: Path) -> None:
    for i in range(400):
        box.put(event(f"e{i}"))
    ctx = _fork_context()
    start = ctx.Barrier(3)
    outs = [tmp_path / f"claims-{n}.json" for n in range(3)]
    procs = [ctx.Process(target=_claim_in_child, args=(box.path, str(out), start)) for out in outs]
    for proc in procs:
        _forking(proc.start)
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    everything = [id_ for out in outs for id_ in json.loads(out.read_text())]
    assert len(everything) == len(set(everything)) == 400


def _use_inherited_outbox(box: SQLiteOutbox, parent_conn_id: int, out: str) -> None:
    box.put(event("from-child"))
    claimed = [c.payload["event_id"] for c in box.claim(10, lease=60)]
    # The parent's connection object still exists here: a new one cannot share its id.
    Path(out).write_text(json.dumps([claimed, id(box._conn()) != parent_conn_id]))


def test_a_forked_process_opens_its_own_connection(box: SQLiteOutbox, tmp_path: Path) -> None:
    box.put(event("from-parent"))
    parent_conn = box._conn()
    out = tmp_path / "child.json"
    proc = _fork_context().Process(
        target=_use_inherited_outbox, args=(box, id(parent_conn), str(out))
    )
    _forking(proc.start)
    proc.join(30)
    assert proc.exitcode == 0
    assert json.loads(out.read_text()) == [["from-parent", "from-child"], True]
    # The parent's connection still works.
    assert box._conn() is parent_conn
    assert box.stats().in_flight == 2


def test_close_then_use_again_reopens(box: SQLiteOutbox) -> None:
    box.put(event("e1"))
    box.close()
    assert box.put(event("e2")) is True
    assert box.stats().pending == 2


def _expect_outbox_error(action: Callable[[], object], path: Path | str, hint: str) -> str:
    with pytest.raises(OutboxError) as info:
        action()
    message = str(info.value)
    assert str(path) in message
    assert hint in message
    assert isinstance(info.value.__cause__, (sqlite3.Error, OSError))
    return message


def test_a_directory_as_path_is_a_clear_error(tmp_path: Path) -> None:
    box = SQLiteOutbox(tmp_path)
    _expect_outbox_error(lambda: box.put(event("e1")), tmp_path, "not a directory")


def test_a_file_where_a_directory_should_be_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "outbox.sqlite3"
    _expect_outbox_error(lambda: SQLiteOutbox(path).stats(), path, "check")


def test_a_full_disk_is_a_clear_error(box: SQLiteOutbox, db_path: Path) -> None:
    box.put(event("e0"))
    conn = box._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    # Simulates a full disk: SQLite reports SQLITE_FULL as it would for ENOSPC.
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = "x" * 50_000
    _expect_outbox_error(
        lambda: [box.put(event(f"e{i}", padding=big)) for i in range(1, 10)],
        db_path,
        "free some disk space",
    )
    # Reading still works, and nothing half-written was left behind.
    assert box.stats().pending == 1


def test_deleting_the_file_in_use_is_a_clear_error(box: SQLiteOutbox, db_path: Path) -> None:
    box.put(event("e1"))
    for name in ("", "-wal", "-shm"):
        Path(f"{db_path}{name}").unlink(missing_ok=True)
    with pytest.raises(OutboxError, match="deleted or replaced while in use") as info:
        box.put(event("e2"))
    assert str(db_path) in str(info.value)


def _put_as_nobody(path: str, conn: Any) -> None:
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    try:
        SQLiteOutbox(path).put(event("e1"))
    except OutboxError as exc:
        conn.send(str(exc))
    else:
        conn.send("no error")


@pytest.mark.parametrize("existing_file", [False, True], ids=["new-file", "read-only-file"])
def test_an_unwritable_directory_is_a_clear_error(existing_file: bool) -> None:
    # Root writes anywhere: the attempt runs in a child that drops to "nobody".
    directory = Path(tempfile.mkdtemp(prefix="dedupkit-ro-"))
    path = directory / "outbox.sqlite3"
    try:
        if existing_file:
            owner = SQLiteOutbox(path)
            owner.put(event("e0"))
            owner.close()
            path.chmod(0o444)
        directory.chmod(0o555)
        ctx = _fork_context()
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_put_as_nobody, args=(str(path), theirs))
        _forking(proc.start)
        assert ours.poll(30)
        message = ours.recv()
        proc.join(30)
    finally:
        directory.chmod(0o755)
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()
    assert str(path) in message
    assert "writable" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///queue/outbox.db", "queue/outbox.db"),
        ("sqlite:////var/lib/shop/outbox.db", "/var/lib/shop/outbox.db"),
    ],
)
def test_open_outbox_understands_sqlalchemy_sqlite_urls(url: str, expected: str) -> None:
    outbox = open_outbox(url)
    assert isinstance(outbox, SQLiteOutbox)
    assert outbox.path == expected


def test_open_outbox_creates_a_relative_path_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    outbox = open_outbox("sqlite:///data/outbox.db")
    assert outbox.put(event("e1"))
    outbox.close()
    assert (tmp_path / "data" / "outbox.db").is_file()


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "rediss://:pw@cache.example:6380/1"])
def test_open_outbox_hands_redis_urls_to_redis_outbox(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dedupkit.outbox.redis

    class FakeRedisOutbox:
        def __init__(
            self, url: str, namespace: str = "default", account: str | None = None
        ) -> None:
            self.url = url
            self.namespace = namespace

    monkeypatch.setattr(dedupkit.outbox.redis, "RedisOutbox", FakeRedisOutbox)
    outbox = open_outbox(url)
    assert isinstance(outbox, FakeRedisOutbox)
    assert (outbox.url, outbox.namespace) == (url, "default")
    shop = open_outbox(url, namespace="shop-549764982399")
    assert isinstance(shop, FakeRedisOutbox)
    assert shop.namespace == "shop-549764982399"


def test_a_sqlite_file_ignores_the_namespace(tmp_path: Path) -> None:
    outbox = open_outbox(f"sqlite:///{tmp_path}/outbox.db", namespace="shop")
    assert isinstance(outbox, SQLiteOutbox)
    assert outbox.path == f"{tmp_path}/outbox.db"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://user:secret@db/shop", "unknown scheme 'mysql'"),
        ("outbox.sqlite3", "no scheme"),
        ("sqlite://", "sqlite:///relative/path"),
        ("sqlite://host/outbox.db", "no host"),
        ("sqlite:///outbox.db?mode=ro", "no query"),
    ],
)
def test_open_outbox_refuses_other_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        open_outbox(url)
    assert "secret" not in str(info.value)


def test_claim_gives_the_stored_json_text_and_event_time(box: SQLiteOutbox, db_path: Path) -> None:
    payload = event("e1", custom_data={"content_name": "Crème brûlée ✓ 寿司", "num_items": 2})
    box.put(payload, now=T0)
    [claimed] = box.claim(1, now=T0)
    with sqlite3.connect(db_path) as conn:
        (stored,) = conn.execute("SELECT payload FROM outbox").fetchone()
    assert claimed.raw == stored
    assert claimed.raw == encode_event(payload)
    # Decoded once, on first read.
    assert claimed.payload is claimed.payload
    # <rowid>:<claim number>, the claim number stored beside the entry.
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT id, claims FROM outbox").fetchone()
    assert claimed.id == f"{row[0]}:{row[1]}" == f"{row[0]}:1"


def test_the_file_records_its_schema_version_and_a_newer_one_is_refused(db_path: Path) -> None:
    box = SQLiteOutbox(db_path)
    box.put(event("e1"), now=T0)
    box.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_outbox.SCHEMA_VERSION
        conn.execute(f"PRAGMA user_version = {sqlite_outbox.SCHEMA_VERSION + 1}")
    conn.close()
    newer = SQLiteOutbox(db_path)
    with pytest.raises(OutboxError, match=r"newer dedupkit.*upgrade dedupkit"):
        newer.stats()
    newer.close()


def test_a_put_with_a_timeout_gives_up_on_a_locked_file_at_once(
    box: SQLiteOutbox, db_path: Path
) -> None:
    box.put(event("before"))
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as a slow writer of another process would
    try:
        started = time.monotonic()
        with pytest.raises(OutboxError, match="locked"):
            box.put(event("during"), timeout=0.05)
        assert time.monotonic() - started < 0.5  # busy_timeout is 5 s
        # Only that call was short: the connection waits busy_timeout again afterwards.
        (waits,) = box._conn().execute("PRAGMA busy_timeout").fetchone()
        assert waits == 5000
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert box.put(event("after"), timeout=0.05) is True
    assert box.stats().pending == 2


def test_a_new_connection_opens_while_another_process_writes(db_path: Path) -> None:
    first = SQLiteOutbox(db_path)
    first.put(event("e1"))
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # Opening a connection on an up-to-date file needs no write lock.
        second = SQLiteOutbox(db_path, busy_timeout=0.05)
        assert second.stats().pending == 1
        second.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        first.close()


def test_a_claim_and_an_ack_larger_than_one_write_chunk_are_whole(tmp_path: Path) -> None:
    from dedupkit.outbox.sqlite import WRITE_CHUNK

    box = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    count = 2 * WRITE_CHUNK + 7
    for n in range(count):
        box.put(event(f"e-{n:04d}"), now=1000.0 + n)
    claimed = box.claim(count + 10, now=5000.0)
    assert [c.payload["event_id"] for c in claimed] == [f"e-{n:04d}" for n in range(count)]
    box.ack([c.id for c in claimed])
    stats = box.stats()
    assert (stats.delivered, stats.pending, stats.in_flight) == (count, 0, 0)


def test_a_timed_put_takes_a_lock_released_before_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = SQLiteOutbox(path)
    box.put(event("first"))
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        assert box.put(event("second"), timeout=2.0) is True
    finally:
        release.join()
        holder.close()
    assert box.stats().pending == 2
