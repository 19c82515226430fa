"""The gate as tables: a pause in force, answers at given times, and what the gate says.

No clock, no outbox, no thread: the gate is pure, so each row is the whole story.
"""

from __future__ import annotations

import random

import pytest

from dedupkit.delivery.gate import (
    CREDENTIALS,
    MAX_RETRY_AFTER,
    PROBE_SIZE,
    RATE_LIMIT,
    Answer,
    Gate,
    Permit,
    Told,
)
from dedupkit.delivery.retry import RetryPolicy
from dedupkit.outbox.base import Pause

T0 = 1_750_000_000.0
POLICY = RetryPolicy(base=2.0, factor=2.0, cap=60.0, jitter=0.0)
CREDS = RetryPolicy(base=60.0, factor=2.0, cap=900.0, jitter=0.0)
JUDGED = Told(Answer.JUDGED, status=200)
FAILED = Told(Answer.FAILED, status=503, message="HTTP 503")
REFUSED = Told(Answer.CREDENTIALS, status=401, message="check DEDUPKIT_CONVERSION_TOKEN")


def gate(**kwargs: object) -> Gate:
    options: dict[str, object] = {
        "token_id": "tok-a",
        "batch_size": 100,
        "policy": POLICY,
        "credentials_backoff": CREDS,
        "rng": random.Random(0),
    }
    options.update(kwargs)
    return Gate(**options)  # type: ignore[arg-type]


def shared(until: float, kind: str = RATE_LIMIT, token_id: str = "") -> Pause:
    return Pause(until, "why", kind, token_id)


@pytest.mark.parametrize(
    ("pause", "expected"),
    [
        (None, Permit(0.0, 100, False)),
        (shared(T0 + 30), Permit(30.0, 100, False, "why")),
        (shared(T0 + 30, CREDENTIALS, "tok-a"), Permit(30.0, PROBE_SIZE, True, "why")),
        # Another token's credentials pause: this process has the rotated token; probe now.
        (shared(T0 + 900, CREDENTIALS, "tok-old"), Permit(0.0, PROBE_SIZE, True)),
        # A pause without a token (set by hand) holds everyone.
        (shared(T0 + 30, CREDENTIALS, ""), Permit(30.0, PROBE_SIZE, True, "why")),
    ],
)
def test_a_fresh_gate_reads_the_shared_pause(pause: Pause | None, expected: Permit) -> None:
    assert gate().permit(T0, pause) == expected


# Each row: answers told at T0, T0 + 1, ...; then what permit() says at ``at`` with no shared
# pause, and the attributes that matter.
@pytest.mark.parametrize(
    ("answers", "at", "wait", "failures"),
    [
        ([FAILED], T0 + 1, 1.0, 1),  # the first backoff is 2 s from T0
        ([FAILED, FAILED], T0 + 1, 4.0, 2),  # then 4 s from T0 + 1
        ([FAILED, FAILED, FAILED], T0 + 2, 8.0, 3),
        ([FAILED, FAILED, JUDGED], T0 + 2, 0.0, 0),  # an answer with verdicts ends it
        ([JUDGED], T0, 0.0, 0),
    ],
)
def test_failed_requests_back_off_and_a_judged_one_ends_it(
    answers: list[Told], at: float, wait: float, failures: int
) -> None:
    g = gate()
    for i, told in enumerate(answers):
        g.told(T0 + i, told)
    assert g.permit(at, None).wait == wait
    assert g.failures == failures


@pytest.mark.parametrize(
    ("retry_after", "cap", "until", "capped"),
    [
        (30.0, MAX_RETRY_AFTER, T0 + 30, False),
        (31_536_000.0, MAX_RETRY_AFTER, T0 + 300, True),  # a year: five minutes
        (31_536_000.0, 60.0, T0 + 60, True),  # the setting
        (0.0, MAX_RETRY_AFTER, T0, False),
    ],
)
def test_retry_after_is_a_shared_pause_capped(
    retry_after: float, cap: float, until: float, capped: bool
) -> None:
    decision = gate(max_retry_after=cap).told(
        T0, Told(Answer.FAILED, retry_after=retry_after, status=429)
    )
    assert decision.share is not None
    assert (decision.share.until, decision.share.kind, decision.share.token_id) == (
        until,
        RATE_LIMIT,
        "",
    )
    assert ("capped at" in decision.share.reason) is capped
    assert f"wait {retry_after:.0f} s (HTTP 429)" in decision.share.reason


