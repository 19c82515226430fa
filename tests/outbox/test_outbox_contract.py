"""The Outbox contract (dedupkit/outbox/base.py), held against SQLite, a real Redis and a real
PostgreSQL alike.

``box`` and ``other`` are two outboxes on the same store, as two processes or hosts open it.
Backend-specific behaviour lives in test_outbox_sqlite.py and test_outbox_redis.py.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dedupkit.errors import ConfigurationError, InvalidEvent, OutboxError
from dedupkit.event.wire import encode_event
from dedupkit.outbox import Outbox, Pause, SQLiteOutbox
from dedupkit.outbox import sqlite as sqlite_outbox
from dedupkit.outbox.base import MAX_DEVICE_LENGTH
from dedupkit.vocabulary import EventState

from ..support.payloads import capi_event

T0 = 1_750_000_000.0
Opener = Callable[..., Outbox]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def open_box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens outboxes on one fresh store: a SQLite file, or a Redis or PostgreSQL namespace of
    its own."""
    opened: list[Outbox] = []
    if request.param == "sqlite":
        path = tmp_path / "outbox.sqlite3"

        def make(account: str | None = None) -> Outbox:
            return SQLiteOutbox(path, account=account)

    elif request.param == "postgres":
        from dedupkit.outbox.postgres import PostgresOutbox

        database = request.getfixturevalue("postgres_url")
        partition = f"contract-{uuid.uuid4().hex}"

        def make(account: str | None = None) -> Outbox:
            return PostgresOutbox(database, namespace=partition, account=account)

    else:
        from dedupkit.outbox.redis import RedisOutbox

        url = request.getfixturevalue("redis_server").url
        namespace = f"contract-{uuid.uuid4().hex}"

        def make(account: str | None = None) -> Outbox:
            return RedisOutbox(url, namespace=namespace, account=account)

    def opener(account: str | None = None) -> Outbox:
        """An outbox on the store; with ``account``, bound to that ad account."""
        opened.append(make(account))
        return opened[-1]

    yield opener
    for outbox in opened:
        outbox.close()


@pytest.fixture
def box(open_box: Opener) -> Outbox:
    return open_box()


@pytest.fixture
def other(open_box: Opener) -> Outbox:
    """A second outbox on the same store, as another process or host opens it."""
    return open_box()


def event(event_id: str, name: str = "checkout", **extra: Any) -> dict[str, Any]:
    return capi_event(event_id, name=name, event_time=T0, **extra)


def ids_of(claimed: list[Any]) -> list[str]:
    return [c.payload["event_id"] for c in claimed]


def counts(box: Outbox, now: float = T0) -> tuple[int, int, int, int]:
    stats = box.stats(now=now)
    return stats.pending, stats.in_flight, stats.delivered, stats.dead


def test_each_backend_has_every_method_of_the_protocol_with_its_parameters(box: Outbox) -> None:
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    methods = [name for name in vars(Outbox) if not name.startswith("_")]
    assert {"put", "pause", "clear_pause", "count_dead", "replay_dead"} <= set(methods)
    for name in methods:
        assert shape(getattr(type(box), name)) == shape(getattr(Outbox, name)), name


def test_put_is_idempotent_on_event_name_and_event_id(box: Outbox, other: Outbox) -> None:
    assert box.put(event("e1"), now=T0) is True
    assert box.put(event("e1", custom_data={"value": "99"}), now=T0 + 1) is False
    # Another process or host sees the same entry.
    assert other.put(event("e1"), now=T0) is False
    # The same id under another event name is another event.
    assert other.put(event("e1", name="lead"), now=T0) is True
    first, second = box.claim(10, now=T0)
    assert first.payload["custom_data"] == {"value": "10.00", "currency": "USD"}
    assert second.payload["event_name"] == "lead"
    assert counts(box) == (0, 2, 0, 0)


