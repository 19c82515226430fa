from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from dedupkit.delivery.client import BatchResult, CapiClient, EventResult, Outcome
from dedupkit.delivery.retry import RetryPolicy
from dedupkit.delivery.sender import (
    MAX_REQUESTS_PER_BATCH,
    OFFLINE_MAX_AGE,
    BackgroundSender,
    Sender,
    idle_wait,
)
from dedupkit.errors import OutboxError
from dedupkit.outbox import SQLiteOutbox
from dedupkit.signals import event_dead, event_delivered
from dedupkit.testing import FakePinterest

from ..support.polling import wait_until

T0 = 1_750_000_000.0
NO_JITTER = RetryPolicy(base=2.0, factor=2.0, cap=60.0, jitter=0.0)
FAST = RetryPolicy(base=0.01, factor=2.0, cap=0.05, jitter=0.0)
SECRET_IP = "203.0.113.7"


def event(event_id: str, *, event_time: float = T0, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "event_id": event_id,
        "event_time": int(event_time),
        "action_source": "web",
        "user_data": {"client_ip_address": SECRET_IP, "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": "10.00", "currency": "USD"},
        **extra,
    }


def delivered(events: Sequence[Mapping[str, Any]]) -> BatchResult:
    return BatchResult((EventResult(Outcome.DELIVERED),) * len(events), 200)


