"""The Redis outbox against a real redis-server: the whole Outbox protocol, across hosts."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dedupkit.errors import ConfigurationError, InvalidEvent, OutboxError
from dedupkit.outbox import redis as redis_outbox
from dedupkit.outbox.base import Outbox
from dedupkit.outbox.redis import LAST_ERRORS_KEPT, RedisOutbox

from .support.redis_server import RedisServer, free_port, running_redis_server

pytestmark = pytest.mark.redis

#: A fixed clock: the ``now=`` parameters make leases and retries testable without waiting.
T0 = 1_700_000_000.0
#: The checkout holding ``dedupkit`` (children import it from there).
SOURCE_ROOT = Path(redis_outbox.__file__).resolve().parents[2]


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def outbox(redis_url: str) -> Iterator[RedisOutbox]:
    box = RedisOutbox(redis_url)
    yield box
    box.close()


@pytest.fixture
def other_host(redis_url: str) -> Iterator[RedisOutbox]:
    """A second outbox on the same queue, as another host would open it."""
    box = RedisOutbox(redis_url)
    yield box
    box.close()


def event(event_id: str, name: str = "checkout") -> dict[str, Any]:
    return {
        "event_name": name,
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "action_source": "web",
        "user_data": {"em": ["a" * 64], "client_user_agent": "Mozilla/5.0 ünïcode"},
        "custom_data": {"currency": "USD", "value": "10.50", "content_ids": ["SKU-1"]},
    }


def ids_of(claimed: list[Any]) -> list[str]:
    return [c.payload["event_id"] for c in claimed]


def test_is_an_outbox(outbox: RedisOutbox) -> None:
    box: Outbox = outbox
    assert box.pause_until() == 0


def test_put_is_idempotent_per_event_name_and_id(outbox: RedisOutbox) -> None:
    assert outbox.put(event("o-1"), now=T0) is True
    assert outbox.put(event("o-1"), now=T0 + 1) is False
    assert outbox.put(event("o-1", name="add_to_cart"), now=T0) is True
    assert outbox.stats(now=T0).pending == 2


def test_put_is_idempotent_across_hosts(outbox: RedisOutbox, other_host: RedisOutbox) -> None:
    assert outbox.put(event("o-1"), now=T0) is True
    assert other_host.put(event("o-1"), now=T0) is False
    assert ids_of(other_host.claim(10, now=T0)) == ["o-1"]
    assert outbox.claim(10, now=T0) == []


def test_put_rejects_a_payload_without_name_or_id(outbox: RedisOutbox) -> None:
    with pytest.raises(InvalidEvent, match="event_id"):
        outbox.put({"event_name": "checkout"})
    with pytest.raises(InvalidEvent, match="event_name"):
        outbox.put({"event_id": "x", "event_name": 3})


def test_claim_returns_the_payload_exactly_as_enqueued(outbox: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0)
    [claimed] = outbox.claim(10, now=T0)
    assert claimed.payload == event("o-1")
    assert list(claimed.payload) == list(event("o-1"))
    assert claimed.attempts == 0
    assert outbox.claim(10, now=T0 + 29) == []
    stats = outbox.stats(now=T0)
    assert (stats.pending, stats.in_flight) == (0, 1)


@pytest.mark.parametrize("decode_responses", [True, False])
def test_claim_gives_the_stored_json_text_and_event_time(
    redis_url: str, decode_responses: bool
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=decode_responses)
    box = RedisOutbox(redis_url, client=client)
    box.put(event("o-1"), now=T0)
    [claimed] = box.claim(1, now=T0)
    [key] = client.scan_iter(match="*entry:*")
    stored = client.hget(key, "payload")
    assert isinstance(stored, (bytes, str))
    assert claimed.raw == (stored.decode() if isinstance(stored, bytes) else stored)
    # What dedupkit.client.encode_batch would make of the dict: non-ASCII kept, compact.
    assert claimed.raw == json.dumps(event("o-1"), separators=(",", ":"), ensure_ascii=False)
    assert "ünïcode" in claimed.raw
    assert claimed.event_time == 1_700_000_000
    assert claimed.payload == event("o-1")
    box.close()
    client.close()


def test_an_entry_stored_without_event_time_is_claimed(outbox: RedisOutbox, redis_url: str) -> None:
    """Entries put by an older dedupkit have no event_time field: the payload has it."""
    outbox.put(event("o-1"), now=T0)
    with redis.Redis.from_url(redis_url) as client:
        [key] = client.scan_iter(match="*entry:*")
        assert client.hdel(key, "event_time") == 1
    [claimed] = outbox.claim(1, now=T0)
    assert claimed.event_time is None
    assert claimed.payload == event("o-1")


def test_event_time_is_none_when_the_payload_has_no_number(outbox: RedisOutbox) -> None:
    outbox.put({**event("o-1"), "event_time": "soon"}, now=T0)
    outbox.put({**event("o-2"), "event_time": True}, now=T0)
    outbox.put({**event("o-3"), "event_time": 1_700_000_000.25}, now=T0)
    assert [c.event_time for c in outbox.claim(10, now=T0)] == [None, None, 1_700_000_000.25]


def test_claim_takes_the_oldest_first_up_to_the_limit(outbox: RedisOutbox) -> None:
    for n in range(5):
        outbox.put(event(f"o-{n}"), now=T0 + n)
    assert ids_of(outbox.claim(2, now=T0 + 10)) == ["o-0", "o-1"]
    with pytest.raises(ValueError, match="limit"):
        outbox.claim(0, now=T0 + 10)
    assert ids_of(outbox.claim(10, now=T0 + 10)) == ["o-2", "o-3", "o-4"]


def test_claim_ignores_entries_enqueued_after_now(outbox: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0 + 5)
    assert outbox.claim(10, now=T0) == []
    assert ids_of(outbox.claim(10, now=T0 + 5)) == ["o-1"]


def test_threads_on_two_hosts_never_claim_the_same_entry(
    outbox: RedisOutbox, other_host: RedisOutbox
) -> None:
    expected = {f"o-{n}" for n in range(300)}
    for event_id in expected:
        outbox.put(event(event_id), now=T0)
    workers = 6
    start = threading.Barrier(workers)
    results: list[list[str]] = [[] for _ in range(workers)]
    failures: list[BaseException] = []

    def work(n: int) -> None:
        box = (outbox, other_host)[n % 2]
        try:
            start.wait(timeout=10)
            # Bounded, so that a broken outbox handing out entries forever fails quickly.
            while len(results[n]) <= len(expected) and (batch := box.claim(5, now=T0)):
                results[n] += ids_of(batch)
        except BaseException as exc:  # reported below, from the test thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)
    assert not failures
    claimed = [event_id for result in results for event_id in result]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) == expected


def spawn(code: str, url: str) -> subprocess.Popen[str]:
    """A separate Python process running ``code`` with an outbox on ``url``."""
    path = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    preamble = "import json, sys\nfrom dedupkit.outbox.redis import RedisOutbox\n"
    preamble += "outbox = RedisOutbox(sys.argv[1])\n"
    return subprocess.Popen(
        [sys.executable, "-c", preamble + code, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )


def read_line(process: subprocess.Popen[str], timeout: float = 15.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the child process did not answer in time"
    return process.stdout.readline()


CLAIM_ALL = """
sys.stdin.readline()
claimed = []
while batch := outbox.claim(7):
    claimed += [c.payload["event_id"] for c in batch]
    outbox.ack([c.id for c in batch])
