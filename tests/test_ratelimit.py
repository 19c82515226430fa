"""The events endpoint's per-client rate limit."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from dedupkit import ConfigurationError
from dedupkit.ratelimit import MAX_CLIENTS, RateLimiter, parse_rate, retry_after

from .conftest import CHROME_UA, AppFactory, queued


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_refill_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock)  # 3 at once, then one per 20 s
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(20.0)
    clock.now += 10
    assert limiter.take("a") == pytest.approx(10.0)
    clock.now += 10
    assert limiter.take("a") == 0
    assert limiter.take("b") == 0  # another client has its own bucket


def test_refused_attempts_do_not_dig_the_hole_deeper() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 1.0, clock=clock)
    limiter.take("a")
    for _ in range(100):
        limiter.take("a")
    clock.now += 1
    assert limiter.take("a") == 0


def test_memory_is_bounded_by_forgetting_the_least_recent_client() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 3600.0, max_clients=3, clock=clock)
    for client in ("a", "b", "c"):
        limiter.take(client)
    limiter.take("a")  # refused, and now the most recent
    limiter.take("d")  # "b" is forgotten
    assert len(limiter) == 3
    assert limiter.take("b") == 0
    assert limiter.take("a") > 0


def test_a_flood_of_addresses_stays_within_the_bound() -> None:
    limiter = RateLimiter(5, 1.0)
    for i in range(MAX_CLIENTS + 500):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == MAX_CLIENTS


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/minute", (120, 60.0)),
        ("5 per second", (5, 1.0)),
        ("1000/hours", (1000, 3600.0)),
        ("off", None),
        ("0", None),
    ],
)
def test_the_setting(text: str, rate: tuple[int, float] | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "10/fortnight", "-1/second", "1e9/second"])
def test_a_bad_setting_is_refused_at_start(make_app: AppFactory, text: str) -> None:
    with pytest.raises(ConfigurationError, match="DEDUPKIT_RATE_LIMIT"):
        make_app(RATE_LIMIT=text)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert retry_after(0.01) == 1
    assert retry_after(2.2) == 3


def post(app: Flask, ip: str, n: int) -> TestResponse:
    body = {"event_name": "search", "event_id": f"e-{n}", "data": {"search_query": "boots"}}
    return app.test_client().post(
        "/dedupkit/events",
        data=json.dumps(body),
        content_type="text/plain",
        headers={"User-Agent": CHROME_UA},
        environ_base={"REMOTE_ADDR": ip},
    )


def test_the_endpoint_answers_429_with_retry_after(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT="3/minute")
    answers = [post(app, "198.51.100.7", n) for n in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "20"
    assert "too many events" in refused.json["error"]
    assert post(app, "203.0.113.9", 9).status_code == 202
    assert len(queued(app)) == 4


def test_off_means_off(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT="off")
    assert all(post(app, "198.51.100.7", n).status_code == 202 for n in range(200))


def test_the_cdn_header_names_the_client(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT="1/minute", CLIENT_IP_HEADER="CF-Connecting-IP")
    client = app.test_client()
    body = json.dumps({"event_name": "search", "event_id": "e", "data": {}})
    for shopper, expected in (("192.0.2.1", 202), ("192.0.2.2", 202), ("192.0.2.1", 429)):
        answer = client.post(
            "/dedupkit/events",
            data=body,
            content_type="text/plain",
            headers={"User-Agent": CHROME_UA, "CF-Connecting-IP": shopper},
        )
        assert answer.status_code == expected