def test_exhausted_rate_limit_paces_until_the_reset_capped() -> None:
    g = gate()
    decision = g.told(T0, Told(Answer.JUDGED, exhausted_for=12.0, status=200))
    assert decision.share is not None and decision.share.until == T0 + 12
    assert decision.lift is None  # its own pause is not lifted by its own success
    assert gate().told(T0, Told(Answer.JUDGED, exhausted_for=1e9)).share.until == T0 + 300  # type: ignore[union-attr]


def test_a_later_success_lifts_a_rate_limit_pause_and_says_so() -> None:
    g = gate()
    g.told(T0, Told(Answer.FAILED, retry_after=60.0, status=429))
    decision = g.told(T0 + 5, JUDGED)
    assert (decision.lift, decision.resumed) == (RATE_LIMIT, RATE_LIMIT)
    # Any process's success lifts a rate-limit pause, not only the one that started it.
    assert gate().told(T0, JUDGED).lift == RATE_LIMIT
    assert gate().told(T0, JUDGED).resumed is None
    # A failure lifts nothing.
    assert gate().told(T0, FAILED).lift is None


@pytest.mark.parametrize(
    ("refusals", "pause_length"), [(1, 60.0), (2, 120.0), (3, 240.0), (5, 900.0), (9, 900.0)]
)
def test_credentials_pause_every_process_with_a_growing_backoff(
    refusals: int, pause_length: float
) -> None:
    g = gate()
    for _ in range(refusals - 1):
        g.told(T0, REFUSED)
    decision = g.told(T0, REFUSED)
    assert decision.share == Pause(
        T0 + pause_length, "check DEDUPKIT_CONVERSION_TOKEN", CREDENTIALS, "tok-a"
    )
    assert decision.backoff == pause_length
    assert g.probing
    # It holds this sender even if another token's longer pause is what the outbox keeps.
    other = shared(T0 + 5000, CREDENTIALS, "tok-old")
    assert g.permit(T0 + pause_length - 1, other) == Permit(
        1.0, PROBE_SIZE, True, "credentials refused; waiting to probe"
    )
    assert g.permit(T0 + pause_length, other).open


def test_a_judged_probe_lifts_the_credentials_pause_and_opens_the_full_batch() -> None:
    g = gate()
    g.told(T0, REFUSED)
    pause = shared(T0 + 60, CREDENTIALS, "tok-a")
    assert g.permit(T0 + 59, pause).wait == 1.0
    assert g.permit(T0 + 60, None) == Permit(0.0, PROBE_SIZE, True)
    # The probe timed out: no verdict, still probing, backing off.
    g.told(T0 + 60, FAILED)
    assert g.permit(T0 + 61, None) == Permit(
        1.0, PROBE_SIZE, True, "backing off after a failed request"
    )
    decision = g.told(T0 + 62, JUDGED)
    assert (decision.lift, decision.resumed) == (CREDENTIALS, CREDENTIALS)
    assert g.permit(T0 + 62, None) == Permit(0.0, 100, False)
    assert g.credential_failures == 0


def test_resume_ends_the_wait_of_the_gate_that_paused_at_once() -> None:
    g = gate()
    g.told(T0, REFUSED)
    assert g.permit(T0 + 1, shared(T0 + 60, CREDENTIALS, "tok-a")).wait == 59
    # `flask dedupkit resume` deleted the shared pause: the next look sees none.
    assert g.permit(T0 + 2, None) == Permit(0.0, PROBE_SIZE, True)


def test_a_rate_limit_pause_lifted_by_resume_holds_no_one() -> None:
    g = gate()
    g.told(T0, Told(Answer.FAILED, retry_after=300.0, status=429))
    assert g.permit(T0 + 1, shared(T0 + 300)).wait == 299
    # Only the failure's own short backoff is left.
    assert g.permit(T0 + 1, None).wait == 1.0
    assert g.permit(T0 + 2, None).open


def test_the_gate_never_reads_a_clock() -> None:
    g = gate()
    g.told(0.0, FAILED)
    # Time is what it is told: far in the past or the future, the arithmetic holds.
    assert g.permit(1.0, None).wait == 1.0
    assert g.permit(1e12, None).open


def test_impossible_gates_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Gate(batch_size=0)
    with pytest.raises(ValueError, match="max_retry_after"):
        Gate(max_retry_after=0)
