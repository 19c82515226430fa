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

from dedupkit.errors import ConfigurationError, InvalidEvent, OutboxError
from dedupkit.outbox import Outbox, SQLiteOutbox, open_outbox

from .support.payloads import capi_event

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


def test_sqlite_outbox_satisfies_the_protocol(box: SQLiteOutbox) -> None:
    outbox: Outbox = box
    assert outbox.put(event("e1"))


def test_put_is_idempotent_on_event_name_and_event_id(box: SQLiteOutbox) -> None:
    assert box.put(event("e1"), now=T0) is True
    assert box.put(event("e1", custom_data={"value": "99"}), now=T0 + 1) is False
    # The same id under another event name is another event.
    assert box.put(event("e1", name="lead"), now=T0) is True
    assert box.stats(now=T0).pending == 2
    [first, second] = box.claim(10, now=T0)
    assert first.payload["custom_data"] == {"value": "10.00", "currency": "USD"}
    assert second.payload["event_name"] == "lead"


def test_put_refuses_an_entry_without_event_name_or_id(box: SQLiteOutbox) -> None:
    with pytest.raises(InvalidEvent, match="event_id"):
        box.put({"event_name": "checkout"})
    with pytest.raises(InvalidEvent, match="event_name"):
        box.put({"event_id": "x", "event_name": 3})


def test_file_directories_and_wal_are_set_up_on_first_use(box: SQLiteOutbox, db_path: Path) -> None:
    assert not db_path.parent.exists()
    box.put(event("e1"))
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_payload_comes_back_exactly_as_enqueued(box: SQLiteOutbox) -> None:
    payload = event("é-1", custom_data={"content_name": "Crème brûlée", "num_items": 2})
    box.put(payload, now=T0)
    [claimed] = box.claim(1, now=T0)
    assert claimed.payload == payload
    assert claimed.attempts == 0


def test_claim_takes_due_entries_in_insertion_order_up_to_limit(box: SQLiteOutbox) -> None:
    for i in range(5):
        box.put(event(f"e{i}"), now=T0 + i)
    first = box.claim(3, now=T0 + 10)
    assert [c.payload["event_id"] for c in first] == ["e0", "e1", "e2"]
    second = box.claim(3, now=T0 + 10)
    assert [c.payload["event_id"] for c in second] == ["e3", "e4"]
    assert box.claim(3, now=T0 + 10) == []


def test_claim_skips_entries_not_yet_due(box: SQLiteOutbox) -> None:
    box.put(event("future"), now=T0 + 100)
    assert box.claim(10, now=T0) == []
    assert len(box.claim(10, now=T0 + 100)) == 1


def test_a_claim_is_exclusive_until_its_lease_ends(box: SQLiteOutbox) -> None:
    box.put(event("e1"), now=T0)
    [claimed] = box.claim(10, now=T0, lease=30)
    assert box.claim(10, now=T0 + 29.9) == []
    stats = box.stats(now=T0 + 1)
    assert (stats.pending, stats.in_flight) == (0, 1)
    # The process that claimed it died: another sender takes it over.
    [again] = box.claim(10, now=T0 + 30, lease=30)
    assert again.id == claimed.id
    assert again.payload == claimed.payload


def test_ack_retry_and_dead(box: SQLiteOutbox) -> None:
    for i in range(3):
        box.put(event(f"e{i}"), now=T0)
    ok, later, bad = box.claim(10, now=T0)
    box.ack([ok.id])
    box.retry([later.id], not_before=T0 + 60, error="HTTP 503: unavailable")
    box.dead([bad.id], reason="Invalid event_time", now=T0 + 1)

    stats = box.stats(now=T0 + 2)
    assert (stats.pending, stats.in_flight, stats.delivered, stats.dead) == (1, 0, 1, 1)
    assert box.claim(10, now=T0 + 59) == []
    [retried] = box.claim(10, now=T0 + 60)
    assert retried.payload["event_id"] == "e1"
    assert retried.attempts == 1

    [letter] = box.dead_letters()
    assert (letter.id, letter.event_name, letter.event_id) == (bad.id, "checkout", "e2")
    assert letter.reason == "Invalid event_time"
    assert letter.died_at == T0 + 1
    assert letter.attempts == 0


