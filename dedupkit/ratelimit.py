"""A per-client token bucket for the public events endpoint, in this process's memory.

``DEDUPKIT_RATE_LIMIT = "120/minute"`` lets each client IP report a burst of 120 events and
then 2 a second; ``"off"`` turns the limit off. Memory is bounded: the least recently seen
clients are forgotten past :data:`MAX_CLIENTS` (a forgotten client starts with a full bucket,
which is the generous error). Each process counts on its own; several hosts share a limit with
Flask-Limiter on Redis instead (see SECURITY.md).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .errors import ConfigurationError

#: Most clients remembered at once: about 100 bytes each.
MAX_CLIENTS = 10_000
_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d{1,9})\s*(?:/|per)\s*(second|minute|hour)s?\s*$", re.I)
_OFF = frozenset({"off", "none", "0", "false", "no"})


class RateLimiter:
    """Token buckets of ``burst`` tokens refilled at ``burst / period`` per second, per key."""

    def __init__(
        self,
        burst: int,
        period: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or period <= 0 or max_clients < 1:
            raise ValueError("burst, period and max_clients must be positive")
        self.burst = burst
        self.period = period
        self._per_second = burst / period
        self._max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (tokens left, when counted); most recently seen last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token of ``key``: 0 when allowed, else the seconds until one is back."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - then) * self._per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / self._per_second
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def parse_rate(value: str | None) -> tuple[int, float] | None:
    """``"120/minute"`` as ``(120, 60.0)``; ``None`` for ``"off"``.

    :raises ConfigurationError: naming the setting and the accepted forms.
    """
    if value is None or value.strip().lower() in _OFF:
        return None
    match = _RATE.match(value)
    if not match or int(match.group(1)) < 1:
        raise ConfigurationError(
            f"DEDUPKIT_RATE_LIMIT must look like '120/minute' (per second, minute or hour) "
            f"or be 'off', got {value[:40]!r}"
        )
    return int(match.group(1)), _PERIODS[match.group(2).lower()]


def limiter_for(setting: str | None) -> RateLimiter | None:
    """The limiter ``DEDUPKIT_RATE_LIMIT`` asks for, or ``None`` when it is off."""
    rate = parse_rate(setting)
    return None if rate is None else RateLimiter(*rate)


def retry_after(wait: float) -> int:
    """Whole seconds for a ``Retry-After`` header: at least 1."""
    return max(1, math.ceil(wait))