@pytest.mark.parametrize(
    "payload",
    [
        {"event_name": "checkout"},
        {"event_id": "x", "event_name": 3},
        {**event("e1"), "custom_data": {"content_name": "half \ud800 surrogate"}},
        {**event("e1"), "custom_data": {"value": object()}},
    ],
    ids=["no-id", "name-not-text", "lone-surrogate", "not-json"],
)
def test_put_refuses_a_payload_that_is_not_an_event_with_a_value_error(
    box: Outbox, payload: dict[str, Any]
) -> None:
    with pytest.raises(ValueError) as info:
        box.put(payload, now=T0)
    # Not a storage failure (the event would be kept in memory and retried forever), and
    # not a shop's bad input (that is the intake's InvalidEvent).
    assert not isinstance(info.value, (InvalidEvent, OutboxError))
    assert counts(box) == (0, 0, 0, 0)


def test_claim_gives_the_encoded_text_and_the_payload_exactly_as_enqueued(box: Outbox) -> None:
    payload = event("é-1", custom_data={"content_name": "Crème brûlée ✓ 寿司", "num_items": 2})
    box.put(payload, now=T0)
    [claimed] = box.claim(1, now=T0)
    # What is stored is, byte for byte, what the client sends.
    assert claimed.raw == encode_event(payload)
    assert claimed.payload == payload
    assert list(claimed.payload) == list(payload)
    assert claimed.event_time == T0
    assert claimed.attempts == 0


def test_every_stored_event_has_its_event_time_beside_it(box: Outbox) -> None:
    for bad in ("soon", True, None):
        with pytest.raises(ValueError, match="event_time"):
            box.put({**event("e1"), "event_time": bad}, now=T0)
    box.put({**event("e3"), "event_time": T0 + 0.25}, now=T0 + 2)
    assert [c.event_time for c in box.claim(10, now=T0 + 2)] == [T0 + 0.25]


def test_claim_takes_the_oldest_due_entries_up_to_the_limit(box: Outbox) -> None:
    for i in range(5):
        box.put(event(f"e{i}"), now=T0 + i)
    box.put(event("later"), now=T0 + 100)
    with pytest.raises(ValueError, match="limit"):
        box.claim(0, now=T0 + 10)
    assert ids_of(box.claim(3, now=T0 + 10, lease=3600)) == ["e0", "e1", "e2"]
    assert ids_of(box.claim(3, now=T0 + 10, lease=3600)) == ["e3", "e4"]
    assert box.claim(3, now=T0 + 10) == []
    assert ids_of(box.claim(3, now=T0 + 100)) == ["later"]


def test_a_claim_is_exclusive_until_its_lease_ends_then_anyone_takes_it(
    box: Outbox, other: Outbox
) -> None:
    box.put(event("e1"), now=T0)
    [first] = box.claim(10, now=T0, lease=30)
    assert other.claim(10, now=T0 + 29.9) == []
    assert counts(box) == (0, 1, 0, 0)
    # The process that claimed it died: another sender takes it over.
    [again] = other.claim(10, now=T0 + 30, lease=30)
    assert again.payload == first.payload
    assert again.id != first.id
    # A reclaim is not an attempt.
    assert again.attempts == 0
    assert box.claim(10, now=T0 + 59.9) == []


def test_ack_retry_and_dead(box: Outbox) -> None:
    for i in range(3):
        box.put(event(f"e{i}"), now=T0)
    ok, later, bad = box.claim(10, now=T0)
    box.ack([ok.id])
    box.retry([later.id], not_before=T0 + 60, error="HTTP 503: unavailable")
    box.dead([bad.id], reason="Invalid event_time", now=T0 + 1)

    assert counts(box, T0 + 2) == (1, 0, 1, 1)
    assert box.claim(10, now=T0 + 59.9) == []
    [retried] = box.claim(10, now=T0 + 60)
    assert retried.payload["event_id"] == "e1"
    assert retried.attempts == 1
    box.retry([retried.id], not_before=T0 + 120, error="timeout")
    [third] = box.claim(10, now=T0 + 120)
    assert third.attempts == 2

    [letter] = box.dead_letters()
    assert (letter.event_name, letter.event_id, letter.reason) == (
        "checkout",
        "e2",
        "Invalid event_time",
    )
    assert (letter.died_at, letter.attempts) == (T0 + 1, 1)  # the refused request counts


