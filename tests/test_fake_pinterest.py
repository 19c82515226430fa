"""FakePinterest over real loopback HTTP: validation, answers, faults, records, the stand-in tag."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from dedupkit.delivery.client import BatchResult, CapiClient, Outcome
from dedupkit.spec import load_request_schema, load_response_schema
from dedupkit.testing import (
    Conversion,
    FakePinterest,
    PageCall,
    RejectedRequest,
    RequestRecord,
    TagEvent,
    response_errors,
)

from .support.requirements import missing

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "pina_SECRET-token-1234567890"
ACCOUNT = "549764982399"
DAY = 24 * 3600


def capi_event(
    event_id: str, name: str = "checkout", *, event_time: float | None = None, **extra: Any
) -> dict[str, Any]:
    """A schema-valid CAPI event."""
    event: dict[str, Any] = {
        "event_name": name,
        "action_source": "web",
        "event_time": int(time.time() if event_time is None else event_time),
        "event_id": event_id,
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [hashlib.sha256(b"ada@example.com").hexdigest()],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {"currency": "USD", "value": "72.39", "order_id": "A-1001"},
    }
    event.update(extra)
    return event


def check_response(response: httpx.Response, request: httpx.Request | None = None) -> None:
    """Every answer of the CAPI endpoint must be one the official response schema allows."""
    if "/v5/" not in (request or response.request).url.path:
        return
    response.read()
    body = response.json()
    assert response_errors(body, response.status_code) == []
    if response.status_code == 422:
        assert response_errors(body["details"], 200) == []


class ValidatingTransport(httpx.BaseTransport):
    """Lets CapiClient's own requests go through :func:`check_response`."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.checked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        check_response(response, request)
        self.checked += 1
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def fake() -> Iterator[FakePinterest]:
    with FakePinterest(token=TOKEN, ad_account_id=ACCOUNT) as fake:
        yield fake


@pytest.fixture
def http(fake: FakePinterest) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fake.base_url, timeout=10, event_hooks={"response": [check_response]}
    ) as client:
        yield client


@pytest.fixture
def make_client(fake: FakePinterest) -> Iterator[Callable[..., CapiClient]]:
    clients: list[CapiClient] = []

    def make(**options: Any) -> CapiClient:
        options.setdefault("token", TOKEN)
        options.setdefault("timeout", 10.0)
        client = CapiClient(
            ad_account_id=ACCOUNT,
            base_url=fake.api_base_url,
            transport=ValidatingTransport(),
            **options,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., CapiClient]) -> CapiClient:
    return make_client()


EVENTS_PATH = f"/v5/ad_accounts/{ACCOUNT}/events"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post_events(http: httpx.Client, body: object, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return http.post(kwargs.pop("path", EVENTS_PATH), json=body, headers=headers, **kwargs)


def tag_report(http: httpx.Client, **report: Any) -> httpx.Response:
    """Report a pintrk call the way core.js does: a text/plain JSON POST."""
    report = {"kind": "track", "tag_id": "2612345678901", "url": "https://shop.example/", **report}
    return http.post(
        "/_fake/tag",
        content=json.dumps(report),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )


# -- lifecycle --------------------------------------------------------------------------------


def test_addresses_and_credentials(fake: FakePinterest) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert fake.api_base_url == fake.base_url + "/v5"
    assert fake.pintrk_src == fake.base_url + "/ct/core.js"
    assert (fake.token, fake.ad_account_id) == (TOKEN, ACCOUNT)
    assert TOKEN not in repr(fake)


def test_start_stop_restart_keeps_records() -> None:
    fake = FakePinterest(token=TOKEN, ad_account_id=ACCOUNT)
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.base_url
    fake.start()
    try:
        url = fake.api_base_url
        with CapiClient(ad_account_id=ACCOUNT, token=TOKEN, base_url=url) as capi:
            assert capi.send([capi_event("e-1")]).delivered == 1
    finally:
        fake.stop()
    assert not fake.running
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + f"/ad_accounts/{ACCOUNT}/events", json={}, timeout=2)
    with fake:
        with httpx.Client(base_url=fake.base_url) as http:
            assert post_events(http, {"data": [capi_event("e-2")]}).status_code == 200
        assert [e["event_id"] for e in fake.capi_events] == ["e-1", "e-2"]


