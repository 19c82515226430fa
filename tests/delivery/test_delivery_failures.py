"""The failures nobody planned for (issue 8): poison events, proxy pages, token rotation, an
unknown ad account, an absurd Retry-After, rate-limit pacing, echoed tokens, late events.

Real parts only: FakePinterest on loopback, a SQLite file and a real redis-server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from dedupkit import delivery_paused, delivery_resumed
from dedupkit.delivery.client import BatchResult, CapiClient, token_fingerprint
from dedupkit.delivery.gate import MAX_RETRY_AFTER
from dedupkit.delivery.retry import RetryPolicy
from dedupkit.delivery.sender import CREDENTIALS, EXPIRED, RATE_LIMIT, Sender
from dedupkit.outbox import Outbox, SQLiteOutbox
from dedupkit.outbox.redis import RedisOutbox
from dedupkit.testing import FakePinterest

from ..support.polling import wait_until
from ..support.redis_server import RedisServer

ACCOUNT = "549764982399"
OLD_TOKEN = "pina_OLD-secret-token-111111"
NEW_TOKEN = "pina_NEW-secret-token-222222"
FAST = RetryPolicy(base=0.01, factor=2.0, cap=0.05, jitter=0.0)


def live_event(event_id: str, *, age: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "event_id": event_id,
        "event_time": int(time.time() - age),
        "action_source": "web",
        "user_data": {"client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": "10.00", "currency": "USD"},
        **extra,
    }


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    outbox: Outbox
    if request.param == "sqlite":
        outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        with redis.Redis.from_url(server.url) as client:
            client.flushall()
        outbox = RedisOutbox(server.url)
    yield outbox
    outbox.close()


@pytest.fixture
def fake() -> Iterator[FakePinterest]:
    with FakePinterest(token=OLD_TOKEN, ad_account_ids={ACCOUNT}) as server:
        yield server


@pytest.fixture
def clients(fake: FakePinterest) -> Iterator[Callable[..., CapiClient]]:
    made: list[CapiClient] = []

    def make(token: str = OLD_TOKEN, ad_account_id: str = ACCOUNT) -> CapiClient:
        client = CapiClient(
            ad_account_id=ad_account_id, token=token, base_url=fake.api_base_url, timeout=5
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class Recording:
    """A client that keeps every BatchResult, to check what the sender was told."""

    def __init__(self, client: CapiClient) -> None:
        self.client = client
        self.token_id = client.token_id
        self.results: list[BatchResult] = []

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        result = self.client.send(events)
        self.results.append(result)
        return result


class Loop:
    """``sender.run`` in a thread, stopped by :meth:`close`."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=sender.run, args=(self.stop,), kwargs={"flush_interval": 0.01, "max_idle": 0.05}
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.sender.interrupt()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def loops() -> Iterator[Callable[[Sender], Loop]]:
    started: list[Loop] = []

    def start(sender: Sender) -> Loop:
        started.append(Loop(sender))
        return started[-1]

    yield start
    for loop in started:
        loop.close()


@pytest.fixture
def pauses() -> Iterator[list[dict[str, Any]]]:
    """Every delivery_paused / delivery_resumed signal, in order."""
    seen: list[dict[str, Any]] = []

    def paused(sender: object, **kwargs: Any) -> None:
        seen.append({"signal": "paused", **kwargs})

    def resumed(sender: object, **kwargs: Any) -> None:
        seen.append({"signal": "resumed", **kwargs})

    with delivery_paused.connected_to(paused), delivery_resumed.connected_to(resumed):
        yield seen