def test_unknown_malformed_and_finished_ids_change_nothing(box: Outbox) -> None:
    box.put(event("pending"), now=T0)
    box.put(event("done"), now=T0)
    [pending, done] = box.claim(10, now=T0)
    box.retry([pending.id], not_before=T0, error="HTTP 503")
    box.ack([done.id])
    box.ack([done.id])  # twice is harmless
    nonsense = ["999:1", "999", "nonsense", "", "1:x", ":1"]
    box.ack(nonsense)
    # No longer claimed (rescheduled, or delivered): retry and dead leave them alone.
    box.retry([pending.id, done.id, *nonsense], not_before=T0 + 99, error="late")
    box.dead([pending.id, done.id, *nonsense], reason="late", now=T0)
    assert box.replay_dead(nonsense, now=T0) == 0
    assert counts(box) == (1, 0, 1, 0)
    assert [m for _, m in box.stats().last_errors] == ["HTTP 503"]


def test_a_stale_claimer_cannot_retry_or_dead_letter_the_new_claim(
    box: Outbox, other: Outbox
) -> None:
    box.put(event("e1"), now=T0)
    [stale] = box.claim(1, now=T0, lease=30)
    [current] = other.claim(1, now=T0 + 31, lease=30)
    box.retry([stale.id], not_before=T0, error="late 503")
    box.dead([stale.id], reason="late refusal", now=T0 + 32)
    # Still the new claimer's: not due again, not dead.
    assert counts(box, T0 + 32) == (0, 1, 0, 0)
    assert box.claim(1, now=T0 + 32) == []
    assert box.dead_letters() == []
    # An id without its claim number is no claim either.
    box.dead([current.id.partition(":")[0]], reason="bare id", now=T0 + 32)
    assert counts(box, T0 + 32) == (0, 1, 0, 0)

    other.retry([current.id], not_before=T0 + 40, error="HTTP 503")
    # Now pending again: the stale claim still cannot touch it.
    box.dead([stale.id], reason="late refusal", now=T0 + 33)
    [last] = box.claim(1, now=T0 + 40)
    assert last.attempts == 1
    box.dead([last.id], reason="refused", now=T0 + 41)
    assert [d.reason for d in box.dead_letters()] == ["refused"]


def test_an_ack_from_any_claim_counts_even_over_a_dead_letter(box: Outbox, other: Outbox) -> None:
    box.put(event("e1"), now=T0)
    box.put(event("e2"), now=T0)
    stale = box.claim(2, now=T0, lease=5)
    current = other.claim(2, now=T0 + 10)
    other.dead([current[1].id], reason="expired", now=T0 + 10)
    # The first sender's request did reach Pinterest after all.
    box.ack([c.id for c in stale])
    assert counts(box, T0 + 11) == (0, 0, 2, 0)
    assert box.dead_letters() == []
    other.ack([current[0].id])
    assert counts(box, T0 + 11) == (0, 0, 2, 0)


def kill(box: Outbox, reasons: list[tuple[str, str, float]]) -> dict[str, str]:
    """Dead-letter one new event per ``(event_id, reason, died_at)``; returns id -> letter id."""
    for event_id, _, _ in reasons:
        box.put(event(event_id), now=T0)
    claimed = {c.payload["event_id"]: c for c in box.claim(len(reasons), now=T0)}
    for event_id, reason, died_at in reasons:
        box.dead([claimed[event_id].id], reason=reason, now=died_at)
    return {d.event_id: d.id for d in box.dead_letters(len(reasons))}


def test_dead_letters_are_listed_newest_first_and_filtered(box: Outbox) -> None:
    kill(
        box,
        [
            ("e0", "expired", T0 + 1),
            ("e1", "HTTP 422: bad currency", T0 + 2),
            ("e2", "expired", T0 + 3),
            ("e3", "expired", T0 + 4),
        ],
    )
    assert [d.event_id for d in box.dead_letters()] == ["e3", "e2", "e1", "e0"]
    assert [d.event_id for d in box.dead_letters(limit=1)] == ["e3"]
    assert box.dead_letters(limit=0) == []
    expired = box.dead_letters(reason="expired")
    assert [d.event_id for d in expired] == ["e3", "e2", "e0"]
    assert [d.event_id for d in box.dead_letters(1, reason="expired", since=T0 + 2)] == ["e3"]
    # since is inclusive; a reason matches exactly.
    assert [d.event_id for d in box.dead_letters(since=T0 + 3)] == ["e3", "e2"]
    assert box.dead_letters(reason="expire") == []
    assert box.count_dead() == 4
    assert box.count_dead(reason="expired") == 3
    assert box.count_dead(reason="expired", since=T0 + 2) == 2
    assert box.count_dead(since=T0 + 2) == 3
    assert box.count_dead(reason="HTTP 422") == 0


