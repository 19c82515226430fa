"""The README's recovery story, end to end: a token revoked on Friday night, fixed on Monday.

- the 72-hour scenario on a simulated clock, on both outboxes: traffic all along, a restart
  with a new token, and every event still inside its window delivered within a minute while
  traffic continues;
- the livelock it used to end in, reproduced as reported, with a real sender thread and a
  real (fake) Pinterest on loopback;
- a pause that ends, or ``flask dedupkit resume``, taking effect in a running process.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dedupkit.delivery.client import CapiClient
from dedupkit.delivery.gate import CREDENTIALS
from dedupkit.delivery.retry import RetryPolicy
from dedupkit.delivery.sender import EXPIRED, Sender
from dedupkit.outbox import Outbox, SQLiteOutbox
from dedupkit.testing import FakePinterest

from ..support.polling import wait_until
from ..support.scripted_pinterest import ScriptedPinterest

T0 = 1_750_000_000.0
WINDOW = 3600.0
OLD_TOKEN = "pina_friday-token-1111111"
NEW_TOKEN = "pina_monday-token-2222222"
HOUR = 3600.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    outbox: Outbox
    if request.param == "sqlite":
        outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    else:
        from dedupkit.outbox.redis import RedisOutbox

        url = request.getfixturevalue("redis_server").url
        outbox = RedisOutbox(url, namespace=f"outage-{uuid.uuid4().hex}")
    yield outbox
    outbox.close()


def checkout(event_id: str, event_time: float) -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "event_id": event_id,
        "event_time": int(event_time),
        "action_source": "web",
        "user_data": {"client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0"},
    }


def test_a_72_hour_outage_then_a_new_token_delivers_everything_in_window_within_a_minute(
    box: Outbox,
) -> None:
    pinterest = ScriptedPinterest(now=T0, tokens={OLD_TOKEN})
    clock = lambda: pinterest.now  # noqa: E731
    policy = RetryPolicy(jitter=0.0)
    friday = Sender(box, pinterest.client(OLD_TOKEN), policy=policy, clock=clock)
    put: dict[str, float] = {}

    def traffic(count: int) -> None:
        for _ in range(count):
            event_id = f"ev-{len(put):06d}"
            box.put(checkout(event_id, pinterest.now), now=pinterest.now)
            put[event_id] = pinterest.now

    # Friday 18:00: the token is revoked. Traffic goes on, one checkout a minute, for three
    # days; the running process looks at the outbox every 30 s (its worker looks every
    # second while paused: more looks change nothing but the test's time).
    pinterest.tokens.clear()
    while pinterest.now < T0 + 72 * HOUR:
        traffic(1)
        for _ in range(2):
            friday.run_once()
            pinterest.now += 30.0
    pause = box.pause(now=pinterest.now)
    assert pause is not None and pause.kind == CREDENTIALS
    # One probe every 15 minutes (less the jitter), no more: the backoff held.
    assert pinterest.requests <= 72 * HOUR / (900 * 0.9) + 10
    assert not pinterest.processed

    # Monday: a new token, a restart; checkouts now come twice a second.
    pinterest.tokens = {NEW_TOKEN}
    monday = Sender(box, pinterest.client(NEW_TOKEN), policy=policy, clock=clock)
    restart = pinterest.now
    in_window = {e for e, t in put.items() if t + WINDOW > restart}
    assert 59 <= len(in_window) <= 60  # one an hour, a minute apart
    while pinterest.now < restart + 60:
        traffic(2)
        monday.run_once()
        while monday.more_waiting():
            monday.run_once()
        pinterest.now += 1.0
    processed = {r.event_id: r.at for r in pinterest.processed}
    # Every event inside its window at the restart was delivered within the minute...
    assert in_window <= processed.keys()
    assert max(processed[e] for e in in_window) <= restart + 60
    # ... and so was everything that came after it, within a second of its arrival.
    after = {e: t for e, t in put.items() if t >= restart}
    assert after.keys() <= processed.keys()
    assert all(processed[e] - t <= 1.0 for e, t in after.items())
    # What was past its window is a dead letter saying so, never sent.
    stats = box.stats(now=pinterest.now)
    expired = box.count_dead(reason=EXPIRED)
    assert expired == len(put) - len(in_window) - len(after)
    assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, expired)
    assert box.pause(now=pinterest.now) is None
    friday.client.close()  # type: ignore[attr-defined]
    monday.client.close()  # type: ignore[attr-defined]


# -- the livelock, with a real thread and a real (fake) Pinterest --------------------------


@pytest.fixture
def fake() -> Iterator[FakePinterest]:
    with FakePinterest(token=NEW_TOKEN) as server:
        yield server


@pytest.fixture
def sqlite_box(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    yield outbox
    outbox.close()


class Running:
    """``sender.run`` in a thread, as the background sender runs it."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=sender.run, args=(self.stop,), kwargs={"flush_interval": 1.0}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.sender.interrupt()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_expired_events_never_hold_up_fresh_ones_after_a_credentials_pause(
    sqlite_box: SQLiteOutbox, fake: FakePinterest
) -> None:
    """As reported: a working token, 200 expired and 10 fresh events waiting; 0 requests and
    0 of 10 delivered in 8 s."""
    now = time.time()
    for i in range(200):
        sqlite_box.put(checkout(f"old-{i}", now - 2 * WINDOW), now=now - 2 * WINDOW)
    for i in range(10):
        sqlite_box.put(checkout(f"new-{i}", now), now=now)
    # Left by the process that had Friday's token.
    sqlite_box.set_pause_until(
        now + 900, reason="HTTP 401", kind=CREDENTIALS, token_id="friday-token"
    )
    client = CapiClient(
        ad_account_id=fake.ad_account_id, token=NEW_TOKEN, base_url=fake.api_base_url
    )
    running = Running(Sender(sqlite_box, client))
    try:
        assert wait_until(lambda: sqlite_box.stats().delivered == 10, timeout=8)
    finally:
        running.close()
        client.close()
    assert sorted(e["event_id"] for e in fake.capi_events) == [f"new-{i}" for i in range(10)]
    # The probe, then one batch with the rest.
    assert [r.num_events for r in fake.requests] == [1, 9]
    assert sqlite_box.count_dead(reason=EXPIRED) == 200
    assert sqlite_box.pause() is None