def test_one_poison_event_among_1000_is_the_only_dead_letter(
    box: Outbox, fake: FakePinterest, clients: Callable[..., CapiClient]
) -> None:
    ids = [f"e-{i}" for i in range(1000)]
    for event_id in ids:
        box.put(live_event(event_id))
    fake.poison("e-617")
    sender = Sender(box, clients())
    assert sender.run_once() == 1000

    delivered = [e["event_id"] for e in fake.capi_events]
    assert sorted(delivered) == sorted(set(ids) - {"e-617"})
    assert len(delivered) == 999  # nobody sent twice
    [letter] = box.dead_letters()
    assert (letter.event_id, letter.reason) == (
        "e-617",
        "HTTP 400 (code 4196): The request was invalid.",
    )
    # Halving 1000 down to one event: 1 + 2 * 10 requests, not one per event.
    assert len(fake.requests) <= 21
    stats = box.stats()
    assert (stats.delivered, stats.dead, stats.pending, stats.in_flight) == (999, 1, 0, 0)
    assert (sender.totals.delivered, sender.totals.dead) == (999, 1)


def test_bodies_stay_within_the_size_limit(box: Outbox, clients: Callable[..., CapiClient]) -> None:
    with FakePinterest(token=OLD_TOKEN, max_body_bytes=4096) as small:
        client = CapiClient(ad_account_id=ACCOUNT, token=OLD_TOKEN, base_url=small.api_base_url)
        for i in range(30):
            box.put(live_event(f"e-{i}"))
        box.put(live_event("huge", custom_data={"content_name": "x" * 5000}))
        with client:
            Sender(box, client, max_body_bytes=4096).run_once()
        assert sorted(e["event_id"] for e in small.capi_events) == sorted(
            f"e-{i}" for i in range(30)
        )
        assert {r.status for r in small.requests} == {200}
        assert len(small.requests) >= 2
    [letter] = box.dead_letters()
    assert letter.event_id == "huge"
    assert "larger than a request may be (4096 bytes)" in letter.reason


def test_an_html_200_is_retried_then_split_never_dead(
    box: Outbox, fake: FakePinterest, clients: Callable[..., CapiClient]
) -> None:
    for i in range(4):
        box.put(live_event(f"e-{i}"))
    fake.proxy_page_next(200, times=2)
    sender = Sender(box, clients(), policy=FAST)
    sender.run_once()
    # Retried as a batch first: a passing error page costs one request, not one per event.
    assert [r.status for r in fake.requests] == [200]
    assert {e.attempts for e in box.recent()} == {1}
    assert wait_until(lambda: sender.run_once() and len(fake.requests) == 4, timeout=5)
    # The same page again: now halved, and the halves went through.
    assert [r.num_events for r in fake.requests] == [4, 4, 2, 2]
    assert sorted(e["event_id"] for e in fake.capi_events) == ["e-0", "e-1", "e-2", "e-3"]

    box.put(live_event("alone"))
    fake.proxy_page_next(200)
    sender = Sender(box, clients(), policy=FAST)
    sender.run_once()
    assert box.dead_letters() == []
    [alone] = [e for e in box.recent() if e.event_id == "alone"]
    assert alone.attempts == 1
    assert "HTTP 200, not Pinterest's JSON (text/html)" in (alone.last_error or "")
    assert wait_until(lambda: sender.run_once() and box.stats().delivered == 5)