def test_replay_makes_dead_letters_pending_again(box: Outbox) -> None:
    letters = kill(box, [("e0", "expired", T0), ("e1", "expired", T0), ("e2", "x", T0)])
    assert box.replay_dead([], now=T0) == 0
    assert box.replay_dead([letters["e0"]], now=T0 + 5) == 1
    assert box.replay_dead([letters["e0"]], now=T0 + 5) == 0  # no longer dead
    assert sorted(d.event_id for d in box.dead_letters()) == ["e1", "e2"]
    [replayed] = box.claim(10, now=T0 + 5)
    assert (replayed.payload["event_id"], replayed.attempts) == ("e0", 0)
    # Unchanged without as_offline.
    assert replayed.raw == encode_event(event("e0"))

    assert box.replay_dead(now=T0 + 6) == 2
    assert box.dead_letters() == []
    assert box.replay_dead(now=T0 + 7) == 0
    assert sorted(ids_of(box.claim(10, now=T0 + 6))) == ["e1", "e2"]


@pytest.mark.parametrize("by_id", [True, False], ids=["listed", "all"])
def test_replay_as_offline_rewrites_only_the_action_source(box: Outbox, by_id: bool) -> None:
    letters = kill(box, [("e0", "expired", T0), ("e1", "expired", T0)])
    ids = [letters["e0"], letters["e1"]] if by_id else None
    assert box.replay_dead(ids, now=T0 + 5, as_offline=True) == 2
    replayed = box.claim(10, now=T0 + 5)
    assert sorted(ids_of(replayed)) == ["e0", "e1"]
    for claimed in replayed:
        expected = {**event(claimed.payload["event_id"]), "action_source": "offline"}
        assert claimed.raw == encode_event(expected)
        assert claimed.attempts == 0


def test_stats_report_the_age_of_the_oldest_waiting_entry(box: Outbox) -> None:
    assert box.stats(now=T0).oldest_pending_age is None
    box.put(event("old"), now=T0)
    box.put(event("new"), now=T0 + 50)
    assert box.stats(now=T0 + 60).oldest_pending_age == 60
    [old] = box.claim(1, now=T0 + 60)
    # In flight is still waiting for Pinterest.
    assert box.stats(now=T0 + 60).oldest_pending_age == 60
    box.ack([old.id])
    assert box.stats(now=T0 + 60).oldest_pending_age == 10
    [new] = box.claim(1, now=T0 + 60)
    box.dead([new.id], reason="422", now=T0 + 60)
    assert box.stats(now=T0 + 60).oldest_pending_age is None


def test_skips_are_counted_by_reason_across_processes(box: Outbox, other: Outbox) -> None:
    assert box.stats().skipped == {}
    box.record_skip("bot")
    other.record_skip("bot")
    other.record_skip("no_consent")
    assert box.stats().skipped == {"bot": 2, "no_consent": 1}


def test_the_last_errors_are_kept_newest_first_once_each(box: Outbox) -> None:
    kept = sqlite_outbox.LAST_ERRORS_KEPT
    for i in range(kept + 4):
        box.put(event(f"e{i}"), now=T0)
    claimed = box.claim(kept + 4, now=T0)
    # One failed request reschedules its events in several calls: one error is kept.
    box.retry([claimed[0].id], not_before=T0, error="HTTP 503")
    box.retry([claimed[1].id], not_before=T0, error="HTTP 503")
    for i, entry in enumerate(claimed[2:]):
        box.dead([entry.id], reason=f"refused {i}", now=T0 + i)
    errors = box.stats().last_errors
    assert [message for _, message in errors] == [f"refused {i}" for i in range(kept + 1, 1, -1)]
    assert errors[0][0] == T0 + kept + 1


