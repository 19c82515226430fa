"""Delivery with real sender processes sharing one outbox (SQLite, Redis or PostgreSQL), some
killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dedupkit.outbox import Outbox, SQLiteOutbox, open_outbox
from dedupkit.testing import FakePinterest

from ..support.payloads import capi_event as event

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite3"


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def queue_url(request: pytest.FixtureRequest, db: Path) -> str:
    """One outbox the senders share: a SQLite file on this host, or Redis or PostgreSQL (a
    database of its own) for several."""
    if request.param == "sqlite":
        return f"sqlite:///{db}"
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_server").new_database())
    server = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return str(server.url)


@pytest.fixture
def box(queue_url: str) -> Iterator[Outbox]:
    outbox = open_outbox(queue_url)
    yield outbox
    outbox.close()


SenderFactory = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_sender(queue_url: str, fake: FakePinterest) -> Iterator[SenderFactory]:
    """Start ``tests/support/sender_process.py`` on the outbox; killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(*options: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.sender_process",
                queue_url,
                fake.api_base_url,
                *options,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, then how many events the process says Pinterest processed for it."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    return int(out.strip().removeprefix("sent "))


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_killed_senders_lose_no_event(
    box: Outbox, fake: FakePinterest, start_sender: SenderFactory
) -> None:
    ids = [f"order-{i}" for i in range(60)]
    originals = {event_id: event(event_id) for event_id in ids}
    for payload in originals.values():
        box.put(payload)
    # Pinterest processes each batch but answers late: every sender dies waiting for it.
    fake.delay_next(30, times=1000)
    for kills in range(1, 4):
        proc = start_sender("--batch-size", "15", "--lease", "1")
        assert fake.wait_for_requests(kills, timeout=10)
        kill(proc)
    assert box.stats().delivered == 0

    fake.clear_faults()
    survivor = start_sender("--batch-size", "15", "--lease", "1")
    assert fake.wait_for(lambda: {e["event_id"] for e in fake.capi_events} == set(ids), 20)
    assert fake.wait_for(lambda: box.stats().delivered == len(ids), 10)
    stop(survivor)

    received = fake.capi_events
    copies = Counter(e["event_id"] for e in received)
    # The three batches in flight when their senders died were sent again.
    assert sum(n - 1 for n in copies.values()) == 3 * 15
    # A copy sent again is the same event, with the same event_id.
    for copy in received:
        assert copy == originals[copy["event_id"]]
    stats = box.stats()
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, 0)


def test_two_senders_on_one_queue_deliver_each_event_once(
    box: Outbox, fake: FakePinterest, start_sender: SenderFactory
) -> None:
    # Slow answers keep one sender from draining the outbox before the other starts.
    fake.delay_next(0.05, times=1000)
    first = start_sender("--batch-size", "10")
    second = start_sender("--batch-size", "10")
    ids = [f"order-{i}" for i in range(200)]
    for event_id in ids:
        box.put(event(event_id))
    assert fake.wait_for(lambda: box.stats().delivered == len(ids), 20)
    sent = [stop(first), stop(second)]

    received = [e["event_id"] for e in fake.capi_events]
    assert sorted(received) == sorted(ids)
    assert sum(sent) == len(ids)
    assert all(sent), f"one sender did nothing: {sent}"


def test_a_process_exiting_sends_what_it_enqueued(db: Path, fake: FakePinterest) -> None:
    payload = event("at-exit")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.exit_flush",
            str(db),
            fake.api_base_url,
            json.dumps(payload),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    assert fake.capi_events == [payload]
    outbox = SQLiteOutbox(db)
    try:
        assert outbox.stats().delivered == 1
    finally:
        outbox.close()