def test_resume_takes_effect_in_a_running_process_at_once(
    sqlite_box: SQLiteOutbox, fake: FakePinterest
) -> None:
    now = time.time()
    sqlite_box.put(checkout("e-1", now), now=now)
    fake.token = "pina_not-yet-" + "3" * 12
    client = CapiClient(
        ad_account_id=fake.ad_account_id, token=NEW_TOKEN, base_url=fake.api_base_url
    )
    running = Running(Sender(sqlite_box, client))
    try:
        # The token is refused: the process pauses itself for a minute.
        assert wait_until(lambda: sqlite_box.pause() is not None, timeout=5)
        fake.token = NEW_TOKEN  # fixed in Ads Manager
        sqlite_box.put(checkout("e-2", now), now=now)
        # `flask dedupkit resume`, from another process: seen within a second or so.
        sqlite_box.clear_pause()
        assert wait_until(lambda: sqlite_box.stats().delivered == 2, timeout=5)
    finally:
        running.close()
        client.close()
    assert sqlite_box.dead_letters() == []


def test_a_pause_another_process_lifts_ends_the_wait_of_a_running_one(
    sqlite_box: SQLiteOutbox, fake: FakePinterest
) -> None:
    now = time.time()
    sqlite_box.put(checkout("e-1", now), now=now)
    # Another process was told to wait five minutes.
    sqlite_box.set_pause_until(now + 300, reason="HTTP 429", kind="rate_limit")
    client = CapiClient(
        ad_account_id=fake.ad_account_id, token=NEW_TOKEN, base_url=fake.api_base_url
    )
    running = Running(Sender(sqlite_box, client))
    try:
        assert wait_until(lambda: running.sender.held_for() > 200, timeout=5)
        sqlite_box.clear_pause()  # its next request succeeded, or `flask dedupkit resume`
        assert wait_until(lambda: sqlite_box.stats().delivered == 1, timeout=5)
    finally:
        running.close()
        client.close()