class StubClient:
    """Records each batch and answers with ``answer(batch)``."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], BatchResult] = delivered) -> None:
        self.answer = answer
        self.batches: list[list[dict[str, Any]]] = []
        self.lock = threading.Lock()

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        batch = [json.loads(e) if isinstance(e, str) else dict(e) for e in events]
        with self.lock:
            self.batches.append(batch)
        return self.answer(batch)

    @property
    def sent_ids(self) -> list[str]:
        with self.lock:
            return [e["event_id"] for batch in self.batches for e in batch]

    def sent_ids_and_sources(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e["event_id"], e["action_source"]) for batch in self.batches for e in batch]


def per_event(
    verdicts: Mapping[str, EventResult], *, status: int = 200, retry_after: float | None = None
) -> Callable[[list[dict[str, Any]]], BatchResult]:
    def answer(batch: list[dict[str, Any]]) -> BatchResult:
        results = tuple(verdicts.get(e["event_id"], EventResult(Outcome.DELIVERED)) for e in batch)
        return BatchResult(results, status, retry_after)

    return answer


def all_failed(
    status: int | None = 503, retry_after: float | None = None
) -> Callable[[list[dict[str, Any]]], BatchResult]:
    def answer(batch: list[dict[str, Any]]) -> BatchResult:
        result = EventResult(Outcome.RETRYABLE, f"HTTP {status}")
        return BatchResult((result,) * len(batch), status, retry_after)

    return answer


@pytest.fixture
def box(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    yield outbox
    outbox.close()


def test_each_event_of_a_batch_gets_its_own_outcome(box: SQLiteOutbox) -> None:
    for name in ("ok", "refused", "later"):
        box.put(event(name), now=T0)
    client = StubClient(
        per_event(
            {
                "refused": EventResult(Outcome.PERMANENT, "Invalid event_time"),
                "later": EventResult(Outcome.RETRYABLE, "timed out waiting for Pinterest"),
            }
        )
    )
    sender = Sender(box, client, policy=NO_JITTER)
    assert sender.run_once(now=T0 + 1) == 3

    assert client.sent_ids == ["ok", "refused", "later"]
    stats = box.stats(now=T0 + 1)
    assert (stats.delivered, stats.dead, stats.pending, stats.in_flight) == (1, 1, 1, 0)
    [letter] = box.dead_letters()
    assert (letter.event_id, letter.reason) == ("refused", "Invalid event_time")
    # The retried event is due after the policy's first delay, not before.
    assert box.claim(10, now=T0 + 2.9) == []
    [again] = box.claim(10, now=T0 + 3)
    assert again.payload["event_id"] == "later"
    assert again.attempts == 1


def test_retries_back_off_with_the_attempt_count(box: SQLiteOutbox) -> None:
    box.put(event("e1"), now=T0)
    client = StubClient(all_failed(503))
    due = T0
    for expected_wait in (2, 4, 8, 16):
        # A new sender each time: only the event's own schedule counts here.
        assert Sender(box, client, policy=NO_JITTER).run_once(now=due) == 1
        assert Sender(box, client, policy=NO_JITTER).run_once(now=due + expected_wait - 0.01) == 0
        due += expected_wait
    assert len(client.batches) == 4
    assert box.stats().last_errors[0][1] == "HTTP 503"


def test_retry_after_pauses_every_sender_of_the_outbox(box: SQLiteOutbox) -> None:
    for i in range(3):
        box.put(event(f"e{i}"), now=T0)
    client = StubClient(all_failed(429, retry_after=30.0))
    sender = Sender(box, client, policy=NO_JITTER, batch_size=2)
    assert sender.run_once(now=T0) == 2
    pause = box.pause(now=T0)
    assert pause is not None and pause.until == T0 + 30

    other = Sender(box, StubClient(), policy=NO_JITTER)
    assert other.run_once(now=T0 + 29.9) == 0
    assert other.client.batches == []  # type: ignore[attr-defined]
    # The throttled events are held by the shared pause, not expired by it.
    assert box.stats(now=T0).dead == 0
    assert other.run_once(now=T0 + 30) == 3


def test_a_failed_request_backs_the_sender_off(box: SQLiteOutbox) -> None:
    box.put(event("e1"), now=T0)
    client = StubClient(all_failed(None))
    sender = Sender(box, client, policy=NO_JITTER)
    sender.run_once(now=T0)
    box.put(event("fresh"), now=T0 + 1)
    # A fresh event is due, but Pinterest just failed: no request before the backoff ends.
    assert sender.run_once(now=T0 + 1) == 0
    assert sender.hold_until == T0 + 2
    assert sender.run_once(now=T0 + 2) == 2
    assert sender.hold_until == T0 + 6
    assert len(client.batches) == 2
    client.answer = delivered
    assert sender.run_once(now=T0 + 5.9) == 0
    assert sender.run_once(now=T0 + 10) == 2
    box.put(event("after"), now=T0 + 10)
    assert sender.run_once(now=T0 + 10) == 1


def test_events_past_the_retry_window_are_dead_without_a_request(box: SQLiteOutbox) -> None:
    box.put(event("stale", event_time=T0 - 3600), now=T0)
    box.put(event("fresh", event_time=T0 - 3599), now=T0)
    client = StubClient()
    sender = Sender(box, client, retry_window=3600)
    assert sender.run_once(now=T0) == 2
    assert client.sent_ids == ["fresh"]
    [letter] = box.dead_letters()
    assert (letter.event_id, letter.reason) == ("stale", "expired")


def test_an_event_whose_retry_would_come_too_late_is_dead_at_once(box: SQLiteOutbox) -> None:
    box.put(event("soon", event_time=T0 - 3500), now=T0)
    box.put(event("ok", event_time=T0), now=T0)
    client = StubClient(all_failed(503))
    sender = Sender(box, client, policy=RetryPolicy(base=120, cap=120, jitter=0))
    sender.run_once(now=T0)
    assert [(d.event_id, d.reason) for d in box.dead_letters()] == [("soon", "expired")]
    assert box.stats(now=T0).pending == 1


def test_send_expired_as_offline_is_refused_with_the_replay_command(box: SQLiteOutbox) -> None:
    with pytest.raises(ValueError, match="flask dedupkit dead --replay --as-offline"):
        Sender(box, StubClient(), send_expired_as_offline=True)


def test_an_offline_replay_is_sent_for_seven_days_and_a_web_event_is_not(
    box: SQLiteOutbox,
) -> None:
    box.put(event("replayed", event_time=T0 - 7200, action_source="offline"), now=T0)
    box.put(event("web", event_time=T0 - 7200), now=T0)
    box.put(event("ancient", event_time=T0 - OFFLINE_MAX_AGE, action_source="offline"), now=T0)
    client = StubClient()
    Sender(box, client, retry_window=3600).run_once(now=T0)
    assert client.sent_ids_and_sources() == [("replayed", "offline")]
    assert sorted((d.event_id, d.reason) for d in box.dead_letters()) == [
        ("ancient", "expired"),
        ("web", "expired"),
    ]


def stored_texts(box: SQLiteOutbox) -> dict[str, str]:
    with sqlite3.connect(box.path) as conn:
        rows = conn.execute("SELECT event_id, payload FROM outbox").fetchall()
    conn.close()
    return dict(rows)


def recording_capi(bodies: list[bytes]) -> CapiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        count = len(json.loads(request.content)["data"])
        return httpx.Response(200, json={"events": [{"status": "processed"}] * count})

    return CapiClient(ad_account_id="1", token="t", transport=httpx.MockTransport(handler))


def test_the_stored_text_is_sent_byte_for_byte(box: SQLiteOutbox) -> None:
    names = {"content_name": "Crème brûlée ✓ 寿司", "value": "10.00", "currency": "EUR"}
    box.put(event("one", custom_data=names), now=T0)
    box.put(event("two", custom_data=names), now=T0)
    stored = stored_texts(box)
    bodies: list[bytes] = []
    with recording_capi(bodies) as capi:
        Sender(box, capi).run_once(now=T0)
    assert bodies == [f'{{"data":[{stored["one"]},{stored["two"]}]}}'.encode()]
    assert "Crème brûlée ✓ 寿司".encode() in bodies[0]
    assert box.stats(now=T0).delivered == 2


def test_signals_report_delivered_and_dead_events(box: SQLiteOutbox) -> None:
    box.put(event("ok"), now=T0)
    box.put(event("refused"), now=T0)
    box.put(event("stale", event_time=T0 - 7200), now=T0)
    client = StubClient(per_event({"refused": EventResult(Outcome.PERMANENT, "Invalid email")}))
    app = object()
    seen: list[tuple[str, object, str, str | None]] = []

    def on_delivered(sender: object, event: dict[str, Any], **kw: Any) -> None:
        seen.append(("delivered", sender, event["event_id"], None))

    def on_dead(sender: object, event: dict[str, Any], reason: str, **kw: Any) -> None:
        seen.append(("dead", sender, event["event_id"], reason))
        raise RuntimeError("a broken receiver must not break delivery")

    with event_delivered.connected_to(on_delivered), event_dead.connected_to(on_dead):
        Sender(box, client, signal_sender=app).run_once(now=T0)
    assert sorted(seen, key=str) == sorted(
        [
            ("delivered", app, "ok", None),
            ("dead", app, "refused", "Invalid email"),
            ("dead", app, "stale", "expired"),
        ],
        key=str,
    )
    stats = box.stats()
    assert (stats.delivered, stats.dead) == (1, 2)


def test_nothing_is_sent_while_the_outbox_is_paused(box: SQLiteOutbox) -> None:
    box.put(event("e1"), now=T0)
    box.set_pause_until(T0 + 10)
    client = StubClient()
    sender = Sender(box, client)
    assert sender.run_once(now=T0 + 9) == 0
    assert client.batches == []
    assert box.stats(now=T0).pending == 1
    assert sender.run_once(now=T0 + 10) == 1


def test_batches_hold_at_most_batch_size_events(box: SQLiteOutbox) -> None:
    for i in range(5):
        box.put(event(f"e{i}"), now=T0)
    client = StubClient()
    sender = Sender(box, client, batch_size=2)
    assert [sender.run_once(now=T0) for _ in range(4)] == [2, 2, 1, 0]
    assert [len(b) for b in client.batches] == [2, 2, 1]


def test_logs_say_what_happened_without_personal_data(
    box: SQLiteOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    box.put(event("refused"), now=T0)
    box.put(event("later"), now=T0)
    box.put(event("stale", event_time=T0 - 7200), now=T0)
    client = StubClient(
        per_event(
            {
                "refused": EventResult(Outcome.PERMANENT, "Invalid hashed email"),
                "later": EventResult(Outcome.RETRYABLE, "HTTP 503 (code 4197): ramped down"),
            },
            retry_after=5,
        )
    )
    with caplog.at_level(logging.DEBUG, logger="dedupkit"):
        Sender(box, client, policy=NO_JITTER).run_once(now=T0)
    text = caplog.text
    lines = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert ("WARNING", "1 event(s) dead: Invalid hashed email") in lines
    assert (
        "WARNING",
        "1 event(s) dead: not delivered within DEDUPKIT_RETRY_WINDOW (3600 s) of their "
        "event_time; if their tag never fired, `flask dedupkit dead --replay --as-offline` "
        "sends them",
    ) in lines
    [batch_line] = [m for level, m in lines if m.startswith("batch of")]
    assert batch_line.startswith("batch of 3: sent 0, retried 1 (HTTP 503 (code 4197): ramped")
    assert "dead 2 (1: Invalid hashed email; 1: expired)" in batch_line
    assert any(m.startswith("delivery paused: Pinterest asked to wait 5 s") for _, m in lines)
    assert SECRET_IP not in text
    assert "Mozilla" not in text
    assert all(r.name == "dedupkit.sender" for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1001}, "batch_size"),
        ({"retry_window": 0}, "retry_window"),
        ({"lease": 0}, "lease"),
    ],
)
def test_sender_refuses_impossible_settings(
    box: SQLiteOutbox, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Sender(box, StubClient(), **kwargs)


# -- the loop ----------------------------------------------------------------------------


class CountingOutbox(SQLiteOutbox):
    """Counts claims, and fails the first ``failures`` of them."""

    def __init__(self, path: Path, failures: int = 0) -> None:
        super().__init__(path)
        self.claims: list[float] = []
        self.claimed: list[float] = []
        self.failures = failures

    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> Any:
        self.claims.append(time.monotonic())
        if self.failures:
            self.failures -= 1
            raise OutboxError("simulated: database or disk is full")
        entries = super().claim(limit, now=now, lease=lease)
        self.claimed.append(time.monotonic())
        return entries


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[CountingOutbox]:
    outbox = CountingOutbox(tmp_path / "outbox.sqlite3")
    yield outbox
    outbox.close()


class Loop:
    """Runs ``sender.run`` in a thread for one test."""

    def __init__(self, sender: Sender, **kwargs: Any) -> None:
        self.sender = sender
        self.stop = threading.Event()
        self.thread = threading.Thread(target=sender.run, args=(self.stop,), kwargs=kwargs)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.sender.interrupt()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def loops() -> Iterator[Callable[..., Loop]]:
    started: list[Loop] = []

    def start(sender: Sender, **kwargs: Any) -> Loop:
        loop = Loop(sender, **kwargs)
        started.append(loop)
        return loop

    yield start
    for loop in started:
        loop.close()


def test_run_delivers_what_is_enqueued(
    counting: CountingOutbox, loops: Callable[..., Loop]
) -> None:
    client = StubClient()
    sender = Sender(counting, client)
    loops(sender, flush_interval=0.02, max_idle=0.05)
    for i in range(3):
        counting.put(event(f"e{i}", event_time=time.time()))
        sender.wake()
    assert wait_until(lambda: len(client.sent_ids) == 3)
    assert sorted(client.sent_ids) == ["e0", "e1", "e2"]


def test_run_flushes_at_once_when_a_batch_is_full(
    counting: CountingOutbox, loops: Callable[..., Loop]
) -> None:
    client = StubClient()
    sender = Sender(counting, client, batch_size=3)
    loops(sender, flush_interval=60, max_idle=60)
    assert wait_until(lambda: counting.claims)
    counting.put(event("e0", event_time=time.time()))
    sender.wake()
    counting.put(event("e1", event_time=time.time()))
    sender.wake()
    counting.put(event("e2", event_time=time.time()))
    sender.wake()
    # Two events would wait for the 60 s flush interval; the third fills the batch, which
    # goes at once and whole: a loop that flushed early would have sent a batch of 1 or 2.
    assert wait_until(lambda: len(client.sent_ids) == 3)
    assert [sorted(e["event_id"] for e in b) for b in client.batches] == [["e0", "e1", "e2"]]


def test_run_idles_with_a_growing_wait(
    counting: CountingOutbox, loops: Callable[..., Loop]
) -> None:
    loops(Sender(counting, StubClient()), flush_interval=0.01, max_idle=0.04)
    assert wait_until(lambda: len(counting.claims) >= 9)
    gaps = [b - a for a, b in itertools.pairwise(counting.claims[:9])]
    # Lower bounds only (a busy machine makes waits longer, never shorter): 0.01, 0.02,
    # 0.04, then capped at 0.04. The cap itself is checked without a clock below.
    assert gaps[0] >= 0.01, gaps
    assert gaps[1] >= 0.02
    assert all(gap >= 0.04 for gap in gaps[2:])


@pytest.mark.parametrize(
    ("empty_runs", "expected"), [(0, 0.01), (1, 0.01), (2, 0.02), (3, 0.04), (4, 0.04), (32, 0.04)]
)
def test_the_idle_wait_doubles_up_to_max_idle(empty_runs: int, expected: float) -> None:
    assert idle_wait(empty_runs, flush_interval=0.01, max_idle=0.04) == pytest.approx(expected)


def test_run_survives_outbox_errors(
    tmp_path: Path, loops: Callable[..., Loop], caplog: pytest.LogCaptureFixture
) -> None:
    outbox = CountingOutbox(tmp_path / "outbox.sqlite3", failures=2)
    client = StubClient()
    outbox.put(event("e1", event_time=time.time()))
    loops(Sender(outbox, client, policy=FAST), flush_interval=0.01, max_idle=0.02)
    assert wait_until(lambda: client.sent_ids == ["e1"])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "delivery failed" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    outbox.close()


def test_stopping_run_sends_what_is_due_and_returns_promptly(
    counting: CountingOutbox,
) -> None:
    client = StubClient()
    sender = Sender(counting, client)
    loop = Loop(sender, flush_interval=60, max_idle=60)
    assert wait_until(lambda: counting.claims)
    counting.put(event("e1", event_time=time.time()))
    started = time.monotonic()
    loop.close()
    assert time.monotonic() - started < 2
    assert client.sent_ids == ["e1"]


# -- the background thread -----------------------------------------------------------------


def test_background_sender_starts_once_lazily_and_stops_after_a_last_batch(
    box: SQLiteOutbox,
) -> None:
    client = StubClient()
    built: list[Sender] = []

    def factory() -> Sender:
        built.append(Sender(box, client))
        return built[-1]

    background = BackgroundSender(factory, flush_interval=60)
    assert built == []
    assert background.ensure_started()
    assert background.ensure_started()
    assert len(built) == 1
    assert background.sender is built[0]
    assert wait_until(lambda: background._thread is not None and box.stats().pending == 0)

    box.put(event("last", event_time=time.time()))
    assert background.stop(timeout=5)
    assert client.sent_ids == ["last"]
    thread = background._thread
    assert thread is not None
    assert not thread.is_alive()
    # Stopped means stopped: a late request does not start it again.
    assert background.ensure_started() is False


def test_background_sender_wake_sends_an_enqueued_event(box: SQLiteOutbox) -> None:
    client = StubClient()
    background = BackgroundSender(lambda: Sender(box, client), flush_interval=0.01)
    try:
        background.ensure_started()
        box.put(event("e1", event_time=time.time()))
        background.wake()
        assert wait_until(lambda: client.sent_ids == ["e1"])
    finally:
        background.stop()


def test_background_sender_logs_a_broken_factory_and_tries_again(
    box: SQLiteOutbox, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def factory() -> Sender:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no token")
        return Sender(box, StubClient())

    background = BackgroundSender(factory)
    try:
        assert background.ensure_started() is False
        assert "could not start the dedupkit sender" in caplog.text
        assert background.ensure_started() is True
    finally:
        background.stop()


def _report_child_thread(background: BackgroundSender, conn: Any) -> None:
    started = background.ensure_started()
    sender = background.sender
    thread = background._thread
    stopped = background.stop()
    conn.send((os.getpid(), started and stopped, id(sender), thread.ident if thread else None))


def test_a_forked_process_starts_its_own_sender_thread(counting: CountingOutbox) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs os.fork")
    client = StubClient()
    background = BackgroundSender(lambda: Sender(counting, client), flush_interval=60)
    try:
        background.ensure_started()
        # Fork while the parent's thread waits, not while it is inside SQLite.
        assert wait_until(lambda: counting.claimed)
        parent_thread = background._thread
        assert parent_thread is not None
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_report_child_thread, args=(background, theirs))
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking with threads: the child must cope with it.
            warnings.simplefilter("ignore", DeprecationWarning)
            proc.start()
        assert ours.poll(10)
        pid, started, sender_id, ident = ours.recv()
        proc.join(10)
        assert proc.exitcode == 0
        assert pid != os.getpid()
        assert started is True
        assert sender_id != id(background.sender)
        assert ident is not None
        assert parent_thread.is_alive()
    finally:
        background.stop()


# -- against FakePinterest -----------------------------------------------------------------


@pytest.fixture
def capi(fake: FakePinterest) -> Iterator[CapiClient]:
    with CapiClient(
        ad_account_id=fake.ad_account_id, token=fake.token, base_url=fake.api_base_url, timeout=2
    ) as client:
        yield client


def live_event(event_id: str, age: float = 0.0) -> dict[str, Any]:
    return event(event_id, event_time=time.time() - age)


def test_pinterest_failing_one_event_delivers_the_rest(
    box: SQLiteOutbox, fake: FakePinterest, capi: CapiClient
) -> None:
    for name in ("ok-1", "refused", "ok-2"):
        box.put(live_event(name))
    fake.fail_events(["refused"], message="Invalid hashed email.")
    app = object()
    dead: list[tuple[object, str, str]] = []
    delivered_ids: list[str] = []

    def on_dead(sender: object, event: dict[str, Any], reason: str, **kw: Any) -> None:
        dead.append((sender, event["event_id"], reason))

    def on_delivered(sender: object, event: dict[str, Any], **kw: Any) -> None:
        delivered_ids.append(event["event_id"])

    with event_dead.connected_to(on_dead), event_delivered.connected_to(on_delivered):
        assert Sender(box, capi, signal_sender=app).run_once() == 3

    assert [e["event_id"] for e in fake.capi_events] == ["ok-1", "ok-2"]
    assert delivered_ids == ["ok-1", "ok-2"]
    assert dead == [(app, "refused", "Invalid hashed email.")]
    [letter] = box.dead_letters()
    assert (letter.event_id, letter.reason) == ("refused", "Invalid hashed email.")
    stats = box.stats()
    assert (stats.delivered, stats.dead, stats.pending, stats.in_flight) == (2, 1, 0, 0)


def test_a_refused_lone_event_is_a_dead_letter_with_pinterests_message(
    box: SQLiteOutbox, fake: FakePinterest, capi: CapiClient
) -> None:
    box.put(live_event("e1"))
    fake.poison("e1")
    Sender(box, capi).run_once()
    [letter] = box.dead_letters()
    assert (letter.event_id, letter.reason) == (
        "e1",
        "HTTP 400 (code 4196): The request was invalid.",
    )


def test_no_request_reaches_pinterest_before_retry_after_expires(
    box: SQLiteOutbox, fake: FakePinterest, capi: CapiClient, loops: Callable[..., Loop]
) -> None:
    fake.fail_next(429, retry_after=1)
    sender = Sender(box, capi, policy=FAST, batch_size=5)
    for i in range(12):
        box.put(live_event(f"e{i}"))
    loops(sender, flush_interval=0.01, max_idle=0.02)
    assert fake.wait_for(lambda: len({e["event_id"] for e in fake.capi_events}) == 12, 10)

    first, *others = sorted(fake.requests, key=lambda r: r.received_at)
    assert first.status == 429
    assert others
    assert all(r.received_at >= first.received_at + 1 for r in others)
    # The successful request after the pause ended it for every process.
    assert box.pause() is None


def test_an_outage_ends_with_everything_delivered(
    box: SQLiteOutbox, fake: FakePinterest, capi: CapiClient, loops: Callable[..., Loop]
) -> None:
    fake.fail_next(503, times=4)
    ids = [f"e{i}" for i in range(30)]
    for event_id in ids:
        box.put(live_event(event_id))
    loops(Sender(box, capi, policy=FAST, batch_size=10), flush_interval=0.01, max_idle=0.02)
    assert fake.wait_for(lambda: {e["event_id"] for e in fake.capi_events} == set(ids), 10)

    statuses = [r.status for r in fake.requests]
    assert statuses[:4] == [503] * 4
    assert set(statuses[4:]) == {200}
    assert wait_until(lambda: box.stats().delivered == 30)
    assert box.dead_letters() == []
    assert sorted(e["event_id"] for e in fake.capi_events) == sorted(ids)


def test_a_request_that_timed_out_is_sent_again_with_the_same_event_ids(
    box: SQLiteOutbox, fake: FakePinterest, loops: Callable[..., Loop]
) -> None:
    fake.delay_next(1.0)
    client = CapiClient(
        ad_account_id=fake.ad_account_id, token=fake.token, base_url=fake.api_base_url, timeout=0.2
    )
    for i in range(3):
        box.put(live_event(f"e{i}"))
    try:
        loops(Sender(box, client, policy=FAST), flush_interval=0.01, max_idle=0.02)
        assert wait_until(lambda: box.stats().delivered == 3)
    finally:
        fake.stop()
        client.close()
    # Pinterest processed the first copy although the answer came too late: at least once.
    received = [e["event_id"] for e in fake.capi_events]
    assert sorted(received) == ["e0", "e0", "e1", "e1", "e2", "e2"]


def test_events_past_the_window_never_reach_pinterest(
    box: SQLiteOutbox, fake: FakePinterest, capi: CapiClient
) -> None:
    box.put(live_event("late", age=120))
    Sender(box, capi, retry_window=60).run_once()
    assert fake.requests == []
    assert [(d.event_id, d.reason) for d in box.dead_letters()] == [("late", "expired")]


def test_a_batch_left_by_a_dead_process_is_sent_once_the_default_lease_ends(
    box: SQLiteOutbox,
) -> None:
    box.put(event("orphan"), now=T0)
    client = StubClient()
    sender = Sender(box, client)
    # A process claimed it with the default lease, then died.
    assert len(box.claim(10, now=T0, lease=sender.lease)) == 1
    assert sender.run_once(now=T0 + sender.lease - 0.5) == 0
    assert sender.run_once(now=T0 + sender.lease) == 1
    assert client.sent_ids == ["orphan"]


def test_run_forgets_delivered_events_after_they_are_kept_long_enough(
    box: SQLiteOutbox, loops: Callable[..., Loop], monkeypatch: pytest.MonkeyPatch
) -> None:
    box.put(event("old", event_time=time.time()))
    [entry] = box.claim(1)
    box.ack([entry.id])
    import dedupkit.delivery.sender
    import dedupkit.delivery.worker

    # Everything delivered counts as old enough, and every look at the outbox prunes.
    monkeypatch.setattr(dedupkit.delivery.sender, "DELIVERED_KEPT", 0.0)
    monkeypatch.setattr(dedupkit.delivery.worker, "PRUNE_EVERY", 0.0)
    sender = Sender(box, StubClient(), retry_window=1e-3)
    loops(sender, flush_interval=0.02, max_idle=0.05)
    assert wait_until(lambda: box.stats().delivered == 0)
    # Forgotten, so the same (name, event_id) is accepted again.
    assert box.put(event("old", event_time=time.time())) is True


# -- whole-batch refusals, totals ------------------------------------------------------------


def split_unless(bad: set[str]) -> Callable[[list[dict[str, Any]]], BatchResult]:
    """Refuse as a whole any batch of several events holding a bad one, as a 400 would."""

    def answer(batch: list[dict[str, Any]]) -> BatchResult:
        ids = {e["event_id"] for e in batch}
        if ids & bad:
            outcome = Outcome.SPLIT if len(batch) > 1 else Outcome.PERMANENT
            return BatchResult((EventResult(outcome, "HTTP 400"),) * len(batch), 400)
        return delivered(batch)

    return answer


def test_halving_stops_at_the_request_budget_and_retries_the_rest(box: SQLiteOutbox) -> None:
    # Every event bad: isolating all of them would take 2 * 200 - 1 requests.
    ids = {f"e{i:03}" for i in range(200)}
    for event_id in sorted(ids):
        box.put(event(event_id), now=T0)
    client = StubClient(split_unless(ids))
    sender = Sender(box, client, policy=NO_JITTER)
    assert sender.run_once(now=T0) == 200
    assert len(client.batches) == MAX_REQUESTS_PER_BATCH
    stats = box.stats(now=T0)
    assert stats.dead > 0 and stats.pending > 0
    assert stats.dead + stats.pending == 200
    assert sender.totals.dead == stats.dead
    # The rest was never sent: given back without an attempt counted.
    assert sender.totals.retried == 0
    assert {e.attempts for e in box.claim(200, now=T0)} == {0}


def test_totals_add_up_what_the_sender_did(box: SQLiteOutbox) -> None:
    for name in ("ok-1", "ok-2", "bad", "later"):
        box.put(event(name), now=T0)
    box.put(event("stale", event_time=T0 - 7200), now=T0)
    client = StubClient(
        per_event(
            {
                "bad": EventResult(Outcome.PERMANENT, "Invalid email"),
                "later": EventResult(Outcome.RETRYABLE, "HTTP 503"),
            },
            retry_after=5,
        )
    )
    sender = Sender(box, client, policy=NO_JITTER)
    sender.run_once(now=T0)
    totals = sender.totals
    assert (totals.delivered, totals.retried, totals.dead, totals.paused) == (2, 1, 2, 1)
    assert totals.summary() == (
        "sent 2, retried 1, dead 2 (Invalid email: 1, expired: 1), paused 1"
    )


def test_the_ack_keeps_each_events_device_label(box: SQLiteOutbox) -> None:
    iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    )
    box.put(event("phone", user_data={"client_user_agent": iphone, "em": ["a" * 64]}), now=T0)
    box.put(event("no-agent", user_data={"em": ["a" * 64]}), now=T0)
    assert Sender(box, StubClient(), policy=NO_JITTER).run_once(now=T0 + 1) == 2
    devices = {e.event_id: e.device for e in box.recent()}
    assert devices == {"phone": "Safari · iOS · mobile", "no-agent": None}