def test_the_pause_only_rises_is_shared_and_says_why(box: Outbox, other: Outbox) -> None:
    now = time.time()
    assert box.pause() is None
    box.set_pause_until(now + 30.25, reason="HTTP 429", kind="rate_limit")
    assert other.pause() == Pause(now + 30.25, "HTTP 429", "rate_limit", "")
    # A shorter Retry-After seen by another process shortens nothing, nor changes the reason.
    other.set_pause_until(now + 10, reason="HTTP 503")
    assert box.pause() == Pause(now + 30.25, "HTTP 429", "rate_limit", "")
    other.set_pause_until(now + 600, reason="HTTP 401", kind="credentials", token_id="tok-1a2b")
    assert box.pause() == Pause(now + 600, "HTTP 401", "credentials", "tok-1a2b")
    # Over once its time has come.
    assert box.pause(now=now + 600) is None
    assert box.pause(now=now + 599) is not None


def test_clearing_the_pause_lifts_it_for_everyone(box: Outbox, other: Outbox) -> None:
    box.set_pause_until(time.time() + 3600, reason="HTTP 403", kind="credentials")
    other.clear_pause()
    assert box.pause() is None
    # A later pause starts afresh, however short.
    box.set_pause_until(time.time() + 5, reason="HTTP 429")
    pause = other.pause()
    assert pause is not None
    assert (pause.reason, pause.kind) == ("HTTP 429", "rate_limit")


def test_a_pause_of_one_kind_is_lifted_alone(box: Outbox, other: Outbox) -> None:
    now = time.time()
    box.set_pause_until(now + 60, reason="HTTP 401", kind="credentials", token_id="tok")
    # A success lifts a rate-limit pause, never a credentials pause raised meanwhile.
    other.clear_pause(kind="rate_limit")
    assert box.pause() == Pause(now + 60, "HTTP 401", "credentials", "tok")
    other.clear_pause(kind="credentials")
    assert box.pause() is None
    box.set_pause_until(now + 60, reason="HTTP 429", kind="rate_limit")
    other.clear_pause(kind="rate_limit")
    assert box.pause() is None


def test_entries_given_back_unsent_keep_their_attempts(box: Outbox) -> None:
    box.put(event("e1"), now=T0)
    box.put(event("e2"), now=T0)
    first, second = box.claim(10, now=T0)
    box.retry([first.id], not_before=T0, error="held by a pause", sent=False)
    box.retry([second.id], not_before=T0, error="HTTP 503")
    again = {e.payload["event_id"]: e.attempts for e in box.claim(10, now=T0)}
    assert again == {"e1": 0, "e2": 1}
    # Only a failed request is a delivery error worth showing.
    assert [message for _, message in box.stats().last_errors] == ["HTTP 503"]


def test_recent_lists_waiting_and_dead_entries_newest_first(box: Outbox) -> None:
    for i in range(3):
        box.put(event(f"e{i}", user_data={"em": ["a" * 64], "click_id": "dj0yJnU9"}), now=T0 + i)
    [first] = box.claim(1, now=T0 + 3)
    box.dead([first.id], reason="HTTP 422: bad", now=T0 + 10)
    assert ids_of(box.claim(1, now=T0 + 3)) == ["e1"]
    entries = {e.event_id: e for e in box.recent()}
    assert next(iter(entries)) == "e0"  # changed last
    assert entries["e0"].state is EventState.DEAD
    assert entries["e0"].last_error == "HTTP 422: bad"
    assert entries["e1"].state is EventState.SENDING
    assert entries["e2"].state is EventState.PENDING
    # Names of the identity fields only, never their values.
    assert entries["e2"].user_fields == ("em", "click_id")
    assert entries["e2"].has_click_id
    assert "a" * 64 not in json.dumps([str(e) for e in entries.values()])
    assert len(box.recent(limit=2)) == 2


def test_threads_on_two_outboxes_never_claim_the_same_entry(box: Outbox, other: Outbox) -> None:
    expected = {f"e{n}" for n in range(600)}
    for event_id in expected:
        box.put(event(event_id), now=T0)
    workers = 4
    start = threading.Barrier(workers)
    results: list[list[str]] = [[] for _ in range(workers)]
    failures: list[BaseException] = []

    def work(n: int) -> None:
        outbox = (box, other)[n % 2]
        try:
            start.wait(timeout=10)
            # Bounded, so that a broken outbox handing out entries forever fails quickly.
            while len(results[n]) <= len(expected) and (batch := outbox.claim(7, now=T0)):
                results[n] += ids_of(batch)
        except BaseException as exc:  # reported below, from the test thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    claimed = [event_id for result in results for event_id in result]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) == expected