def test_retry_and_dead_leave_unclaimed_and_delivered_entries_alone(box: SQLiteOutbox) -> None:
    box.put(event("pending"), now=T0)
    box.put(event("done"), now=T0)
    _, done = box.claim(10, now=T0)
    box.ack([done.id])
    pending_id = str(int(done.id) - 1)
    box.retry([pending_id, done.id], not_before=T0 + 99, error="late")
    box.dead([pending_id, done.id], reason="late")
    stats = box.stats(now=T0)
    assert (stats.pending, stats.delivered, stats.dead) == (1, 1, 0)


def test_a_late_ack_wins_over_a_dead_letter(box: SQLiteOutbox) -> None:
    box.put(event("e1"), now=T0)
    [slow] = box.claim(1, now=T0, lease=5)
    [other] = box.claim(1, now=T0 + 10)
    box.dead([other.id], reason="expired", now=T0 + 10)
    # The first sender's request did reach Pinterest after all.
    box.ack([slow.id])
    assert box.stats().delivered == 1
    assert box.dead_letters() == []


def test_dead_letters_are_listed_newest_first_up_to_limit(box: SQLiteOutbox) -> None:
    for i in range(3):
        box.put(event(f"e{i}"), now=T0)
    for i, claimed in enumerate(box.claim(3, now=T0)):
        box.dead([claimed.id], reason=f"reason {i}", now=T0 + i)
    assert [d.event_id for d in box.dead_letters()] == ["e2", "e1", "e0"]
    assert [d.event_id for d in box.dead_letters(limit=1)] == ["e2"]


def test_replay_dead_makes_dead_letters_pending_again(box: SQLiteOutbox) -> None:
    for i in range(3):
        box.put(event(f"e{i}"), now=T0)
    claimed = box.claim(3, now=T0)
    box.retry([claimed[0].id], not_before=T0, error="HTTP 503")
    [claimed[0]] = box.claim(1, now=T0)
    box.dead([c.id for c in claimed], reason="expired", now=T0)

    assert box.replay_dead([claimed[0].id], now=T0 + 5) == 1
    assert [d.event_id for d in box.dead_letters()] == ["e2", "e1"]
    [replayed] = box.claim(10, now=T0 + 5)
    assert replayed.payload["event_id"] == "e0"
    assert replayed.attempts == 0

    assert box.replay_dead(now=T0 + 6) == 2
    assert box.dead_letters() == []
    assert {c.payload["event_id"] for c in box.claim(10, now=T0 + 6)} == {"e1", "e2"}
    assert box.replay_dead(now=T0 + 7) == 0


def test_stats_report_age_of_oldest_waiting_entry(box: SQLiteOutbox) -> None:
    assert box.stats(now=T0).oldest_pending_age is None
    box.put(event("old"), now=T0)
    box.put(event("new"), now=T0 + 50)
    assert box.stats(now=T0 + 60).oldest_pending_age == 60
    [old] = box.claim(1, now=T0 + 60)
    # In flight is still waiting for Pinterest.
    assert box.stats(now=T0 + 60).oldest_pending_age == 60
    box.ack([old.id])
    assert box.stats(now=T0 + 60).oldest_pending_age == 10


def test_stats_count_skipped_events_by_reason(box: SQLiteOutbox) -> None:
    box.record_skip("bot")
    box.record_skip("bot")
    box.record_skip("no_consent")
    assert box.stats().skipped == {"bot": 2, "no_consent": 1}


def test_stats_keep_the_last_errors_newest_first(box: SQLiteOutbox) -> None:
    for i in range(14):
        box.put(event(f"e{i}"), now=T0)
    claimed = box.claim(14, now=T0)
    # One failed request reschedules its events in several calls: one error is kept.
    box.retry([claimed[0].id], not_before=T0, error="HTTP 503")
    box.retry([claimed[1].id], not_before=T0, error="HTTP 503")
    for i, entry in enumerate(claimed[2:]):
        box.dead([entry.id], reason=f"refused {i}", now=T0 + i)
    errors = box.stats().last_errors
    assert [message for _, message in errors] == [f"refused {i}" for i in range(11, 1, -1)]
    assert errors[0][0] == T0 + 11


