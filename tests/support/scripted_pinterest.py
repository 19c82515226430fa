"""A Conversions API that answers on a simulated clock, for outage models and scenarios.

It sits under a real :class:`~dedupkit.client.CapiClient` as its httpx transport, so every
answer goes through the real client: its classification, its deadline, its decoding. Time is
the caller's (:attr:`ScriptedPinterest.now`), so a three-day outage takes no time at all.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from dedupkit.delivery.client import CapiClient

ACCOUNT = "549764982399"
#: Every kind of answer the model may script.
KINDS = (
    "ok",
    "event_errors",  # 200 with a failed verdict for events whose id ends in 7
    "400",
    "401",
    "403",
    "404",
    "413",
    "429",
    "429_retry_after",
    "503",
    "garbage_200",
    "corrupt_gzip",
    "timeout",  # the request reached Pinterest, which processed it; the answer never came
    "reset",  # the connection dropped before Pinterest saw anything
)


@dataclass
class Received:
    """One event Pinterest processed: when, and under which request."""

    event_id: str
    event_time: float
    at: float


@dataclass
class ScriptedPinterest:
    """Answers by script, then by outage, then normally; keeps what it processed."""

    now: float
    #: Tokens Pinterest accepts (others get 401).
    tokens: set[str] = field(default_factory=set)
    #: ``(kind, until)``: answer ``kind`` to every request before ``until``.
    outage: tuple[str, float] | None = None
    script: deque[tuple[str, float]] = field(default_factory=deque)
    processed: list[Received] = field(default_factory=list)
    #: Requests that carried each event id (whatever the answer).
    carried: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, token: str, *, timeout: float = 5.0) -> CapiClient:
        return CapiClient(
            ad_account_id=ACCOUNT,
            token=token,
            base_url="https://pinterest.invalid/v5",
            timeout=timeout,
            transport=httpx.MockTransport(self.handle),
        )

    def next_answer(self, kind: str, retry_after: float = 0.0) -> None:
        self.script.append((kind, retry_after))

    def handle(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["data"]
        token = request.headers["Authorization"].removeprefix("Bearer ")
        with self.lock:
            self.requests += 1
            kind, retry_after = self._kind(token)
            for event in events:
                self.carried[event["event_id"]] += 1
        return _ANSWERS[kind](self, events, retry_after)

    def _kind(self, token: str) -> tuple[str, float]:
        if self.script:
            return self.script.popleft()
        if self.outage is not None and self.now < self.outage[1]:
            return self.outage[0], 0.0
        if token not in self.tokens:
            return "401", 0.0
        return "ok", 0.0

    def process(self, events: list[dict[str, object]], fail: Callable[[str], bool]) -> bytes:
        verdicts = []
        for event in events:
            event_id = str(event["event_id"])
            if fail(event_id):
                verdicts.append({"status": "failed", "error_message": "Invalid event_time"})
            else:
                self.processed.append(Received(event_id, float(event["event_time"]), self.now))  # type: ignore[arg-type]
                verdicts.append({"status": "processed"})
        return json.dumps({"events": verdicts}).encode()


def _ok(p: ScriptedPinterest, events: list[dict[str, object]], _: float) -> httpx.Response:
    with p.lock:
        return httpx.Response(200, content=p.process(events, lambda _: False))


def _event_errors(
    p: ScriptedPinterest, events: list[dict[str, object]], _: float
) -> httpx.Response:
    with p.lock:
        return httpx.Response(200, content=p.process(events, lambda i: i.endswith("7")))


def _status(
    status: int,
) -> Callable[[ScriptedPinterest, list[dict[str, object]], float], httpx.Response]:
    def answer(
        p: ScriptedPinterest, events: list[dict[str, object]], retry_after: float
    ) -> httpx.Response:
        headers = (
            {"Retry-After": str(int(retry_after))} if retry_after and status in (429, 503) else {}
        )
        return httpx.Response(status, json={"code": status, "message": "scripted"}, headers=headers)

    return answer


def _retry_after(
    p: ScriptedPinterest, events: list[dict[str, object]], wait: float
) -> httpx.Response:
    return _status(429)(p, events, wait or 31_536_000)


def _garbage(p: ScriptedPinterest, events: list[dict[str, object]], _: float) -> httpx.Response:
    return httpx.Response(200, text="<html>upstream</html>", headers={"Content-Type": "text/html"})


def _corrupt(p: ScriptedPinterest, events: list[dict[str, object]], _: float) -> httpx.Response:
    # Pinterest processed the batch; the proxy mangled the compressed answer.
    with p.lock:
        p.process(events, lambda _: False)
    return httpx.Response(
        200, content=b"\x1f\x8b\x08\x00broken", headers={"Content-Encoding": "gzip"}
    )


def _timeout(p: ScriptedPinterest, events: list[dict[str, object]], _: float) -> httpx.Response:
    with p.lock:
        p.process(events, lambda _: False)
    raise httpx.ReadTimeout("scripted: the answer never came")


def _reset(p: ScriptedPinterest, events: list[dict[str, object]], _: float) -> httpx.Response:
    raise httpx.RemoteProtocolError("scripted: connection reset by peer")


_ANSWERS: dict[
    str, Callable[[ScriptedPinterest, list[dict[str, object]], float], httpx.Response]
] = {
    "ok": _ok,
    "event_errors": _event_errors,
    "400": _status(400),
    "401": _status(401),
    "403": _status(403),
    "404": _status(404),
    "413": _status(413),
    "429": _status(429),
    "429_retry_after": _retry_after,
    "503": _status(503),
    "garbage_200": _garbage,
    "corrupt_gzip": _corrupt,
    "timeout": _timeout,
    "reset": _reset,
}
