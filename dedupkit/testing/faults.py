"""Fault injection for the fake Conversions API: whole-request failures, failed events,
poison events, a proxy's pages, delays."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Chooses the events to fail, given each event dict of a batch.
EventPredicate = Callable[[Mapping[str, Any]], bool]
#: One event id, several, or a predicate.
EventSelector = str | Iterable[str] | EventPredicate

DEFAULT_EVENT_FAILURE = "The event was rejected (injected by FakePinterest.fail_events)."


@dataclass(frozen=True, slots=True)
class RequestFailure:
    """An injected answer for a whole request."""

    status: int
    #: The ``Retry-After`` header value, if any.
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class EventFailure:
    """Events matching ``matches`` come back ``failed`` with ``message``."""

    matches: EventPredicate
    message: str
    #: Answer the batch with a 422 ``DetailedError`` instead of a 200.
    as_422: bool = False


@dataclass(frozen=True, slots=True)
class Poison:
    """A request holding an event matching ``matches`` is refused as a whole with ``status``."""

    matches: EventPredicate
    status: int


@dataclass(frozen=True, slots=True)
class ProxyPage:
    """An HTML page answered by something in front of Pinterest."""

    status: int
    #: Put the request's headers (``Authorization`` included) in the page, as some do.
    echo_headers: bool


class Faults:
    """The pending faults; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: deque[RequestFailure] = deque()
        self._delays: deque[float] = deque()
        self._events: list[EventFailure] = []
        self._poisons: list[Poison] = []
        self._pages: deque[ProxyPage] = deque()

    def fail_next(
        self, status: int, times: int = 1, retry_after: float | str | None = None
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"fail_next needs an error status (4xx or 5xx), got {status}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        header = None
        if retry_after is not None:
            # Retry-After takes whole seconds (or an HTTP date, passed as a string).
            header = retry_after if isinstance(retry_after, str) else str(math.ceil(retry_after))
        with self._lock:
            self._requests.extend([RequestFailure(status, header)] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        if seconds < 0 or times < 1:
            raise ValueError("delay_next needs seconds >= 0 and times >= 1")
        with self._lock:
            self._delays.extend([float(seconds)] * times)

    def fail_events(self, selector: EventSelector, message: str, as_422: bool) -> None:
        with self._lock:
            self._events.append(EventFailure(_predicate(selector), message, as_422))

    def poison(self, selector: EventSelector, status: int) -> None:
        if not 400 <= status <= 499:
            raise ValueError(f"poison needs a 4xx status, got {status}")
        with self._lock:
            self._poisons.append(Poison(_predicate(selector), status))

    def proxy_page_next(self, status: int, times: int, echo_headers: bool) -> None:
        if not 200 <= status <= 599 or times < 1:
            raise ValueError("proxy_page_next needs a status from 200 to 599 and times >= 1")
        with self._lock:
            self._pages.extend([ProxyPage(status, echo_headers)] * times)

    def take_proxy_page(self) -> ProxyPage | None:
        with self._lock:
            return self._pages.popleft() if self._pages else None

    def poisoned(self, events: Iterable[Mapping[str, Any]]) -> Poison | None:
        """The first poison rule some event of ``events`` matches, if any."""
        with self._lock:
            rules = list(self._poisons)
        return next((rule for event in events for rule in rules if rule.matches(event)), None)

    def take_request_failure(self) -> RequestFailure | None:
        with self._lock:
            return self._requests.popleft() if self._requests else None

    def take_delay(self) -> float:
        with self._lock:
            return self._delays.popleft() if self._delays else 0.0

    def event_failure(self, event: Mapping[str, Any]) -> EventFailure | None:
        """The first rule that fails ``event``, if any."""
        with self._lock:
            rules = list(self._events)
        return next((rule for rule in rules if rule.matches(event)), None)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._delays.clear()
            self._events.clear()
            self._poisons.clear()
            self._pages.clear()


def _predicate(selector: EventSelector) -> EventPredicate:
    if callable(selector):
        return selector
    ids = frozenset([selector] if isinstance(selector, str) else (str(i) for i in selector))
    return lambda event: event.get("event_id") in ids