def test_a_token_rotation_loses_nothing(
    box: Outbox,
    fake: FakePinterest,
    clients: Callable[..., CapiClient],
    loops: Callable[[Sender], Loop],
    pauses: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = [f"e-{i}" for i in range(50)]
    for event_id in ids:
        box.put(live_event(event_id))
    fake.token = NEW_TOKEN  # rotated in Ads Manager; this process still has the old one
    old = Sender(box, clients(OLD_TOKEN))
    with caplog.at_level(logging.INFO, logger="dedupkit"):
        assert old.run_once() == 50

    pause = box.pause()
    assert pause is not None
    assert (pause.kind, pause.token_id) == (CREDENTIALS, token_fingerprint(OLD_TOKEN))
    assert "DEDUPKIT_CONVERSION_TOKEN" in pause.reason
    assert 50 < pause.until - time.time() <= 66  # one minute, give or take the jitter
    assert [(p["signal"], p["kind"]) for p in pauses] == [("paused", CREDENTIALS)]
    assert "DEDUPKIT_CONVERSION_TOKEN" in pauses[0]["reason"]
    stats = box.stats()
    assert (stats.dead, stats.delivered, stats.pending + stats.in_flight) == (0, 0, 50)
    assert all(entry.attempts == 0 for entry in box.recent())
    assert any(
        r.levelno == logging.WARNING and "DEDUPKIT_CONVERSION_TOKEN" in r.getMessage()
        for r in caplog.records
    )
    # The old process holds off: no second request for the whole pause.
    assert old.run_once() == 0
    assert len(fake.requests) == 1

    # The operator restarts with the new token: it probes at once and delivers everything.
    loops(Sender(box, clients(NEW_TOKEN)))
    assert wait_until(lambda: box.stats().delivered == 50)
    assert sorted(e["event_id"] for e in fake.capi_events) == sorted(ids)
    assert box.dead_letters() == []
    assert box.pause() is None  # lifted for every process by the successful probe
    assert [(p["signal"], p["kind"]) for p in pauses] == [
        ("paused", CREDENTIALS),
        ("resumed", CREDENTIALS),
    ]


def test_an_unknown_ad_account_pauses_delivery(
    box: Outbox,
    fake: FakePinterest,
    clients: Callable[..., CapiClient],
    pauses: list[dict[str, Any]],
) -> None:
    box.put(live_event("e-1"))
    sender = Sender(box, clients(ad_account_id="123456"))
    sender.run_once()
    pause = box.pause()
    assert pause is not None and pause.kind == CREDENTIALS
    assert "Pinterest does not know ad account 123456: check DEDUPKIT_AD_ACCOUNT_ID" in (
        pause.reason
    )
    assert [r.status for r in fake.requests] == [404]
    assert box.dead_letters() == []
    assert sender.run_once() == 0
    assert len(fake.requests) == 1
    assert pauses[0]["until"] == pause.until


def test_a_probe_after_the_pause_resumes_by_itself(
    box: Outbox,
    fake: FakePinterest,
    clients: Callable[..., CapiClient],
    pauses: list[dict[str, Any]],
) -> None:
    for i in range(5):
        box.put(live_event(f"e-{i}"))
    clock = [time.time()]
    fake.token = NEW_TOKEN
    sender = Sender(box, clients(OLD_TOKEN), clock=lambda: clock[0])
    sender.run_once()
    first = box.pause()
    assert first is not None
    # The pause ends while the token is still wrong: one small probe, a longer pause.
    clock[0] = first.until + 1
    assert wait_until(lambda: sender.run_once() > 0, timeout=5)
    second = box.pause(now=clock[0])
    assert second is not None
    assert second.until - clock[0] >= 100  # the backoff grew: about two minutes
    # The probe claims what is due and sends one event of it; the rest goes back unsent.
    assert [r.num_events for r in fake.requests] == [5, 1]
    assert all(entry.attempts == 0 for entry in box.recent())
    # The token is fixed where the process reads it (here: Pinterest accepts it again).
    fake.token = OLD_TOKEN
    clock[0] = second.until + 1
    assert wait_until(lambda: sender.run_once() > 0, timeout=5)
    assert box.pause(now=clock[0]) is None
    # The probe was judged: the rest of the claim went in the same run.
    assert [r.num_events for r in fake.requests] == [5, 1, 1, 4]
    assert [p["signal"] for p in pauses] == ["paused", "paused", "resumed"]
    assert wait_until(lambda: not sender.run_once() and box.stats().delivered == 5, timeout=5)
    assert box.dead_letters() == []


def test_retry_after_of_a_year_is_capped_at_five_minutes_and_clear_pause_resumes(
    box: Outbox, fake: FakePinterest, clients: Callable[..., CapiClient]
) -> None:
    for i in range(3):
        box.put(live_event(f"e-{i}"))
    fake.fail_next(429, retry_after=31_536_000)
    sender = Sender(box, clients(), policy=FAST, retry_window=3600)
    before = time.time()
    sender.run_once()
    pause = box.pause()
    assert pause is not None and pause.kind == RATE_LIMIT
    assert MAX_RETRY_AFTER == 300
    assert before + MAX_RETRY_AFTER - 1 <= pause.until <= time.time() + MAX_RETRY_AFTER
    assert "31536000" in pause.reason and "capped at 300 s" in pause.reason
    stats = box.stats()
    assert (stats.dead, stats.pending) == (0, 3)
    assert sender.run_once() == 0

    box.clear_pause()  # flask dedupkit resume
    assert wait_until(lambda: sender.run_once() and box.stats().delivered == 3, timeout=5)
    assert box.dead_letters() == []
    assert sorted(e["event_id"] for e in fake.capi_events) == ["e-0", "e-1", "e-2"]


def test_the_retry_after_cap_is_a_setting_and_a_later_success_ends_the_pause(
    box: Outbox, fake: FakePinterest, clients: Callable[..., CapiClient]
) -> None:
    first = Sender(box, clients(), policy=FAST, max_retry_after=30)
    paused: list[float] = []

    class OnItsWay:
        """While this request is on its way, another process is told to wait a year."""

        def __init__(self, client: CapiClient) -> None:
            self.client = client

        def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
            box.put(live_event("e-first"))
            fake.fail_next(429, retry_after=31_536_000)
            before = time.time()
            assert first.run_once() == 1
            pause = box.pause()
            assert pause is not None and pause.kind == RATE_LIMIT
            assert before + 29 <= pause.until <= time.time() + 30  # the setting's cap
            paused.append(pause.until)
            return self.client.send(events)

    box.put(live_event("e-second"))
    second = Sender(box, OnItsWay(clients()), policy=FAST)
    assert second.run_once() == 1
    assert paused
    # Pinterest took the second request after the first was told to wait: the pause is over.
    assert box.pause() is None
    assert wait_until(lambda: first.run_once() and box.stats().delivered == 2, timeout=5)
    assert box.dead_letters() == []


def test_remaining_zero_paces_the_next_request_until_the_reset(
    box: Outbox,
    fake: FakePinterest,
    clients: Callable[..., CapiClient],
    loops: Callable[[Sender], Loop],
    pauses: list[dict[str, Any]],
) -> None:
    fake.set_rate_limit(2, window=1.0)
    for i in range(4):
        box.put(live_event(f"e-{i}"))
    loops(Sender(box, clients(), batch_size=1))
    assert fake.wait_for(lambda: len(fake.capi_events) == 4, timeout=10)

    requests = sorted(fake.requests, key=lambda r: r.received_at)
    assert [r.status for r in requests] == [200, 200, 200, 200]  # never a 429
    # The third request waited for the window that the first one opened to reset.
    assert requests[2].received_at >= requests[0].received_at + 1.0
    assert ("paused", RATE_LIMIT) in [(p["signal"], p["kind"]) for p in pauses]


def test_an_echoed_token_never_reaches_storage_logs_or_results(
    box: Outbox,
    fake: FakePinterest,
    clients: Callable[..., CapiClient],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    pauses: list[dict[str, Any]],
    request: pytest.FixtureRequest,
) -> None:
    box.put(live_event("retried"))
    box.put(live_event("refused"))
    client = Recording(clients())
    sender = Sender(box, client, policy=FAST, batch_size=1)
    fake.proxy_page_next(502, echo_headers=True)  # retried: its error is stored
    fake.proxy_page_next(400, echo_headers=True)  # refused alone: a dead letter's reason
    fake.proxy_page_next(401, echo_headers=True)  # a pause's reason

    def step(requests: int) -> None:
        # The 502 backs the sender off for a few milliseconds: try until it sent.
        assert wait_until(lambda: sender.run_once() >= 0 and len(fake.requests) >= requests, 5)

    with caplog.at_level(logging.DEBUG, logger="dedupkit"):
        step(1)
        step(2)
        box.put(live_event("paused"))
        step(3)

    assert fake.requests and all(r.status in (502, 400, 401) for r in fake.requests)
    assert len(client.results) == 3
    texts = [repr(client.results), caplog.text, repr(pauses), repr(box.dead_letters())]
    texts += [repr(box.stats()), repr(box.recent()), repr(box.pause())]
    texts += [_stored_bytes(box, tmp_path, request).decode("utf-8", "replace")]
    assert "Bad" in texts[-1] or "Gateway" in texts[-1] or "upstream" in texts[-1]
    assert "Bearer" in caplog.text  # the page was seen, its secret was not
    for text in texts:
        assert OLD_TOKEN not in text
        assert "OLD-secret" not in text


def _stored_bytes(box: Outbox, tmp_path: Path, request: pytest.FixtureRequest) -> bytes:
    """Every byte the outbox keeps: the SQLite files, or every Redis value."""
    if isinstance(box, SQLiteOutbox):
        return b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite3*"))
    server: RedisServer = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(server.url) as client:
        return _redis_bytes(client)


def _redis_bytes(client: redis.Redis) -> bytes:
    parts: list[Any] = []
    for key in client.scan_iter():
        parts.append(key)
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"hash":
            parts.extend(b for kv in client.hgetall(key).items() for b in kv)
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == b"zset":
            parts.extend(client.zrange(key, 0, -1))
        elif kind == b"set":
            parts.extend(client.smembers(key))
        elif kind == b"stream":
            parts.append(repr(client.xrange(key)).encode())
    return b"".join(parts)


def test_an_expired_event_stays_dead_and_an_offline_replay_is_sent_once(
    box: Outbox, fake: FakePinterest, clients: Callable[..., CapiClient]
) -> None:
    box.put(live_event("late", age=7200))
    sender = Sender(box, clients(), retry_window=3600)
    sender.run_once()
    assert fake.requests == []
    assert [(d.event_id, d.reason) for d in box.dead_letters()] == [("late", EXPIRED)]
    # Sent again only when the operator says so, as offline.
    assert sender.run_once() == 0
    assert box.replay_dead(as_offline=True) == 1
    sender.run_once()
    sender.run_once()
    [received] = fake.capi_events
    assert (received["event_id"], received["action_source"]) == ("late", "offline")
    assert box.dead_letters() == []
    assert box.stats().delivered == 1


def test_resume_ends_the_credentials_wait_of_the_sender_that_paused(
    box: Outbox, fake: FakePinterest, clients: Callable[..., CapiClient]
) -> None:
    box.put(live_event("e-1"))
    fake.token = NEW_TOKEN
    sender = Sender(box, clients(OLD_TOKEN))
    sender.run_once()
    assert box.pause() is not None
    fake.token = OLD_TOKEN  # fixed at Pinterest's end; the operator runs 'flask dedupkit resume'
    box.clear_pause()
    # Within the lease, not after this sender's own minute-long credentials backoff.
    assert wait_until(lambda: sender.run_once() == 1, timeout=5)
    assert box.stats().delivered == 1


def test_attempts_count_requests_and_test_mode_is_kept_with_the_delivery(
    box: Outbox, fake: FakePinterest
) -> None:
    box.put(live_event("late", age=7200))  # past the window when claimed: never sent
    box.put(live_event("sent"))
    client = CapiClient(
        ad_account_id=ACCOUNT, token=OLD_TOKEN, base_url=fake.api_base_url, test_mode=True
    )
    with client:
        Sender(box, client, retry_window=3600).run_once()
    entries = {entry.event_id: entry for entry in box.recent()}
    assert entries["late"].attempts == 0
    assert entries["sent"].attempts == 1
    assert entries["sent"].test is True