@pytest.mark.parametrize(
    "options", [{"ad_account_id": "abc"}, {"ad_account_id": "1" * 19}, {"token": ""}]
)
def test_constructor_rejects_bad_credentials(options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        FakePinterest(**options)  # type: ignore[arg-type]


def test_stop_is_prompt_while_an_answer_is_delayed(fake: FakePinterest) -> None:
    fake.delay_next(60)
    outcome: list[object] = []

    def send() -> None:
        try:
            with httpx.Client(timeout=30) as http:
                outcome.append(
                    http.post(
                        fake.base_url + EVENTS_PATH, json={"data": [capi_event("e")]}, headers=AUTH
                    )
                )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert fake.wait_for_requests(1)
    started = time.monotonic()
    fake.stop()
    sender.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not sender.is_alive() and outcome


# -- valid requests ---------------------------------------------------------------------------


def test_valid_batch_is_processed_and_recorded(fake: FakePinterest, http: httpx.Client) -> None:
    events = [capi_event("e-1"), capi_event("e-2", "add_to_cart")]
    response = post_events(http, {"data": events})
    assert response.status_code == 200
    assert response.json() == {
        "num_events_received": 2,
        "num_events_processed": 2,
        "events": [{"status": "processed", "error_message": None, "warning_message": None}] * 2,
    }
    assert fake.capi_events == events
    (record,) = fake.requests
    assert isinstance(record, RequestRecord)
    assert (record.path, record.status, record.num_events, record.test) == (
        EVENTS_PATH,
        200,
        2,
        False,
    )
    assert abs(record.received_at - time.time()) < 60
    assert fake.rejected == [] and fake.test_events == []


def test_capi_client_delivers(fake: FakePinterest, client: CapiClient) -> None:
    result = client.send([capi_event("e-1"), capi_event("e-2")])
    assert result.status_code == 200
    assert [r.outcome for r in result.results] == [Outcome.DELIVERED] * 2
    assert [e["event_id"] for e in fake.capi_events] == ["e-1", "e-2"]


def test_duplicates_are_all_recorded(fake: FakePinterest, client: CapiClient) -> None:
    client.send([capi_event("e-1")])
    client.send([capi_event("e-1")])
    assert [e["event_id"] for e in fake.capi_events] == ["e-1", "e-1"]
    (conversion,) = fake.conversions()
    assert len(conversion.capi_events) == 2


def test_test_mode_is_answered_but_not_recorded(
    fake: FakePinterest, make_client: Callable[..., CapiClient]
) -> None:
    result = make_client(test_mode=True).send([capi_event("e-1")])
    assert [r.outcome for r in result.results] == [Outcome.DELIVERED]
    assert fake.capi_events == [] and fake.conversions() == []
    assert [e["event_id"] for e in fake.test_events] == ["e-1"]
    assert fake.requests[-1].test is True


def test_test_mode_is_validated_too(fake: FakePinterest, http: httpx.Client) -> None:
    bad = capi_event("e-1", custom_data={"value": 1})
    response = post_events(http, {"data": [bad]}, params={"test": "true"})
    assert response.status_code == 400
    assert fake.test_events == [] and fake.requests[-1].test is True


def test_unknown_user_data_field_is_a_warning(fake: FakePinterest, client: CapiClient) -> None:
    event = capi_event("e-1")
    event["user_data"]["opt_out_type"] = "LDP"
    result = client.send([event])
    assert result.results[0].outcome is Outcome.DELIVERED
    assert "opt_out_type" in (result.results[0].message or "")
    assert len(fake.capi_events) == 1


# -- refused requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "basic", "no-scheme"],
)
def test_bad_token_is_401(fake: FakePinterest, http: httpx.Client, headers: dict[str, str]) -> None:
    response = http.post(EVENTS_PATH, json={"data": [capi_event("e")]}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"code": 2, "message": "Authentication failed."}
    assert fake.capi_events == []
    (rejected,) = fake.rejected
    assert isinstance(rejected, RejectedRequest) and rejected.status == 401
    assert TOKEN not in repr(rejected)


def test_any_ad_account_exists_by_default(fake: FakePinterest, http: httpx.Client) -> None:
    response = post_events(http, {"data": [capi_event("e")]}, path="/v5/ad_accounts/123/events")
    assert response.status_code == 200
    assert [e["event_id"] for e in fake.capi_events] == ["e"]


def test_an_unknown_ad_account_is_404_when_the_fake_knows_its_accounts() -> None:
    with (
        FakePinterest(token=TOKEN, ad_account_ids={ACCOUNT}) as fake,
        httpx.Client(base_url=fake.base_url, event_hooks={"response": [check_response]}) as http,
    ):
        unknown = post_events(http, {"data": [capi_event("e")]}, path="/v5/ad_accounts/123/events")
        known = post_events(http, {"data": [capi_event("k")]})
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "Ad account not found."
    assert known.status_code == 200
    assert [e["event_id"] for e in fake.capi_events] == ["k"]
    assert [r.status for r in fake.rejected] == [404]


@pytest.mark.parametrize("account", ["abc", "1" * 19, "12a"])
def test_malformed_ad_account_is_400(fake: FakePinterest, http: httpx.Client, account: str) -> None:
    response = post_events(
        http, {"data": [capi_event("e")]}, path=f"/v5/ad_accounts/{account}/events"
    )
    assert response.status_code == 400 and response.json()["code"] == 4196
    assert fake.capi_events == []


def _without(key: str) -> dict[str, Any]:
    event = capi_event("e")
    del event[key]
    return event