# -- what the ledger, coverage and metrics read ------------------------------------------------


def test_tag_evidence_may_come_first_and_fired_once_stays_fired(box: Outbox, other: Outbox) -> None:
    box.record_tag("checkout", "e1", True, now=T0)
    other.record_tag("checkout", "e1", False, now=T0 + 1)  # a blocked reload
    box.record_tag("checkout", "e2", False, now=T0)
    box.record_tag("lead", "e1", False, now=T0)  # another name: another event
    for event_id in ("e1", "e2", "e3"):
        box.put(event(event_id), now=T0 + 2)
    tags = {e.event_id: e.tag for e in other.recent()}
    assert tags == {"e1": True, "e2": False, "e3": None}
    assert {e.event_id: e.tag for e in other.entries_since(T0)} == tags


def test_tag_evidence_is_bounded(box: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    module = inspect.getmodule(type(box))
    monkeypatch.setattr(module, "EVIDENCE_KEPT", 3)
    for n in range(6):
        box.record_tag("checkout", f"e{n}", True, now=T0 + n)
        box.put(event(f"e{n}"), now=T0 + 10)
    kept = {e.event_id for e in box.recent() if e.tag is not None}
    assert kept == {"e3", "e4", "e5"}


def test_skips_are_counted_and_the_named_ones_listed_newest_first(
    box: Outbox, other: Outbox
) -> None:
    box.record_skip("bot")
    box.record_skip("no_consent", event_name="checkout", event_id="o-1", now=T0)
    other.record_skip("no_identity", event_name="lead", event_id="l-1", now=T0 + 1)
    assert dict(box.stats(now=T0).skipped) == {"bot": 1, "no_consent": 1, "no_identity": 1}
    skips = box.recent_skips()
    assert [(s.reason, s.event_name, s.event_id, s.at) for s in skips] == [
        ("no_identity", "lead", "l-1", T0 + 1),
        ("no_consent", "checkout", "o-1", T0),
    ]
    assert len(box.recent_skips(1)) == 1


def test_duplicates_are_counted_across_processes(box: Outbox, other: Outbox) -> None:
    assert box.put(event("e1"), now=T0)
    assert not other.put(event("e1"), now=T0)
    assert not box.put(event("e1"), now=T0)
    assert box.stats(now=T0).duplicates == 2


def test_ack_counts_the_attempt_the_test_flag_and_the_lag(box: Outbox) -> None:
    now = time.time()
    box.put(capi_event("fast", event_time=now - 3), now=now)
    box.put(capi_event("late", event_time=now - 4000), now=now)
    box.put(capi_event("plain", event_time=now - 3), now=now)
    claimed = {c.payload["event_id"]: c.id for c in box.claim(10, now=now)}
    box.ack([claimed["fast"], claimed["late"]], test=True)
    box.ack([claimed["plain"]])
    box.ack([claimed["plain"]])  # twice counts once
    entries = {e.event_id: e for e in box.recent()}
    assert {k: (e.attempts, e.test) for k, e in entries.items()} == {
        "fast": (1, True),
        "late": (1, True),
        "plain": (1, None),
    }
    stats = box.stats()
    # 1 < 3 s <= 5 (twice), 3600 < 4000 s <= 7200.
    assert list(stats.lag_counts) == [0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert 4006 <= stats.lag_sum < 4030


def test_a_dead_letter_given_up_without_a_request_counts_no_attempt(box: Outbox) -> None:
    box.put(event("sent"), now=T0)
    box.put(event("unsent"), now=T0)
    claimed = {c.payload["event_id"]: c.id for c in box.claim(10, now=T0)}
    box.dead([claimed["sent"]], reason="Invalid em", now=T0 + 1)
    box.dead([claimed["unsent"]], reason="expired", now=T0 + 1, sent=False)
    assert {d.event_id: d.attempts for d in box.dead_letters()} == {"sent": 1, "unsent": 0}


def test_entries_since_carry_the_coverage_summary(box: Outbox, other: Outbox) -> None:
    user = {"em": ["a" * 64], "click_id": "dj0y", "client_ip_address": "203.0.113.7"}
    box.put(event("old"), now=T0 - 10)
    box.put(event("c1", user_data=user, custom_data={"value": "19.90", "currency": "EUR"}), now=T0)
    box.put(event("v1", name="page_visit", custom_data={}), now=T0 + 1)
    [claimed] = [c for c in box.claim(10, now=T0 + 2) if c.payload["event_id"] == "c1"]
    box.ack([claimed.id])
    entries = other.entries_since(T0)
    assert [e.event_id for e in entries] == ["v1", "c1"]
    checkout = entries[1]
    assert checkout.state is EventState.DELIVERED
    assert (checkout.value, checkout.currency, checkout.created_at) == (19.9, "EUR", T0)
    assert checkout.user_fields == ("em", "click_id", "client_ip_address")
    assert (entries[0].value, entries[0].currency) == (None, None)
    assert [e.event_id for e in other.entries_since(T0, limit=1)] == ["v1"]


def test_ack_keeps_each_entrys_device_label_for_the_ledger(box: Outbox, other: Outbox) -> None:
    for event_id in ("phone", "desktop", "plain"):
        box.put(event(event_id), now=T0)
    claimed = {c.payload["event_id"]: c.id for c in box.claim(10, now=T0)}
    long_label = "Safari · iOS · mobile" + "x" * 200
    box.ack(
        list(claimed.values()),
        devices={claimed["phone"]: long_label, claimed["desktop"]: "Chrome · Windows · desktop"},
    )
    devices = {e.event_id: e.device for e in other.entries_since(T0)}
    assert devices == {
        "phone": long_label[:MAX_DEVICE_LENGTH],
        "desktop": "Chrome · Windows · desktop",
        "plain": None,
    }
    assert {e.event_id: e.device for e in other.recent()} == devices


# -- one shop per outbox, one write per outcome, counters that only go up (issue 16) --------


def test_an_outbox_belongs_to_the_first_account_that_uses_it(open_box: Opener) -> None:
    mine = open_box(account="111")
    mine.put(event("mine"), now=T0)
    with pytest.raises(ConfigurationError, match=r"ad account 111.*ad account 222"):
        open_box(account="222").stats()
    # A tool without an account (a test, a script) may still read and claim.
    assert ids_of(open_box().claim(10, now=T0)) == ["mine"]


def test_a_sender_claims_only_its_own_account_and_unbound_events(open_box: Opener) -> None:
    tool = open_box()
    tool.put(event("from-a-tool"), now=T0)
    mine = open_box(account="111")
    mine.put(event("mine"), now=T0)
    assert sorted(ids_of(mine.claim(10, now=T0))) == ["from-a-tool", "mine"]


def test_an_event_and_its_tag_flag_are_one_write(box: Outbox, other: Outbox) -> None:
    assert box.put(event("e1"), now=T0, tag=True)
    assert not box.put(event("e1"), now=T0, tag=False)  # a duplicate still records evidence
    box.record_skip("no_consent", event_name="checkout", event_id="s1", now=T0, tag=False)
    other.put(event("s1"), now=T0)
    assert {e.event_id: e.tag for e in other.recent()} == {"e1": True, "s1": False}
    box.record_tag("checkout", "s1", True, timeout=1.0)
    assert {e.event_id: e.tag for e in other.recent()}["s1"] is True


def test_skips_may_be_counted_by_more_than_one(box: Outbox) -> None:
    box.record_skip("lost_memory_full", count=3, timeout=1.0)
    box.record_skip("lost_memory_full")
    assert box.stats().skipped == {"lost_memory_full": 4}


def test_outcome_totals_only_go_up(box: Outbox, other: Outbox) -> None:
    for n in range(3):
        box.put(event(f"e{n}"), now=T0)
    box.put(event("e0"), now=T0)
    claimed = {c.payload["event_id"]: c.id for c in box.claim(10, now=T0)}
    box.ack([claimed["e0"], claimed["e1"]])
    box.dead([claimed["e2"]], reason="Invalid em", now=T0)
    totals = {"queued": 3, "delivered": 2, "dead": 1, "replayed": 0, "duplicate": 1}
    assert dict(other.stats().totals) == totals
    box.prune(0, now=time.time() + 60)
    assert box.replay_dead(now=T0) == 1
    assert dict(other.stats().totals) == {**totals, "replayed": 1}
    assert other.stats().dead == 0
