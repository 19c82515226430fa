"""What only the Redis outbox does, against a real redis-server: processes, storage, namespaces,
timeouts and failures. The behaviour every outbox shares is in test_outbox_contract.py."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dedupkit.errors import ConfigurationError, OutboxError
from dedupkit.event.wire import encode_event
from dedupkit.outbox import open_outbox
from dedupkit.outbox import redis as redis_outbox
from dedupkit.outbox.redis import DELIVERED_TTL, RedisOutbox

from ..support.redis_server import RedisServer, free_port, running_redis_server

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
    assert claimed.raw == encode_event(event("o-1"))
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
        # The payloads go at once; the summaries for the ledger expire by themselves.
        entries = list(client.scan_iter(match="*entry:*"))
        assert len(entries) == 2
        assert all(client.hget(key, "payload") is None for key in entries)
        assert all(0 < client.ttl(key) <= DELIVERED_TTL for key in entries)
        ttls = [client.ttl(key) for key in client.scan_iter(match="*idem:*")]
    assert len(ttls) == 2
    assert all(6 * 86400 < ttl <= 7 * 86400 for ttl in ttls)


def test_retry_rejects_a_time_that_is_not_finite(outbox: RedisOutbox) -> None:
    with pytest.raises(ValueError, match="not_before"):
        outbox.retry(["1:1"], not_before=math.nan, error="x")


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
        lambda: box.set_pause_until(T0),
        lambda: box.record_skip("bot"),
        lambda: box.stats(),
        lambda: box.dead_letters(),
        lambda: box.replay_dead(),
        lambda: box.replay_dead(as_offline=True),
        lambda: box.put(event("o-2"), timeout=0.5),
        lambda: box.pause(),
        box.clear_pause,
        lambda: box.count_dead(),
        lambda: box.count_dead(reason="expired"),
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


def test_two_shops_on_one_database_each_claim_only_their_own_events(redis_url: str) -> None:
    shops = [open_outbox(redis_url, namespace=f"shop-{n}") for n in ("549764982399", "7777")]
    try:
        # Both shops number their orders from 1: the same (event_name, event_id).
        for n, shop in enumerate(shops):
            for order in range(3):
                assert shop.put(event(f"order-{order}") | {"custom_data": {"shop": n}}, now=T0)
        for n, shop in enumerate(shops):
            claimed = shop.claim(10, now=T0)
            assert ids_of(claimed) == ["order-0", "order-1", "order-2"]
            assert {c.payload["custom_data"]["shop"] for c in claimed} == {n}
            shop.ack([c.id for c in claimed])
            assert shop.stats(now=T0).delivered == 3
        shops[0].set_pause_until(time.time() + 60, reason="HTTP 429")
        assert shops[1].pause() is None
    finally:
        for shop in shops:
            shop.close()


@contextlib.contextmanager
def writes_paused(redis_url: str, seconds: float) -> Iterator[None]:
    """Redis holds every write for ``seconds`` (as under a long-running command), then not."""
    with redis.Redis.from_url(redis_url) as admin:
        admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")
        try:
            yield
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")


def test_a_put_with_a_timeout_gives_up_on_a_stalled_server(outbox: RedisOutbox) -> None:
    outbox.put(event("before"), timeout=0.05)
    with writes_paused(outbox_url(outbox), 5):
        started = time.monotonic()
        with pytest.raises(OutboxError, match="store an event") as info:
            outbox.put(event("during"), timeout=0.05)
        assert time.monotonic() - started < 0.5
        assert isinstance(info.value.__cause__, redis.TimeoutError)
    # Untimed calls keep the long timeout, and the timed client works again.
    assert outbox.put(event("after"), timeout=0.05) is True
    assert outbox.stats().pending >= 2


def outbox_url(outbox: RedisOutbox) -> str:
    return f"redis://{outbox.location}/0"


def test_the_namespace_records_its_schema_version_and_a_newer_one_is_refused(
    redis_url: str,
) -> None:
    namespace = f"schema-{os.getpid()}-{time.monotonic_ns()}"
    box = RedisOutbox(redis_url, namespace=namespace)
    box.put(event("e1"), now=T0)
    client = redis.Redis.from_url(redis_url)
    key = f"{{{namespace}}}:schema"
    assert int(client.get(key) or 0) == redis_outbox.SCHEMA_VERSION
    client.set(key, redis_outbox.SCHEMA_VERSION + 1)
    newer = RedisOutbox(redis_url, namespace=namespace)
    with pytest.raises(OutboxError, match=r"newer dedupkit.*upgrade dedupkit"):
        newer.stats()
    for opened in (box, newer):
        opened.close()
    client.close()
