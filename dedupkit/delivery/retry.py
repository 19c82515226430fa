"""When to try again: capped exponential backoff with jitter, as pure arithmetic."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in ``[0, 1)``: the :mod:`random` module, a seeded
    :class:`random.Random`."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before the next attempt.

    The ``n``-th retry (counting from 0) waits ``min(cap, base * factor ** n)`` seconds,
    shortened by up to ``jitter`` of itself so that senders which failed together do not
    retry together.

    :param base: seconds before the first retry.
    :param factor: growth per attempt, at least 1.
    :param cap: the longest wait, in seconds.
    :param jitter: the fraction of the wait drawn at random, from 0 to 1.
    :raises ValueError: for a value outside these ranges.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("base", "factor", "cap", "jitter"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"RetryPolicy.{name} must be a finite number")
        if self.base <= 0:
            raise ValueError(f"RetryPolicy.base must be positive, got {self.base}")
        if self.factor < 1:
            raise ValueError(f"RetryPolicy.factor must be at least 1, got {self.factor}")
        if self.cap < self.base:
            raise ValueError(
                f"RetryPolicy.cap ({self.cap}) must be at least RetryPolicy.base ({self.base})"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter}")

    def delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rng: RandomSource = random,
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry).

        :param retry_after: what the server asked for (``Retry-After``); never waits less.
        :param rng: the source of jitter, to be seeded in tests.
        :raises ValueError: for a negative ``attempt``.
        """
        if attempt < 0:
            raise ValueError(f"attempt must not be negative, got {attempt}")
        try:
            backoff = min(self.cap, self.base * self.factor**attempt)
        except OverflowError:
            backoff = self.cap
        backoff *= 1 - self.jitter * rng.random()
        return max(backoff, retry_after or 0.0)