INVALID_BODIES = {
    "numeric value": (
        {"data": [capi_event("e", custom_data={"value": 72.39})]},
        "$.data[0].custom_data.value: must be of type string or null",
    ),
    "missing event_id": ({"data": [_without("event_id")]}, "'event_id' is a required property"),
    "extra top-level key": (
        {"data": [capi_event("e")], "test": True},
        "$: Additional properties are not allowed ('test' was unexpected)",
    ),
    "extra event key": (
        {"data": [capi_event("e", advertiser_tracking_enabled=True)]},
        "'advertiser_tracking_enabled' was unexpected",
    ),
    "empty batch": ({"data": []}, "$.data: fails minItems 1"),
    "no user identifier": (
        {"data": [capi_event("e", user_data={"click_id": "dj0yJnU9"})]},
        "$.data[0].user_data: must have one of: em | hashed_maids | "
        "client_ip_address+client_user_agent",
    ),
    "em not an array": (
        {"data": [capi_event("e", user_data={"em": "ada@example.com"})]},
        "$.data[0].user_data.em: must be of type array",
    ),
    "event_time as a string": (
        {"data": [{**capi_event("e"), "event_time": "1733000000"}]},
        "$.data[0].event_time: must be of type integer",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_schema_invalid_body_is_400_and_not_recorded(
    fake: FakePinterest, http: httpx.Client, case: str
) -> None:
    body, expected = INVALID_BODIES[case]
    response = post_events(http, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == 4196
    assert expected in answer["message"]
    assert fake.capi_events == [] and fake.conversions() == []
    (rejected,) = fake.rejected
    assert rejected.status == 400 and rejected.body == body and rejected.reason == answer["message"]
    assert fake.requests[-1].status == 400


def test_validation_message_does_not_echo_values(http: httpx.Client) -> None:
    event = capi_event("e", custom_data={"value": 1234.5})
    event["user_data"] = {"em": "ada@example.com", "client_ip_address": 203}
    message = post_events(http, {"data": [event]}).json()["message"]
    assert "ada@example.com" not in message and "1234.5" not in message and "203" not in message


def test_many_violations_are_summarised(http: httpx.Client) -> None:
    body = {"data": [{"zz" + str(i): i for i in range(10)}]}
    message = post_events(http, body).json()["message"]
    assert message.count(";") == 5 and message.endswith("more")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b'{"data": []}', "text/plain")],
)
def test_unreadable_body_is_400(
    fake: FakePinterest, http: httpx.Client, content: bytes, content_type: str
) -> None:
    response = http.post(
        EVENTS_PATH, content=content, headers={**AUTH, "Content-Type": content_type}
    )
    assert response.status_code == 400 and response.json()["code"] == 4196
    assert fake.rejected[0].status == 400 and fake.capi_events == []


# -- per-event verdicts -----------------------------------------------------------------------


def test_mixed_per_event_statuses(fake: FakePinterest, http: httpx.Client) -> None:
    now = time.time()
    fake.fail_events(["e-injected"], message="Invalid content_ids.")
    events = [
        capi_event("e-ok", event_time=now - 6 * DAY),
        capi_event("e-old", event_time=now - 8 * DAY),
        capi_event("e-future", event_time=(now + 3600) * 1000),
        capi_event("e-injected"),
        capi_event("e-soon", event_time=now + 60),
    ]
    response = post_events(http, {"data": events})
    assert response.status_code == 200
    body = response.json()
    assert (body["num_events_received"], body["num_events_processed"]) == (5, 2)
    statuses = [e["status"] for e in body["events"]]
    assert statuses == ["processed", "failed", "failed", "failed", "processed"]
    old, future, injected = (body["events"][i]["error_message"] for i in (1, 2, 3))
    assert old.startswith(
        "Invalid event_timestamp parameter. Given timestamp is in the past. Current timestamp: "
    )
    assert old.endswith(f"Given event_timestamp: {int(now - 8 * DAY)}")
    assert "Given timestamp is in the future" in future
    assert injected == "Invalid content_ids."
    # Failed events are not counted.
    assert [e["event_id"] for e in fake.capi_events] == ["e-ok", "e-soon"]
    assert {c.event_id for c in fake.conversions()} == {"e-ok", "e-soon"}


def test_fail_events_with_a_predicate(fake: FakePinterest, client: CapiClient) -> None:
    fake.fail_events(lambda event: event["event_name"] == "lead")
    result = client.send([capi_event("a", "lead"), capi_event("b", "checkout")])
    assert [r.outcome for r in result.results] == [Outcome.PERMANENT, Outcome.DELIVERED]
    assert "fail_events" in (result.results[0].message or "")
    assert [e["event_id"] for e in fake.capi_events] == ["b"]


def test_fail_events_as_422(fake: FakePinterest, http: httpx.Client) -> None:
    fake.fail_events("e-bad", message="Invalid currency.", as_422=True)
    response = post_events(http, {"data": [capi_event("e-bad"), capi_event("e-ok")]})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == 953
    assert body["message"].startswith("The action could not be processed properly")
    assert body["details"] == {
        "num_events_received": 2,
        "num_events_processed": 1,
        "events": [
            {"status": "failed", "error_message": "Invalid currency.", "warning_message": None},
            {"status": "processed", "error_message": None, "warning_message": None},
        ],
    }
    assert [e["event_id"] for e in fake.capi_events] == ["e-ok"]


# -- injected request failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 4196, "The request was invalid."),
        (401, 2, "Authentication failed."),
        (403, 29, "You are not permitted to access that resource."),
        (429, 8, "This request exceeded a rate limit."),
        (
            503,
            4197,
            "The endpoint has been ramped down and is currently not accepting any traffic.",
        ),
        (500, 500, "Unexpected errors"),
    ],
)
def test_fail_next_answers_the_spec_error(
    fake: FakePinterest, http: httpx.Client, status: int, code: int, message: str
) -> None:
    fake.fail_next(status)
    response = post_events(http, {"data": [capi_event("e-1")]})
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["message"].startswith(message)
    assert "Retry-After" not in response.headers
    assert fake.capi_events == []
    assert fake.requests[-1].status == status
    # Only the next request fails.
    assert post_events(http, {"data": [capi_event("e-1")]}).status_code == 200


