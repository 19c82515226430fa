from __future__ import annotations

import math
import random

import pytest

from dedupkit.delivery.retry import RetryPolicy


class FixedRandom:
    """A random source that always answers ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "expected"), [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (50, 60.0)]
)
def test_delay_grows_exponentially_up_to_the_cap(attempt: int, expected: float) -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, cap=60.0, jitter=0.5)
    assert policy.delay(attempt, rng=FixedRandom(0.0)) == expected


def test_jitter_shortens_the_delay_by_at_most_its_fraction() -> None:
    policy = RetryPolicy(base=10.0, factor=2.0, cap=100.0, jitter=0.25)
    assert policy.delay(1, rng=FixedRandom(0.999999)) == pytest.approx(15.0, abs=1e-4)
    rng = random.Random(42)
    delays = [policy.delay(4, rng=rng) for _ in range(500)]
    assert all(75.0 <= d <= 100.0 for d in delays)
    # Senders that failed together must not all come back at the same moment.
    assert len({round(d, 3) for d in delays}) > 100


def test_delay_is_never_shorter_than_retry_after() -> None:
    policy = RetryPolicy(base=1.0, cap=10.0, jitter=0.0)
    assert policy.delay(0, retry_after=30.0) == 30.0
    assert policy.delay(3, retry_after=2.0) == 8.0
    # Retry-After may exceed the cap: the server's word wins.
    assert policy.delay(10, retry_after=120.0) == 120.0


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    policy = RetryPolicy(base=1.0, factor=1e10, cap=300.0, jitter=0.0)
    assert policy.delay(10_000) == 300.0


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().delay(-1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base": 0}, "base"),
        ({"base": -1}, "base"),
        ({"factor": 0.5}, "factor"),
        ({"cap": 0.5, "base": 1.0}, "cap"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
        ({"cap": math.inf}, "cap"),
        ({"base": math.nan}, "base"),
    ],
)
def test_invalid_policies_are_refused_naming_the_field(
    kwargs: dict[str, float], field: str
) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
        RetryPolicy(**kwargs)


def test_policy_is_immutable_and_shows_its_settings() -> None:
    policy = RetryPolicy(base=2.0)
    with pytest.raises(AttributeError):
        policy.base = 3.0  # type: ignore[misc]
    assert "base=2.0" in repr(policy)