print(json.dumps(claimed), flush=True)
"""


def test_processes_never_claim_the_same_entry(outbox: RedisOutbox, redis_url: str) -> None:
    expected = {f"o-{n}" for n in range(200)}
    for event_id in expected:
        outbox.put(event(event_id))
    with contextlib.ExitStack() as stack:
        children = [stack.enter_context(spawn(CLAIM_ALL, redis_url)) for _ in range(2)]
        for child in children:
            stack.callback(child.kill)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        claimed = [set(json.loads(read_line(child))) for child in children]
    assert claimed[0] | claimed[1] == expected
    assert not claimed[0] & claimed[1]
    assert sum(map(len, claimed)) == len(expected)
    assert outbox.stats().delivered == len(expected)


CLAIM_AND_HANG = """
claimed = outbox.claim(100, lease=30.0)
print(json.dumps([c.payload["event_id"] for c in claimed]), flush=True)
sys.stdin.read()
"""


def test_entries_of_a_killed_process_are_claimed_again_after_the_lease(
    outbox: RedisOutbox, redis_url: str
) -> None:
    expected = {f"o-{n}" for n in range(5)}
    for event_id in expected:
        outbox.put(event(event_id))
    with spawn(CLAIM_AND_HANG, redis_url) as child:
        try:
            claimed = set(json.loads(read_line(child)))
        finally:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert claimed == expected
    assert outbox.claim(10) == []
    again = outbox.claim(10, now=time.time() + 30.5)
    assert set(ids_of(again)) == expected
    # As in the SQLite outbox, only retry() counts attempts.
    assert {c.attempts for c in again} == {0}


def test_an_expired_lease_is_claimed_by_another_host(
    outbox: RedisOutbox, other_host: RedisOutbox
) -> None:
    outbox.put(event("o-1"), now=T0)
    [first] = outbox.claim(1, now=T0, lease=30)
    assert other_host.claim(10, now=T0 + 29.9) == []
    reclaimed = other_host.claim(10, now=T0 + 30)
    assert ids_of(reclaimed) == ["o-1"]
    assert reclaimed[0].id != first.id
    assert reclaimed[0].attempts == 0
    assert outbox.claim(10, now=T0 + 59.9) == []


def test_expired_leases_are_reclaimed_before_new_entries(outbox: RedisOutbox) -> None:
    outbox.put(event("old"), now=T0)
    outbox.claim(1, now=T0, lease=10)
    outbox.put(event("new"), now=T0 + 1)
    assert ids_of(outbox.claim(1, now=T0 + 20)) == ["old"]
    assert ids_of(outbox.claim(1, now=T0 + 20)) == ["new"]


def test_ack_delivers_and_frees_the_storage(outbox: RedisOutbox, redis_url: str) -> None:
    outbox.put(event("o-1"), now=T0)
    outbox.put(event("o-2"), now=T0)
    claimed = outbox.claim(10, now=T0)
    outbox.ack([c.id for c in claimed])
    outbox.ack([c.id for c in claimed])  # twice is harmless
    stats = outbox.stats(now=T0)
    assert (stats.pending, stats.in_flight, stats.delivered) == (0, 0, 2)
    assert outbox.claim(10, now=T0 + 3600) == []
    assert outbox.put(event("o-1"), now=T0) is False
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(match="*entry:*")) == []
        ttls = [client.ttl(key) for key in client.scan_iter(match="*idem:*")]
    assert len(ttls) == 2
    assert all(6 * 86400 < ttl <= 7 * 86400 for ttl in ttls)


def test_ack_ignores_unknown_and_malformed_ids(outbox: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0)
    outbox.ack(["999:1", "nonsense", "", "1:x"])
    assert outbox.stats(now=T0).pending == 1


def test_an_ack_from_an_earlier_claim_still_counts(
    outbox: RedisOutbox, other_host: RedisOutbox
) -> None:
    outbox.put(event("o-1"), now=T0)
    [stalled] = outbox.claim(1, now=T0, lease=30)
    [current] = other_host.claim(1, now=T0 + 31)
    outbox.ack([stalled.id])
    other_host.ack([current.id])
    stats = outbox.stats(now=T0)
    assert (stats.pending, stats.in_flight, stats.delivered) == (0, 0, 1)


def test_a_late_ack_wins_over_a_dead_letter(outbox: RedisOutbox, other_host: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0)
    [stalled] = outbox.claim(1, now=T0, lease=30)
    [current] = other_host.claim(1, now=T0 + 31)
    other_host.dead([current.id], reason="expired", now=T0 + 31)
    outbox.ack([stalled.id])
    stats = outbox.stats(now=T0 + 32)
    assert (stats.delivered, stats.dead) == (1, 0)
    assert outbox.dead_letters() == []


def test_a_stalled_claimer_cannot_undo_the_new_claim(
    outbox: RedisOutbox, other_host: RedisOutbox
) -> None:
    outbox.put(event("o-1"), now=T0)
    [stalled] = outbox.claim(1, now=T0, lease=30)
    [current] = other_host.claim(1, now=T0 + 31)
    outbox.retry([stalled.id], not_before=T0, error="late")
    outbox.dead([stalled.id], reason="late", now=T0 + 32)
    stats = outbox.stats(now=T0 + 32)
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 1, 0)
    other_host.retry([current.id], not_before=T0 + 40, error="503")
    assert ids_of(outbox.claim(1, now=T0 + 40)) == ["o-1"]


def test_retry_hides_the_entry_until_not_before(outbox: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0)
    [claimed] = outbox.claim(10, now=T0)
    outbox.retry([claimed.id], not_before=T0 + 60, error="503 Service Unavailable")
    stats = outbox.stats(now=T0 + 1)
    assert (stats.pending, stats.in_flight) == (1, 0)
    assert outbox.claim(10, now=T0 + 59.9) == []
    [again] = outbox.claim(10, now=T0 + 60)
    assert again.payload == claimed.payload
    assert again.attempts == 1
    outbox.retry([again.id], not_before=T0 + 120, error="timeout")
    outbox.retry([again.id], not_before=T0, error="twice")  # no longer claimed: ignored
    [third] = outbox.claim(10, now=T0 + 120)
    assert third.attempts == 2
    assert [m for _, m in outbox.stats().last_errors] == ["timeout", "503 Service Unavailable"]


def test_one_error_repeated_by_several_calls_is_listed_once(outbox: RedisOutbox) -> None:
    for n in range(3):
        outbox.put(event(f"o-{n}"), now=T0)
    claimed = outbox.claim(10, now=T0)
    outbox.retry([claimed[0].id], not_before=T0, error="500")
    outbox.retry([claimed[1].id], not_before=T0, error="503")
    outbox.retry([claimed[2].id], not_before=T0, error="503")
    assert [m for _, m in outbox.stats().last_errors] == ["503", "500"]


def test_retry_rejects_a_time_that_is_not_finite(outbox: RedisOutbox) -> None:
    with pytest.raises(ValueError, match="not_before"):
        outbox.retry(["1:1"], not_before=math.nan, error="x")


def test_dead_letters_keep_the_reason_and_can_be_replayed(outbox: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0)
    outbox.put(event("o-2", name="add_to_cart"), now=T0)
    first, second = outbox.claim(10, now=T0)
    outbox.retry([first.id], not_before=T0, error="timeout")
    [first] = outbox.claim(10, now=T0)
    outbox.dead([first.id], reason="422: invalid currency", now=T0 + 5)
    outbox.dead([second.id], reason="expired", now=T0 + 6)

    letters = outbox.dead_letters()
    assert [(d.event_name, d.event_id, d.reason, d.died_at, d.attempts) for d in letters] == [
        ("add_to_cart", "o-2", "expired", T0 + 6, 0),
        ("checkout", "o-1", "422: invalid currency", T0 + 5, 1),
    ]
    assert [d.event_id for d in outbox.dead_letters(limit=1)] == ["o-2"]
    stats = outbox.stats(now=T0 + 10)
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, 2)
    assert stats.last_errors[0][1] == "expired"
    assert outbox.claim(10, now=T0 + 3600) == []
    assert outbox.put(event("o-1"), now=T0 + 10) is False

    assert outbox.replay_dead([letters[1].id, "404"], now=T0 + 10) == 1
    assert outbox.replay_dead([], now=T0 + 10) == 0
    assert [d.event_id for d in outbox.dead_letters()] == ["o-2"]
    assert outbox.replay_dead(now=T0 + 11) == 1
    assert outbox.replay_dead(now=T0 + 11) == 0
    assert outbox.dead_letters() == []
    replayed = outbox.claim(10, now=T0 + 11)
    assert ids_of(replayed) == ["o-1", "o-2"]
    assert [c.attempts for c in replayed] == [0, 0]


def test_pause_only_rises_and_is_shared(outbox: RedisOutbox, other_host: RedisOutbox) -> None:
    assert outbox.pause_until() == 0
    outbox.set_pause_until(T0 + 100.25)
    assert other_host.pause_until() == T0 + 100.25
    other_host.set_pause_until(T0 + 50)
    assert outbox.pause_until() == T0 + 100.25
    other_host.set_pause_until(T0 + 150)
    assert outbox.pause_until() == T0 + 150


def test_skips_are_counted_by_reason_across_hosts(
    outbox: RedisOutbox, other_host: RedisOutbox
) -> None:
    outbox.record_skip("bot")
    other_host.record_skip("bot")
    other_host.record_skip("no_consent")
    assert outbox.stats().skipped == {"bot": 2, "no_consent": 1}


def test_stats_report_counts_and_the_oldest_pending_age(outbox: RedisOutbox) -> None:
    empty = outbox.stats(now=T0)
    assert (empty.pending, empty.in_flight, empty.delivered, empty.dead) == (0, 0, 0, 0)
    assert empty.oldest_pending_age is None
    assert (dict(empty.skipped), list(empty.last_errors)) == ({}, [])

    for n in range(3):
        outbox.put(event(f"o-{n}"), now=T0 + 10 * n)
    assert outbox.stats(now=T0 + 30).oldest_pending_age == 30
    [first] = outbox.claim(1, now=T0 + 30)
    # As in the SQLite outbox, in-flight entries count: they are not delivered yet.
    stats = outbox.stats(now=T0 + 30)
    assert (stats.pending, stats.in_flight, stats.oldest_pending_age) == (2, 1, 30)
    outbox.retry([first.id], not_before=T0 + 90, error="503")
    assert outbox.stats(now=T0 + 30).oldest_pending_age == 30
    outbox.ack([first.id])
    assert outbox.stats(now=T0 + 30).oldest_pending_age == 20
    [second, third] = outbox.claim(10, now=T0 + 90)
    outbox.dead([second.id], reason="422", now=T0 + 90)
    assert outbox.stats(now=T0 + 90).oldest_pending_age == 70
    outbox.ack([third.id])
    stats = outbox.stats(now=T0 + 90)
    assert (stats.pending, stats.in_flight, stats.delivered, stats.dead) == (0, 0, 2, 1)
    assert stats.oldest_pending_age is None


def test_last_errors_are_newest_first_and_capped(outbox: RedisOutbox) -> None:
    outbox.put(event("o-1"), now=T0)
    for n in range(LAST_ERRORS_KEPT + 5):
        [claimed] = outbox.claim(1, now=T0 + n)
        outbox.retry([claimed.id], not_before=T0 + n + 1, error=f"error {n}")
    errors = outbox.stats().last_errors
    assert len(errors) == LAST_ERRORS_KEPT
    assert errors[0][1] == f"error {LAST_ERRORS_KEPT + 4}"
    assert [when for when, _ in errors] == sorted((when for when, _ in errors), reverse=True)


def test_namespaces_are_separate_queues(outbox: RedisOutbox, redis_url: str) -> None:
    other_shop = RedisOutbox(redis_url, namespace="other-shop")
    outbox.put(event("o-1"), now=T0)
    outbox.set_pause_until(T0)
    assert other_shop.put(event("o-1"), now=T0) is True
    assert other_shop.pause_until() == 0
    assert ids_of(other_shop.claim(10, now=T0)) == ["o-1"]
    assert ids_of(outbox.claim(10, now=T0)) == ["o-1"]


@pytest.mark.parametrize("decode_responses", [True, False])
def test_a_client_can_be_passed_in(redis_url: str, decode_responses: bool) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=decode_responses)
    box = RedisOutbox(redis_url, client=client)
    box.put(event("o-1"), now=T0)
    [claimed] = box.claim(1, now=T0)
    box.dead([claimed.id], reason="422", now=T0)
    assert [d.event_id for d in box.dead_letters()] == ["o-1"]
    box.record_skip("bot")
    box.retry(["1"], not_before=T0, error="x")
    stats = box.stats(now=T0)
    assert (stats.dead, dict(stats.skipped)) == (1, {"bot": 1})
    box.close()
    assert client.ping()  # not ours to close
    client.close()


def test_a_forked_child_does_not_share_the_parent_connection(outbox: RedisOutbox) -> None:
    outbox.put(event("parent"), now=T0)
    parent_id = outbox._redis().client_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ok = outbox.put(event("child"), now=T0) and len(outbox.claim(10, now=T0)) == 2
            os.write(write_end, json.dumps([ok, outbox._redis().client_id()]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    ok, child_id = json.loads(report)
    assert ok
    assert child_id != parent_id
    assert outbox._redis().client_id() == parent_id
    assert outbox.stats(now=T0).in_flight == 2


def calls(box: RedisOutbox) -> list[Callable[[], object]]:
    return [
        lambda: box.put(event("o-1")),
        lambda: box.claim(1),
        lambda: box.ack(["1:1"]),
        lambda: box.retry(["1:1"], not_before=T0, error="x"),
        lambda: box.dead(["1:1"], reason="x"),
        box.pause_until,
        lambda: box.set_pause_until(T0),
        lambda: box.record_skip("bot"),
        lambda: box.stats(),
        lambda: box.dead_letters(),
        lambda: box.replay_dead(),
    ]


def test_an_unreachable_server_raises_outbox_error_without_the_password() -> None:
    port = free_port()
    box = RedisOutbox(f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    assert "hunter2" not in repr(box)
    for call in calls(box):
        with pytest.raises(OutboxError) as info:
            call()
        assert f"127.0.0.1:{port}" in str(info.value)
        assert "hunter2" not in str(info.value)
        assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_a_stopped_server_raises_outbox_error(tmp_path: Path) -> None:
    with running_redis_server(tmp_path) as server:
        box = RedisOutbox(server.url)
        assert box.put(event("o-1")) is True
        server.stop()
        with pytest.raises(OutboxError, match=f"127.0.0.1:{server.port}.*claim"):
            box.claim(1)


def test_a_password_protected_server(tmp_path: Path) -> None:
    with running_redis_server(tmp_path, password="s3cret-pass") as server:
        box = RedisOutbox(server.url)
        assert box.put(event("o-1")) is True
        wrong = RedisOutbox(f"redis://:wrong-pass@127.0.0.1:{server.port}/0")
        with pytest.raises(OutboxError) as info:
            wrong.claim(1)
        assert "wrong-pass" not in str(info.value)
        assert "s3cret" not in str(info.value)
        assert isinstance(info.value.__cause__, redis.AuthenticationError)


@pytest.mark.parametrize(
    "url", ["http://:pw-secret@example.com/0", "redis://:pw-secret@example.com:port/0"]
)
def test_a_url_that_is_not_redis_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisOutbox(url)
    assert "pw-secret" not in str(info.value)