def test_fail_next_times_and_retry_after(fake: FakePinterest, http: httpx.Client) -> None:
    fake.fail_next(503, times=2, retry_after=2)
    statuses = []
    for _ in range(3):
        response = post_events(http, {"data": [capi_event("e-1")]})
        statuses.append((response.status_code, response.headers.get("Retry-After")))
    assert statuses == [(503, "2"), (503, "2"), (200, None)]
    assert len(fake.capi_events) == 1


def test_injected_422(fake: FakePinterest, http: httpx.Client) -> None:
    fake.fail_next(422)
    body = post_events(http, {"data": [capi_event("a"), capi_event("b")]}).json()
    assert body["code"] == 953
    assert body["details"]["num_events_processed"] == 0
    assert [e["status"] for e in body["details"]["events"]] == ["failed", "failed"]


@pytest.mark.parametrize("status", [200, 302, 600])
def test_fail_next_needs_an_error_status(fake: FakePinterest, status: int) -> None:
    with pytest.raises(ValueError):
        fake.fail_next(status)


def test_delay_next_makes_the_client_time_out(
    fake: FakePinterest, make_client: Callable[..., CapiClient]
) -> None:
    fake.delay_next(5)
    result = make_client(timeout=0.3).send([capi_event("e-1"), capi_event("e-2")])
    assert result.status_code is None
    assert [r.outcome for r in result.results] == [Outcome.RETRYABLE] * 2
    assert "timed out" in (result.results[0].message or "")
    # Pinterest processed the batch; only the answer was late. The resend is deduplicated.
    assert fake.wait_for_capi_events(2)
    assert make_client().send([capi_event("e-1")]).delivered == 1
    assert len(fake.capi_events) == 3
    assert sorted(len(c.capi_events) for c in fake.conversions()) == [1, 2]


def test_delay_next_only_delays(fake: FakePinterest, client: CapiClient) -> None:
    fake.delay_next(0.2, times=2)
    started = time.monotonic()
    for _ in range(3):
        assert client.send([capi_event("e")]).delivered == 1
    assert 0.4 <= time.monotonic() - started < 5


def test_reset_forgets_records_and_faults(fake: FakePinterest, http: httpx.Client) -> None:
    post_events(http, {"data": [capi_event("e-1")]})
    post_events(http, {"data": []})
    tag_report(http, event="checkout", data={"event_id": "e-1"})
    fake.fail_next(503)
    fake.fail_events("e-2")
    fake.reset()
    assert fake.capi_events == fake.tag_events == fake.requests == fake.rejected == []
    assert fake.conversions() == []
    assert post_events(http, {"data": [capi_event("e-2")]}).json()["num_events_processed"] == 1


# -- CapiClient classification against the fake ----------------------------------------------


def test_classify_200_mixed(fake: FakePinterest, client: CapiClient) -> None:
    fake.fail_events("bad", message="Invalid click_id.")
    result = client.send([capi_event("good"), capi_event("bad"), capi_event("old", event_time=1)])
    assert result.status_code == 200
    assert [(r.outcome, r.message) for r in result.results[:2]] == [
        (Outcome.DELIVERED, None),
        (Outcome.PERMANENT, "Invalid click_id."),
    ]
    assert result.results[2].outcome is Outcome.PERMANENT
    assert "Given timestamp is in the past" in (result.results[2].message or "")


def test_classify_422_details(fake: FakePinterest, client: CapiClient) -> None:
    fake.fail_events("bad", message="Invalid click_id.", as_422=True)
    result = client.send([capi_event("good"), capi_event("bad")])
    assert result.status_code == 422
    assert [(r.outcome, r.message) for r in result.results] == [
        (Outcome.DELIVERED, None),
        (Outcome.PERMANENT, "Invalid click_id."),
    ]


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome", "expected_retry_after"),
    [
        (429, 7, Outcome.RETRYABLE, 7.0),
        (429, None, Outcome.RETRYABLE, None),
        (503, 2, Outcome.RETRYABLE, 2.0),
        (500, None, Outcome.RETRYABLE, None),
        (400, None, Outcome.SPLIT, None),
        (401, None, Outcome.CREDENTIALS, None),
        (403, None, Outcome.CREDENTIALS, None),
        (404, None, Outcome.CREDENTIALS, None),
    ],
)
def test_classify_request_failures(
    fake: FakePinterest,
    client: CapiClient,
    status: int,
    retry_after: int | None,
    outcome: Outcome,
    expected_retry_after: float | None,
) -> None:
    fake.fail_next(status, retry_after=retry_after)
    result = client.send([capi_event("a"), capi_event("b")])
    assert result.status_code == status
    assert [r.outcome for r in result.results] == [outcome] * 2
    assert result.retry_after == expected_retry_after
    assert f"HTTP {status}" in (result.results[0].message or "")


def test_classify_real_refusals(
    fake: FakePinterest, make_client: Callable[..., CapiClient]
) -> None:
    bad_token = make_client(token="wrong-SECRET").send([capi_event("a")])
    assert (bad_token.status_code, bad_token.results[0].outcome) == (401, Outcome.CREDENTIALS)
    assert "DEDUPKIT_CONVERSION_TOKEN" in (bad_token.results[0].message or "")
    invalid = make_client().send([capi_event("a", custom_data={"value": 1})])
    assert (invalid.status_code, invalid.results[0].outcome) == (400, Outcome.PERMANENT)
    assert "custom_data.value" in (invalid.results[0].message or "")


