"""CapiClient: how each answer is classified, Retry-After and rate-limit headers, redaction."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dedupkit.delivery.client import (
    MAX_MESSAGE,
    BatchResult,
    CapiClient,
    Outcome,
    RateLimit,
    classify_response,
    parse_rate_limit,
    parse_retry_after,
    redact,
    token_fingerprint,
)

TOKEN = "pina_AbCdEf0123456789-secret"
NOW = 1_750_000_000.0
EVENT = {"event_name": "checkout", "event_id": "e", "event_time": 1, "action_source": "web"}


def answering(
    status: int,
    *,
    body: Any = None,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[int], BatchResult]:
    """Send ``count`` events to a transport that answers as given."""

    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    def send(count: int) -> BatchResult:
        with CapiClient(
            ad_account_id="549764982399", token=TOKEN, transport=httpx.MockTransport(handler)
        ) as client:
            return client.send([EVENT] * count)

    return send


def error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


PROCESSED = {"status": "processed", "error_message": None, "warning_message": None}


@pytest.mark.parametrize(
    ("status", "body", "text", "count", "outcome"),
    [
        (200, {"events": [PROCESSED] * 2}, None, 2, Outcome.DELIVERED),
        (200, None, "<html><body>Bad gateway</body></html>", 2, Outcome.SPLIT),
        (200, None, "<html><body>Bad gateway</body></html>", 1, Outcome.RETRYABLE),
        (200, None, "upstream said no", 3, Outcome.SPLIT),
        (200, {"events": [PROCESSED]}, None, 2, Outcome.RETRYABLE),  # a verdict missing
        (400, error(4196, "The request was invalid."), None, 2, Outcome.SPLIT),
        (400, error(4196, "The request was invalid."), None, 1, Outcome.PERMANENT),
        (413, None, "Request Entity Too Large", 5, Outcome.SPLIT),
        (413, None, "Request Entity Too Large", 1, Outcome.PERMANENT),
        (422, error(953, "invalid"), None, 2, Outcome.SPLIT),
        (401, error(2, "Authentication failed."), None, 2, Outcome.CREDENTIALS),
        (403, error(29, "Not permitted."), None, 1, Outcome.CREDENTIALS),
        (404, error(404, "Ad account not found."), None, 2, Outcome.CREDENTIALS),
        (408, None, "Request Timeout", 2, Outcome.RETRYABLE),
        (429, error(8, "rate limit"), None, 2, Outcome.RETRYABLE),
        (500, None, "oops", 2, Outcome.RETRYABLE),
        (503, error(4197, "ramped down"), None, 2, Outcome.RETRYABLE),
        (405, None, "Method Not Allowed", 2, Outcome.SPLIT),
        (418, None, "teapot", 1, Outcome.RETRYABLE),
    ],
)
def test_classification(
    status: int, body: Any, text: str | None, count: int, outcome: Outcome
) -> None:
    result = answering(status, body=body, text=text)(count)
    assert result.status_code == status
    assert [r.outcome for r in result.results] == [outcome] * count
    assert result.whole is outcome


def test_per_event_verdicts_keep_pinterests_messages() -> None:
    failed = {"status": "failed", "error_message": "Invalid click_id.", "warning_message": None}
    warned = {**PROCESSED, "warning_message": "Unknown user_data fields: x"}
    result = answering(200, body={"events": [warned, failed]})(2)
    assert [(r.outcome, r.message) for r in result.results] == [
        (Outcome.DELIVERED, "Unknown user_data fields: x"),
        (Outcome.PERMANENT, "Invalid click_id."),
    ]
    assert result.whole is None
    assert result.delivered == 1


@pytest.mark.parametrize(
    ("status", "setting"),
    [
        (401, "DEDUPKIT_CONVERSION_TOKEN"),
        (403, "DEDUPKIT_AD_ACCOUNT_ID"),
        (404, "DEDUPKIT_AD_ACCOUNT_ID"),
    ],
)
def test_credentials_failures_name_the_setting_to_fix(status: int, setting: str) -> None:
    result = answering(status, body=error(2, "Authentication failed."))(1)
    message = result.message or ""
    assert setting in message
    assert f"HTTP {status}" in message
    if status != 401:
        assert "549764982399" in message


def test_retry_after_as_delta_seconds_and_as_an_http_date() -> None:
    assert answering(429, body=error(8, "x"), headers={"Retry-After": "7"})(1).retry_after == 7.0
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    response = httpx.Response(503, headers={"Retry-After": date})
    assert parse_retry_after(response, now=NOW) == pytest.approx(90.0)
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert parse_retry_after(httpx.Response(503, headers={"Retry-After": past}), now=NOW) == 0.0
    # Through the client, with the real clock: a date two minutes ahead is about 120 s.
    ahead = email.utils.formatdate(None, usegmt=True)
    waited = answering(503, text="x", headers={"Retry-After": ahead})(1).retry_after
    assert waited is not None and 0.0 <= waited <= 1.0


@pytest.mark.parametrize("value", [b"soon", b"-5", b"1.5", "²".encode("latin-1"), b"9" * 40, b""])
def test_an_unreadable_retry_after_is_ignored(value: bytes) -> None:
    assert parse_retry_after(httpx.Response(429, headers=[(b"Retry-After", value)])) is None


def test_a_huge_retry_after_is_reported_as_given() -> None:
    # The sender caps it; the client reports what Pinterest said.
    result = answering(429, body=error(8, "x"), headers={"Retry-After": "31536000"})(1)
    assert result.retry_after == 31_536_000.0


def test_rate_limit_headers_are_parsed() -> None:
    headers = {
        "x-ratelimit-limit": "100, 100;w=1, 1000;w=60",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "12",
    }
    result = answering(200, body={"events": [PROCESSED]}, headers=headers)(1)
    assert result.rate_limit == RateLimit(limit=100, remaining=0, reset=12.0)
    assert result.rate_limit.exhausted
    epoch = httpx.Response(
        200, headers={"x-ratelimit-remaining": "3", "x-ratelimit-reset": "1750000030"}
    )
    assert parse_rate_limit(epoch, now=NOW) == RateLimit(None, 3, 30.0)
    assert not RateLimit(10, 3, 30.0).exhausted
    assert not RateLimit(10, 0, 0.0).exhausted
    assert parse_rate_limit(httpx.Response(200)) is None
    garbage = httpx.Response(200, headers={"x-ratelimit-remaining": "lots"})
    assert parse_rate_limit(garbage) == RateLimit(None, None, None)


def test_a_page_echoing_the_authorization_header_never_returns_the_token() -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title><style>h1{}</style></head><body>"
        f"<h1>Bad gateway</h1><pre>Authorization: Bearer {TOKEN}\nX-Token: {TOKEN}\n"
        f"token=&#112;ina_AbCdEf0123456789-secret</pre>" + "filler " * 500 + "</body></html>"
    )
    for status, count in ((502, 2), (200, 2), (200, 1), (400, 3), (401, 1)):
        result = answering(status, text=page)(count)
        text = repr(result)
        assert TOKEN not in text and "AbCdEf0123456789" not in text
        message = result.message or ""
        assert len(message) <= MAX_MESSAGE + 120  # advice + the redacted, cut page
        assert "<" not in message and "Bad gateway" in message


def test_json_messages_are_redacted_too() -> None:
    body = error(1, f"token {TOKEN} is invalid, header was 'Authorization: Bearer {TOKEN}'")
    failed = {"status": "failed", "error_message": f"bad {TOKEN}", "warning_message": None}
    for result in (answering(400, body=body)(1), answering(200, body={"events": [failed]})(1)):
        assert TOKEN not in repr(result)


def test_redact_rules() -> None:
    assert redact(f"a {TOKEN} b", [TOKEN]) == "a [redacted] b"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"
    assert redact('{"authorization": "Basic dXNlcjpwYXNz"}') == '{"authorization": "[redacted]"}'
    assert redact("someone else's pina_ZZZ123 leaked") == "someone else's [redacted] leaked"
    assert redact("url ?t=pina%5FAbC", ["pina_AbC/=x"]) == "url ?t=pina%5FAbC"
    assert redact("a%2Fb pina_x", ["a/b12345678"]) == "a%2Fb [redacted]"
    assert redact("x" * 1000, limit=20) == "x" * 19 + "…"
    assert redact("  many\n\n  spaces ") == "many spaces"


def test_network_errors_are_retryable_and_carry_no_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused (Authorization: Bearer {TOKEN})")

    with CapiClient(
        ad_account_id="1", token=TOKEN, transport=httpx.MockTransport(refuse)
    ) as client:
        result = client.send([EVENT])
    assert result.whole is Outcome.RETRYABLE and result.status_code is None
    assert TOKEN not in repr(result)


def test_token_id_is_a_short_fingerprint_not_the_token() -> None:
    client = CapiClient(ad_account_id="1", token=TOKEN)
    assert client.token_id == hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert client.token_id == token_fingerprint(TOKEN) != token_fingerprint(TOKEN + "x")
    assert TOKEN not in repr(client)
    client.close()


def test_classify_response_is_usable_on_its_own() -> None:
    response = httpx.Response(200, content=json.dumps({"events": [PROCESSED]}).encode())
    assert classify_response(response, 1).whole is Outcome.DELIVERED


def test_batches_outside_1_to_1000_are_a_programming_error() -> None:
    client = CapiClient(ad_account_id="1", token=TOKEN)
    with pytest.raises(ValueError, match="1 to 1000"):
        client.send([])
    with pytest.raises(ValueError, match="1 to 1000"):
        client.send([EVENT] * 1001)
    client.close()


class SlowProxy:
    """A real HTTP server on loopback that answers each request as a slow or broken proxy
    would: ``headers`` then ``body`` in ``pieces``, ``gap`` seconds apart."""

    def __init__(self, head: bytes, body: bytes, *, pieces: int = 1, gap: float = 0.0) -> None:
        self.head, self.body, self.pieces, self.gap = head, body, pieces, gap
        self.stopping = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                while len(rest) < length:
                    rest += conn.recv(65536)
                try:
                    conn.sendall(self.head)
                    step = max(1, len(self.body) // self.pieces)
                    for start in range(0, len(self.body), step):
                        if self.stopping.wait(self.gap):
                            return
                        conn.sendall(self.body[start : start + step])
                except OSError:
                    continue  # the client gave up

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.server.close()


def processed(count: int) -> bytes:
    return json.dumps({"events": [PROCESSED] * count}).encode()


def head(status: str, length: int, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def test_the_timeout_bounds_the_whole_request_not_each_read() -> None:
    body = processed(2)
    # Each piece comes well within the timeout; all of them take about 3.6 s.
    proxy = SlowProxy(head("200 OK", len(body)), body, pieces=12, gap=0.3)
    try:
        with CapiClient(ad_account_id="1", token=TOKEN, base_url=proxy.url, timeout=1.0) as c:
            started = time.monotonic()
            result = c.send([EVENT, EVENT])
            took = time.monotonic() - started
    finally:
        proxy.close()
    assert result.whole is Outcome.RETRYABLE and result.status_code is None
    assert "timed out" in (result.message or "")
    assert took < 2.0  # the deadline (1 s) plus scheduling, far from the 3.6 s answer


def test_a_prompt_answer_within_the_deadline_is_read_whole() -> None:
    body = processed(2)
    proxy = SlowProxy(head("200 OK", len(body)), body, pieces=3, gap=0.05)
    try:
        with CapiClient(ad_account_id="1", token=TOKEN, base_url=proxy.url, timeout=5.0) as c:
            assert c.send([EVENT, EVENT]).whole is Outcome.DELIVERED
    finally:
        proxy.close()


@pytest.mark.parametrize("count", [1, 3])
def test_a_corrupt_gzip_answer_is_a_retry_never_an_exception(count: int) -> None:
    corrupt = b"\x1f\x8b\x08\x00garbage that is not deflate" + TOKEN.encode()
    answer = head("200 OK", len(corrupt), "Content-Encoding: gzip")
    proxy = SlowProxy(answer, corrupt)
    try:
        with CapiClient(ad_account_id="1", token=TOKEN, base_url=proxy.url, timeout=5.0) as c:
            result = c.send([EVENT] * count)
    finally:
        proxy.close()
    assert [r.outcome for r in result.results] == [Outcome.RETRYABLE] * count
    assert "could not be decoded" in (result.message or "")
    assert TOKEN not in repr(result)


def test_a_valid_gzip_answer_is_decoded() -> None:
    body = gzip.compress(processed(2))
    proxy = SlowProxy(head("200 OK", len(body), "Content-Encoding: gzip"), body)
    try:
        with CapiClient(ad_account_id="1", token=TOKEN, base_url=proxy.url, timeout=5.0) as c:
            assert c.send([EVENT, EVENT]).whole is Outcome.DELIVERED
    finally:
        proxy.close()


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        CapiClient(ad_account_id="1", token=TOKEN, timeout=0)