def test_pause_is_shared_by_every_outbox_on_the_file(db_path: Path) -> None:
    one, two = SQLiteOutbox(db_path), SQLiteOutbox(db_path)
    try:
        assert one.pause_until() == 0.0
        one.set_pause_until(T0 + 30)
        assert two.pause_until() == T0 + 30
        # A shorter Retry-After seen by another process never shortens the pause.
        two.set_pause_until(T0 + 10)
        assert one.pause_until() == T0 + 30
        two.set_pause_until(T0 + 45)
        assert one.pause_until() == T0 + 45
    finally:
        one.close()
        two.close()


def test_prune_deletes_old_delivered_entries_only(box: SQLiteOutbox) -> None:
    now = time.time()
    for name in ("old", "recent", "pending", "dead"):
        box.put(event(name), now=now - 172_800)
    old, recent, pending, dead = box.claim(4, now=now)
    box.ack([old.id])
    # Make "old" look acknowledged two days ago.
    box._conn().execute("UPDATE outbox SET changed_at = ? WHERE id = ?", (now - 172_800, old.id))
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


def test_claims_are_atomic_across_threads(box: SQLiteOutbox) -> None:
    # Enough entries that draining them outlasts SQLite's first busy-handler back-offs
    # (1 + 2 + 5 + 10 ms): with a few hundred, one thread can take them all before the
    # others wake up.
    for i in range(3000):
        box.put(event(f"e{i}"))
    start = threading.Barrier(4)
    claims: list[list[str]] = [[] for _ in range(4)]

    def drain(mine: list[str]) -> None:
        start.wait()
        while batch := box.claim(7, lease=60):
            mine.extend(c.id for c in batch)

    threads = [threading.Thread(target=drain, args=(mine,)) for mine in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [id_ for mine in claims for id_ in mine]
    assert len(everything) == len(set(everything)) == 3000
    assert sum(1 for mine in claims if mine) > 1


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
        def __init__(self, url: str) -> None:
            self.url = url

    monkeypatch.setattr(dedupkit.outbox.redis, "RedisOutbox", FakeRedisOutbox)
    outbox = open_outbox(url)
    assert isinstance(outbox, FakeRedisOutbox)
    assert outbox.url == url


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgres://user:secret@db/shop", "unknown scheme 'postgres'"),
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
    # What dedupkit.client.encode_batch would make of the dict: non-ASCII kept, compact.
    assert claimed.raw == json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    assert claimed.event_time == T0
    assert claimed.payload == payload
    # Decoded once, on first read.
    assert claimed.payload is claimed.payload


def test_event_time_is_none_when_the_payload_has_no_number(box: SQLiteOutbox) -> None:
    box.put({**event("e1"), "event_time": "soon"}, now=T0)
    box.put({**event("e2"), "event_time": True}, now=T0)
    assert [c.event_time for c in box.claim(10, now=T0)] == [None, None]


def test_a_file_from_before_the_event_time_column_is_upgraded(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    old = {"event_name": "checkout", "event_id": "old", "event_time": int(T0)}
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            """CREATE TABLE outbox (
                id INTEGER PRIMARY KEY, event_name TEXT NOT NULL, event_id TEXT NOT NULL,
                payload TEXT NOT NULL, status INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, due_at REAL NOT NULL,
                created_at REAL NOT NULL, changed_at REAL NOT NULL, last_error TEXT,
                UNIQUE (event_name, event_id))"""
        )
        conn.execute(
            "INSERT INTO outbox (event_name, event_id, payload, status, due_at, created_at,"
            " changed_at) VALUES ('checkout', 'old', ?, 0, ?, ?, ?)",
            (json.dumps(old), T0, T0, T0),
        )
    conn.close()
    box = SQLiteOutbox(db_path)
    try:
        assert box.put(event("new"), now=T0)
        first, second = box.claim(10, now=T0)
        assert (first.event_time, first.payload) == (None, old)
        assert (second.event_time, second.payload["event_id"]) == (T0, "new")
    finally:
        box.close()