def test_token_never_shows(fake: FakePinterest, make_client: Callable[..., CapiClient]) -> None:
    client = make_client()
    assert TOKEN not in repr(client) and TOKEN not in str(client)
    results: list[BatchResult] = []
    fake.fail_events("failed", as_422=True)
    results.append(client.send([capi_event("ok"), capi_event("failed")]))
    for status in (400, 401, 403, 429, 500, 503):
        fake.fail_next(status, retry_after=1)
        results.append(client.send([capi_event("x")]))
    results.append(client.send([capi_event("x", custom_data={"value": 1})]))
    wrong = make_client(token="wrong-SECRET-token")
    results.append(wrong.send([capi_event("x")]))
    fake.delay_next(5)
    results.append(make_client(timeout=0.2).send([capi_event("x")]))
    messages = [r.message or "" for result in results for r in result.results]
    assert len(messages) == 11 and all(messages[1:])
    for message in messages:
        assert TOKEN not in message and "wrong-SECRET" not in message
    assert TOKEN not in repr(results)


def test_rotating_the_token_refuses_the_old_one(
    fake: FakePinterest, make_client: Callable[..., CapiClient]
) -> None:
    old = make_client()
    assert old.send([capi_event("a")]).delivered == 1
    fake.token = "pina_NEW-token-0987654321"
    assert fake.token == "pina_NEW-token-0987654321"
    assert old.send([capi_event("b")]).status_code == 401
    assert make_client(token="pina_NEW-token-0987654321").send([capi_event("c")]).delivered == 1
    fake.set_token(TOKEN)
    assert old.send([capi_event("d")]).delivered == 1
    assert [e["event_id"] for e in fake.capi_events] == ["a", "c", "d"]


def test_a_poison_event_fails_every_request_that_holds_it(
    fake: FakePinterest, http: httpx.Client
) -> None:
    fake.poison("bad")
    fake.poison(lambda event: event["event_id"] == "huge", status=413)
    mixed = post_events(http, {"data": [capi_event("ok"), capi_event("bad")]})
    assert (mixed.status_code, mixed.json()["code"]) == (400, 4196)
    assert post_events(http, {"data": [capi_event("huge")]}).status_code == 413
    assert post_events(http, {"data": [capi_event("ok")]}).status_code == 200
    assert [e["event_id"] for e in fake.capi_events] == ["ok"]
    with pytest.raises(ValueError, match="4xx"):
        fake.poison("x", status=503)
    fake.reset()
    assert post_events(http, {"data": [capi_event("bad")]}).status_code == 200


def test_a_body_over_the_limit_is_413() -> None:
    with (
        FakePinterest(token=TOKEN, max_body_bytes=2000) as fake,
        httpx.Client(base_url=fake.base_url, event_hooks={"response": [check_response]}) as http,
    ):
        small = post_events(http, {"data": [capi_event("a")]})
        big = post_events(http, {"data": [capi_event(f"e{i}") for i in range(10)]})
    assert (small.status_code, big.status_code) == (200, 413)
    assert "2000 bytes" in big.json()["message"]
    assert [e["event_id"] for e in fake.capi_events] == ["a"]


