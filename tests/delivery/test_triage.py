"""The triage as tables: a request's answer in, each event's outcome and the gate's news out."""

from __future__ import annotations

import json
import random

import pytest

from dedupkit.delivery.client import BatchResult, EventResult, Outcome, RateLimit
from dedupkit.delivery.gate import Answer
from dedupkit.delivery.retry import RetryPolicy
from dedupkit.delivery.triage import EXPIRED, OFFLINE_MAX_AGE, deadline, partition, triage
from dedupkit.outbox.base import Claimed

T0 = 1_750_000_000.0
POLICY = RetryPolicy(base=2.0, factor=2.0, cap=60.0, jitter=0.0)
WINDOW = 3600.0


def entry(event_id: str, *, age: float = 0.0, attempts: int = 0, source: str = "web") -> Claimed:
    payload = {"event_name": "checkout", "event_id": event_id, "event_time": T0 - age}
    payload["action_source"] = source
    raw = json.dumps(payload, separators=(",", ":"))
    return Claimed(f"{event_id}:1", raw, attempts, event_time=T0 - age)


def every(outcome: Outcome, count: int, status: int | None, **kwargs: object) -> BatchResult:
    return BatchResult((EventResult(outcome, f"HTTP {status}"),) * count, status, **kwargs)  # type: ignore[arg-type]


def sort(group: list[Claimed], result: BatchResult):  # type: ignore[no-untyped-def]
    return triage(group, result, now=T0, policy=POLICY, retry_window=WINDOW, rng=random.Random(0))


def test_each_event_gets_its_verdict() -> None:
    group = [entry("ok"), entry("bad")]
    result = BatchResult(
        (EventResult(Outcome.DELIVERED), EventResult(Outcome.PERMANENT, "Invalid email")), 200
    )
    out = sort(group, result)
    assert [e.raw for e in out.delivered] == [group[0].raw]
    assert dict(out.refused) == {"Invalid email": [group[1]]}
    assert (out.split, out.held, out.expired, dict(out.retried)) == (False, [], [], {})
    assert out.told.answer is Answer.JUDGED


@pytest.mark.parametrize(
    ("result", "attempts", "split", "answer"),
    [
        (every(Outcome.SPLIT, 4, 400), 0, True, Answer.JUDGED),
        (every(Outcome.SPLIT, 4, 413), 0, True, Answer.JUDGED),
        # A proxy's page, a status Pinterest never sends: retried whole first, then halved.
        (every(Outcome.SPLIT, 4, 200), 0, False, Answer.FAILED),
        (every(Outcome.SPLIT, 4, 418), 0, False, Answer.FAILED),
        (every(Outcome.SPLIT, 4, 200), 1, True, Answer.JUDGED),
        (every(Outcome.SPLIT, 4, 418), 1, True, Answer.JUDGED),
        (every(Outcome.RETRYABLE, 4, 503), 0, False, Answer.FAILED),
        (every(Outcome.RETRYABLE, 4, None), 0, False, Answer.FAILED),  # timeout, corrupt gzip
        (every(Outcome.RETRYABLE, 4, 429), 0, False, Answer.FAILED),
        (every(Outcome.CREDENTIALS, 4, 401), 0, False, Answer.CREDENTIALS),
    ],
)
def test_whole_batch_answers(
    result: BatchResult, attempts: int, split: bool, answer: Answer
) -> None:
    group = [entry(f"e{i}", attempts=attempts) for i in range(4)]
    out = sort(group, result)
    assert out.split is split
    assert out.told.answer is answer
    # Nothing is dead from a whole-batch answer.
    assert (dict(out.refused), out.expired) == ({}, [])


def test_an_unexpected_answer_retries_the_batch_once_with_an_attempt_each() -> None:
    group = [entry("a"), entry("b", attempts=1)]
    out = sort(group, every(Outcome.SPLIT, 2, 200))
    assert dict(out.retried) == {(T0 + 2, "HTTP 200"): [group[0]], (T0 + 4, "HTTP 200"): [group[1]]}


def test_credentials_hold_every_event_without_an_attempt() -> None:
    group = [entry("a"), entry("b")]
    out = sort(group, every(Outcome.CREDENTIALS, 2, 403))
    assert out.held == group
    assert dict(out.retried) == {}


def test_retries_back_off_by_each_events_attempts() -> None:
    group = [entry("new"), entry("old", attempts=3)]
    out = sort(group, every(Outcome.RETRYABLE, 2, 503))
    assert dict(out.retried) == {
        (T0 + 2, "HTTP 503"): [group[0]],
        (T0 + 16, "HTTP 503"): [group[1]],
    }


def test_a_retry_that_would_come_too_late_is_expired_unless_pinterest_asked_to_wait() -> None:
    late = entry("late", age=WINDOW - 1)
    out = sort([late], every(Outcome.RETRYABLE, 1, 503))
    assert out.expired == [late]
    # A rate-limit answer never dead-letters: the window is judged at the next claim.
    for result in (
        every(Outcome.RETRYABLE, 1, 429),
        every(Outcome.RETRYABLE, 1, 503, retry_after=30.0),
    ):
        out = sort([late], result)
        assert out.expired == []
        assert [e for entries in out.retried.values() for e in entries] == [late]


def test_the_gate_hears_of_waits_and_exhausted_limits() -> None:
    out = sort([entry("a")], every(Outcome.RETRYABLE, 1, 429, retry_after=31_536_000.0))
    assert out.told.retry_after == 31_536_000.0
    limit = RateLimit(limit=100, remaining=0, reset=12.0)
    result = BatchResult((EventResult(Outcome.DELIVERED),), 200, None, limit)
    assert sort([entry("a")], result).told.exhausted_for == 12.0
    relaxed = BatchResult((EventResult(Outcome.DELIVERED),), 200, None, RateLimit(100, 5, 12.0))
    assert sort([entry("a")], relaxed).told.exhausted_for is None


def test_partition_and_deadlines() -> None:
    fresh, stale = entry("fresh", age=WINDOW - 1), entry("stale", age=WINDOW)
    offline = entry("replayed", age=WINDOW * 2, source="offline")
    assert partition([fresh, stale, offline], T0, WINDOW) == ([fresh, offline], [stale])
    assert deadline(offline, WINDOW) == T0 - WINDOW * 2 + OFFLINE_MAX_AGE
    untimed = Claimed("x:1", '{"event_name":"checkout","event_id":"x"}')
    assert deadline(untimed, WINDOW) == float("inf")
    assert EXPIRED == "expired"