def test_a_proxy_page_is_html_and_may_echo_the_headers(
    fake: FakePinterest, make_client: Callable[..., CapiClient]
) -> None:
    fake.proxy_page_next(200)
    fake.proxy_page_next(502, echo_headers=True)
    with httpx.Client(base_url=fake.base_url) as http:
        plain = post_events(http, {"data": [capi_event("a")]})
        echoed = post_events(http, {"data": [capi_event("a")]})
        after = post_events(http, {"data": [capi_event("a")]})
    assert (plain.status_code, plain.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert plain.text.startswith("<!DOCTYPE html>") and TOKEN not in plain.text
    assert echoed.status_code == 502 and f"Bearer {TOKEN}" in echoed.text
    assert after.status_code == 200 and after.json()["num_events_processed"] == 1
    assert [r.status for r in fake.requests] == [200, 502, 200]
    assert len(fake.capi_events) == 1


def test_every_answer_carries_rate_limit_headers_and_the_limit_is_enforced(
    fake: FakePinterest, http: httpx.Client
) -> None:
    first = post_events(http, {"data": [capi_event("a")]})
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-remaining"] == "4999"
    assert 0 < int(first.headers["x-ratelimit-reset"]) <= 60
    refused = post_events(http, {"data": [capi_event("a")]}, headers={"Authorization": "x"})
    assert (refused.status_code, refused.headers["x-ratelimit-remaining"]) == (401, "4998")

    fake.set_rate_limit(2, window=30)
    answers = [post_events(http, {"data": [capi_event(f"w{i}")]}) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
    assert answers[2].headers["Retry-After"] == answers[2].headers["x-ratelimit-reset"]
    assert 29 <= int(answers[2].headers["Retry-After"]) <= 30
    assert {e["event_id"] for e in fake.capi_events} == {"a", "w0", "w1"}


def test_the_noscript_pixel_is_a_tag_event_that_pairs_with_capi(
    fake: FakePinterest, client: CapiClient
) -> None:
    with httpx.Client() as http:
        hit = http.get(
            fake.pixel_url,
            params={
                "tid": "2612345678901",
                "event": "checkout",
                "ed[value]": "10.00",
                "ed[event_id]": "order-7",
                "noscript": "1",
            },
            headers={"Referer": "https://shop.example/thanks"},
        )
        page = http.get(fake.pixel_url, params={"tid": "2612345678901", "noscript": "1"})
    assert (hit.status_code, hit.headers["Content-Type"]) == (200, "image/gif")
    assert page.status_code == 200
    [tag] = fake.tag_events
    assert (tag.tag_id, tag.event_name, tag.event_id, tag.page_url) == (
        "2612345678901",
        "checkout",
        "order-7",
        "https://shop.example/thanks",
    )
    assert tag.data == {"value": "10.00", "event_id": "order-7"}
    assert len(fake.page_calls) == 1
    client.send([capi_event("order-7")])
    [conversion] = fake.conversions()
    assert conversion.sources == {"tag", "capi"}


# -- stand-in tag reports and conversions -----------------------------------------------------


def test_tag_report_is_recorded(fake: FakePinterest, http: httpx.Client) -> None:
    response = tag_report(
        http,
        event="AddToCart",
        data={"event_id": "e-1", "value": 10, "currency": "USD"},
        url="https://shop.example/p/1?epik=abc",
        epik="abc",
        consent=True,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    (event,) = fake.tag_events
    assert event == TagEvent(
        tag_id="2612345678901",
        event_name="AddToCart",
        event_id="e-1",
        data={"event_id": "e-1", "value": 10, "currency": "USD"},
        page_url="https://shop.example/p/1?epik=abc",
        epik="abc",
        consent=True,
        received_at=event.received_at,
    )
    assert fake.capi_events == [] and fake.page_calls == []


def test_page_report_is_recorded_apart(fake: FakePinterest, http: httpx.Client) -> None:
    assert tag_report(http, kind="page", data={"page_name": "home"}).status_code == 204
    (call,) = fake.page_calls
    assert isinstance(call, PageCall)
    assert (call.tag_id, call.data, call.epik, call.consent) == (
        "2612345678901",
        {"page_name": "home"},
        None,
        None,
    )
    assert fake.tag_events == [] and fake.conversions() == []


@pytest.mark.parametrize(
    "content",
    ["not json", "[1]", '{"kind": "track"}', '{"kind": "track", "event": ""}', '{"kind": "x"}'],
)
def test_malformed_tag_report_is_400(fake: FakePinterest, http: httpx.Client, content: str) -> None:
    response = http.post("/_fake/tag", content=content)
    assert response.status_code == 400 and "error" in response.json()
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert fake.tag_events == [] and fake.page_calls == []


def test_tag_report_preflight_is_allowed(http: httpx.Client) -> None:
    response = http.options(
        "/_fake/tag",
        headers={"Origin": "http://127.0.0.1:5000", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code < 300
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_conversions_merge_tag_and_capi(
    fake: FakePinterest, http: httpx.Client, client: CapiClient
) -> None:
    tag_report(http, event="AddToCart", data={"event_id": "e-1"})
    client.send([capi_event("e-1", "add_to_cart"), capi_event("e-2", "checkout")])
    tag_report(http, event="pagevisit", data={"event_id": "e-3"})
    client.send([capi_event("e-1", "add_to_cart")])  # a resend: still one conversion
    tag_report(http, event="checkout", data={"event_id": "e-4"})
    client.send([capi_event("e-4", "add_to_cart")])  # same id, another event: not merged
    tag_report(http, event="MyThing", data={"event_id": "e-5"})
    tag_report(http, event="signup")
    tag_report(http, event="signup", data={"event_id": ""})

    conversions = fake.conversions()
    assert all(isinstance(c, Conversion) for c in conversions)
    summary = [
        (c.event_name, c.event_id, c.sources, len(c.tag_events), len(c.capi_events))
        for c in conversions
    ]
    assert summary == [
        ("add_to_cart", "e-1", {"tag", "capi"}, 1, 2),
        ("checkout", "e-2", {"capi"}, 0, 1),
        ("page_visit", "e-3", {"tag"}, 1, 0),
        ("checkout", "e-4", {"tag"}, 1, 0),
        ("add_to_cart", "e-4", {"capi"}, 0, 1),
        ("MyThing", "e-5", {"tag"}, 1, 0),
        ("signup", None, {"tag"}, 1, 0),
        ("signup", None, {"tag"}, 1, 0),
    ]
    merged = conversions[0]
    assert merged.tag_events[0].event_name == "AddToCart"
    assert merged.capi_events[0]["event_name"] == "add_to_cart"


def test_state_summarises(fake: FakePinterest, http: httpx.Client, client: CapiClient) -> None:
    tag_report(http, event="Checkout", data={"event_id": "e-1"})
    tag_report(http, kind="page")
    client.send([capi_event("e-1"), capi_event("e-2")])
    post_events(http, {"data": []})
    response = http.get("/_fake/state")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    state = response.json()
    assert state["counts"] == {
        "capi_events": 2,
        "tag_events": 1,
        "page_calls": 1,
        "test_events": 0,
        "requests": 2,
        "rejected": 1,
        "tag_blocked": 0,
        "conversions": 2,
        "deduplicated": 1,
    }
    assert state["conversions"] == [
        {
            "event_name": "checkout",
            "event_id": "e-1",
            "sources": ["capi", "tag"],
            "tag_events": 1,
            "capi_events": 1,
        },
        {
            "event_name": "checkout",
            "event_id": "e-2",
            "sources": ["capi"],
            "tag_events": 0,
            "capi_events": 1,
        },
    ]
    assert [(r["status"], r["num_events"]) for r in state["requests"]] == [(200, 2), (400, 0)]
    assert TOKEN not in response.text


def test_records_are_copies(fake: FakePinterest, http: httpx.Client, client: CapiClient) -> None:
    client.send([capi_event("e-1")])
    tag_report(http, event="checkout", data={"event_id": "e-1", "value": "1"})
    fake.capi_events[0]["event_id"] = "changed"
    fake.tag_events[0].data["value"] = "changed"
    fake.conversions()[0].capi_events[0]["event_id"] = "changed"
    fake.requests.clear()
    assert fake.capi_events[0]["event_id"] == "e-1"
    assert fake.tag_events[0].data["value"] == "1"
    assert fake.conversions()[0].sources == {"tag", "capi"}
    assert len(fake.requests) == 1


# -- waiting ----------------------------------------------------------------------------------


def test_wait_for_times_out(fake: FakePinterest) -> None:
    started = time.monotonic()
    assert fake.wait_for_capi_events(1, timeout=0.2) is False
    assert fake.wait_for_tag_events(1, timeout=0.1) is False
    assert 0.3 <= time.monotonic() - started < 3


def test_wait_for_wakes_on_records(fake: FakePinterest, client: CapiClient) -> None:
    sender = threading.Thread(target=client.send, args=([capi_event("a"), capi_event("b")],))
    sender.start()
    try:
        assert fake.wait_for_capi_events(2, timeout=10)
        assert fake.wait_for_requests(1, timeout=10)
    finally:
        sender.join()
    assert len(fake.capi_events) == 2


def test_wait_for_tag_events(fake: FakePinterest) -> None:
    def report() -> None:
        with httpx.Client(base_url=fake.base_url) as http:
            tag_report(http, event="lead", data={"event_id": "x"})

    reporter = threading.Thread(target=report)
    reporter.start()
    try:
        assert fake.wait_for_tag_events(1, timeout=10)
    finally:
        reporter.join()


def test_wait_for_rechecks_outside_state(fake: FakePinterest) -> None:
    flag = threading.Event()
    timer = threading.Timer(0.1, flag.set)
    timer.start()
    try:
        assert fake.wait_for(flag.is_set, timeout=10)
    finally:
        timer.cancel()


# -- core.js ----------------------------------------------------------------------------------


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        missing(f"{binary} is not installed")
    return path


@pytest.fixture
def core_js(fake: FakePinterest, tmp_path: Path) -> Path:
    response = httpx.get(fake.pintrk_src)
    assert response.status_code == 200
    path = tmp_path / "core.js"
    path.write_text(response.text)
    return path


def test_core_js_is_served(fake: FakePinterest, http: httpx.Client) -> None:
    response = http.get("/ct/core.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/javascript")
    assert response.headers["Cache-Control"] == "no-cache"
    assert f'var REPORT_URL = "{fake.base_url}/_fake/tag";' in response.text
    assert "__FAKE_PINTEREST_REPORT_URL__" not in response.text
    assert "document.cookie =" not in response.text


def test_core_js_is_valid_es5(core_js: Path) -> None:
    node = need("node")
    subprocess.run([node, "--check", str(core_js)], check=True, capture_output=True)
    # ES5 only: parse with the acorn that node bundles, limited to ecmaVersion 5.
    script = (
        "let acorn;"
        "try { acorn = require('internal/deps/acorn/acorn/dist/acorn'); }"
        "catch (e) { process.exit(3); }"
        "acorn.parse(require('fs').readFileSync(process.argv[1], 'utf8'), {ecmaVersion: 5});"
    )
    result = subprocess.run(
        [node, "--expose-internals", "--no-warnings", "-e", script, str(core_js)],
        capture_output=True,
        text=True,
    )
    if result.returncode == 3:
        pytest.skip("this node does not expose its bundled acorn")
    assert result.returncode == 0, result.stderr


# Runs core.js in a vm context shaped like a page that has the official base code, queued calls
# before it loaded, then calls after. Beacons (or fetch) really POST to the fake, one at a time.
NODE_PAGE = r"""
const vm = require('vm');
const fs = require('fs');
const [source, useBeacon, search, cookie] = process.argv.slice(1);
let chain = Promise.resolve();
const fetchOptions = [];
function post(url, body) {
  chain = chain.then(() => fetch(url, {method: 'POST', body,
                                       headers: {'Content-Type': 'text/plain;charset=UTF-8'}}));
  return chain;
}
const window = {
  location: {href: 'https://shop.example/p/1' + search, search},
  document: {cookie},
  navigator: useBeacon === '1'
    ? {sendBeacon: (url, body) => { post(url, body); return true; }}
    : {},
};
if (useBeacon !== '1') {
  window.fetch = (url, options) => { fetchOptions.push(options); return post(url, options.body); };
}
window.window = window;
vm.createContext(window);
vm.runInContext(`
  window.pintrk = function () { window.pintrk.queue.push(Array.prototype.slice.call(arguments)); };
  window.pintrk.queue = []; window.pintrk.version = '3.0';
  var stub = window.pintrk;
  pintrk('load', 2612345678901, {em: 'a@b.c'});
  pintrk('page');
  pintrk('track', 'AddToCart', {event_id: 'e-1', value: 10});
`, window);
vm.runInContext(fs.readFileSync(source, 'utf8'), window);
vm.runInContext(`
  var thrown = [];
  [ ['track', 'checkout', {event_id: 'e-2', line_items: [{product_id: 'SKU-1'}]}],
    ['bogus', 1], [], ['track'], ['track', 'x', {toJSON: function () { throw 1; }}],
    ['constructor'], ['setconsent', false] ].forEach(function (args) {
    try { pintrk.apply(null, args); } catch (e) { thrown.push(String(e)); }
  });
  stub('track', 'lead', {event_id: 'e-3'});
  pintrk('track', 'custom');
`, window);
chain.then(() => {
  console.log(JSON.stringify({thrown: window.thrown, fetchOptions,
                              marker: window.pintrk.fakePinterest === true}));
}, (error) => { console.error(error); process.exit(1); });
"""


def run_page(core_js: Path, *, beacon: bool, search: str, cookie: str) -> dict[str, Any]:
    node = need("node")
    result = subprocess.run(
        [node, "-e", NODE_PAGE, str(core_js), "1" if beacon else "0", search, cookie],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_core_js_replays_the_queue_and_reports(fake: FakePinterest, core_js: Path) -> None:
    output = run_page(
        core_js, beacon=True, search="?x=1&epik=dj0yJnU9%3D", cookie="a=1; _epik=from-cookie"
    )
    assert output["thrown"] == [] and output["marker"] is True
    assert fake.wait_for_tag_events(4, timeout=10)
    events = fake.tag_events
    # The call whose data cannot be serialised is dropped, without throwing.
    assert [(e.event_name, e.event_id, e.consent) for e in events] == [
        ("AddToCart", "e-1", None),
        ("checkout", "e-2", None),
        ("lead", "e-3", False),
        ("custom", None, False),
    ]
    first = events[0]
    assert first.tag_id == "2612345678901"
    assert first.data == {"event_id": "e-1", "value": 10}
    assert first.page_url == "https://shop.example/p/1?x=1&epik=dj0yJnU9%3D"
    assert {e.epik for e in events} == {"dj0yJnU9="}  # the URL wins over the cookie
    assert events[1].data["line_items"] == [{"product_id": "SKU-1"}]
    (page,) = fake.page_calls
    assert page.tag_id == "2612345678901" and page.epik == "dj0yJnU9="
    assert {c.event_id for c in fake.conversions()} >= {"e-1", "e-2", "e-3"}


def test_core_js_falls_back_to_fetch_and_reads_the_cookie(
    fake: FakePinterest, core_js: Path
) -> None:
    output = run_page(core_js, beacon=False, search="", cookie="_epik=from%20cookie; b=2")
    assert fake.wait_for_tag_events(4, timeout=10)
    assert {e.epik for e in fake.tag_events} == {"from cookie"}
    assert output["fetchOptions"]
    for options in output["fetchOptions"]:
        assert options["keepalive"] is True and options["mode"] == "no-cors"
        assert options["headers"] == {"Content-Type": "text/plain"}


def test_core_js_without_epik(fake: FakePinterest, core_js: Path) -> None:
    run_page(core_js, beacon=True, search="?q=1", cookie="")
    assert fake.wait_for_tag_events(4, timeout=10)
    assert {e.epik for e in fake.tag_events} == {None}


# -- the spec package, the extra, the command line --------------------------------------------


def test_spec_schemas_load_once_and_are_valid() -> None:
    assert load_request_schema() is load_request_schema()
    assert load_response_schema() is load_response_schema()
    for schema in (load_request_schema(), load_response_schema()):
        Draft202012Validator.check_schema(schema)
        assert schema["x-source"]["commit"] == "c05b18971472342ebdf4bafc15fea8a91c78bf79"
    source = (ROOT / "dedupkit" / "spec" / "SOURCE.md").read_text()
    assert "copied" in source.lower() and "shared spec" in source


def test_response_errors_catches_bad_bodies() -> None:
    assert response_errors({"num_events_received": 1}) != []
    assert response_errors({"code": "8", "message": "x"}, 429) != []
    assert response_errors({"code": 953, "message": "x"}, 422) != []
    assert response_errors({"code": 953, "message": "x", "details": {}}, 422) == []


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_missing_jsonschema_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['jsonschema'] = None\n"
        "try:\n    import dedupkit.testing\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert "pip install 'flask-dedupkit[testing]'" in result.stdout, result.stderr


def test_command_line_runs_the_fake(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w") as stderr:
        run_command_line(stderr)


def run_command_line(stderr: Any) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dedupkit.testing",
            "--port",
            "0",
            "--token",
            "cli-token",
            "--ad-account-id",
            "123",
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=_env(),
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in process.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read_lines)
    reader.start()
    try:
        printed = {}
        while "Ctrl-C" not in printed:
            line = lines.get(timeout=30)
            key, _, value = line.strip().partition(" ")
            printed[key] = value.strip()
        assert printed["token"] == "cli-token"
        assert printed["pintrk_src"].endswith("/ct/core.js")
        url = printed["api_base_url"] + "/ad_accounts/123/events"
        response = httpx.post(
            url, json={"data": [capi_event("e")]}, headers={"Authorization": "Bearer cli-token"}
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        if process.stdout:
            process.stdout.close()
