"""The routes: the snippet, and the endpoint browser beacons report to."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from dedupkit.state import get_state

from ..conftest import CHROME_UA, AppFactory, kit_for, queued, shopper_request

PAGE = "https://shop.example/products/boots"


def beacon(app: Flask, body: Any, *, content_type: str = "text/plain", **kw: Any) -> TestResponse:
    headers = {"User-Agent": CHROME_UA, **kw.pop("headers", {})}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    client = app.test_client()
    for name, value in kw.pop("cookies", {}).items():
        client.set_cookie(name, value, domain="shop.example")
    return client.post(
        "/dedupkit/events",
        data=data,
        content_type=content_type,
        headers=headers,
        base_url="https://shop.example",
        **kw,
    )


def add_to_cart(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_name": "add_to_cart",
        "event_id": "4f1d2c3b-0000-4000-8000-000000000001",
        "event_time": int(time.time()),
        "event_source_url": PAGE,
        "data": {
            "value": 24.13,
            "currency": "USD",
            "line_items": [{"product_id": "SKU-1", "product_price": 24.13, "product_quantity": 1}],
        },
    }
    body.update(overrides)
    return body


class TestSnippet:
    def test_is_served_as_javascript_with_caching_headers(self, app: Flask) -> None:
        response = app.test_client().get("/dedupkit/dedupkit.js")
        assert response.status_code == 200
        assert response.mimetype == "application/javascript"
        assert b"dedupkit" in response.data
        assert response.headers["ETag"]
        assert "max-age=3600" in response.headers["Cache-Control"]

    def test_revalidation_answers_304(self, app: Flask) -> None:
        client = app.test_client()
        etag = client.get("/dedupkit/dedupkit.js").headers["ETag"]
        response = client.get("/dedupkit/dedupkit.js", headers={"If-None-Match": etag})
        assert response.status_code == 304

    def test_versioned_url_is_cached_for_a_year(self, app: Flask) -> None:
        from dedupkit.web.assets import snippet

        _, version = snippet()
        response = app.test_client().get(f"/dedupkit/dedupkit.js?v={version}")
        assert "max-age=31536000" in response.headers["Cache-Control"]

    def test_the_prefix_is_configurable(self, make_app: AppFactory) -> None:
        app = make_app(URL_PREFIX="/t")
        assert app.test_client().get("/t/dedupkit.js").status_code == 200


class TestEvents:
    def test_a_browser_event_is_queued_with_the_same_id(self, app: Flask) -> None:
        response = beacon(app, add_to_cart())
        assert response.status_code == 202
        assert response.json == {
            "status": "queued",
            "event_id": "4f1d2c3b-0000-4000-8000-000000000001",
        }
        [payload] = queued(app)
        assert payload["event_name"] == "add_to_cart"
        assert payload["event_id"] == "4f1d2c3b-0000-4000-8000-000000000001"
        assert payload["event_source_url"] == PAGE
        assert payload["user_data"]["client_user_agent"] == CHROME_UA
        assert payload["user_data"]["client_ip_address"] == "127.0.0.1"
        assert payload["custom_data"] == {
            "value": "24.13",
            "currency": "USD",
            "contents": [{"id": "SKU-1", "item_price": "24.13", "quantity": 1}],
            "content_ids": ["SKU-1"],
            "num_items": 1,
        }

    def test_tag_spelling_is_accepted(self, app: Flask) -> None:
        assert beacon(app, add_to_cart(event_name="AddToCart")).status_code == 202
        assert queued(app)[0]["event_name"] == "add_to_cart"

    def test_json_content_type_works_too(self, app: Flask) -> None:
        response = beacon(app, add_to_cart(), content_type="application/json")
        assert response.status_code == 202
        assert [p["event_id"] for p in queued(app)] == [add_to_cart()["event_id"]]

    def test_the_same_beacon_twice_is_queued_once(self, app: Flask) -> None:
        assert beacon(app, add_to_cart()).json["status"] == "queued"  # type: ignore[index]
        assert beacon(app, add_to_cart()).json["status"] == "duplicate"  # type: ignore[index]
        assert len(queued(app)) == 1

    def test_a_landing_page_epik_wins_and_sets_the_cookie(self, app: Flask) -> None:
        body = add_to_cart(event_source_url=PAGE + "?epik=fresh", click_id="fresh")
        response = beacon(app, body, cookies={"_epik": "stale"})
        assert response.headers["Set-Cookie"].startswith("_epik=fresh;")
        assert queued(app)[0]["user_data"]["click_id"] == "fresh"

    def test_the_server_cookie_beats_what_the_page_saw(self, app: Flask) -> None:
        body = add_to_cart(click_id="from-page")
        beacon(app, body, cookies={"_epik": "from-server"})
        assert queued(app)[0]["user_data"]["click_id"] == "from-server"

    def test_without_a_server_cookie_the_page_click_id_is_used(self, app: Flask) -> None:
        beacon(app, add_to_cart(click_id="seen-on-www"))
        assert queued(app)[0]["user_data"]["click_id"] == "seen-on-www"

    def test_an_unsafe_page_click_id_is_dropped(self, app: Flask) -> None:
        beacon(app, add_to_cart(click_id="a;b\r\nc"))
        assert "click_id" not in queued(app)[0]["user_data"]

    def test_a_browser_clock_in_the_future_is_replaced(self, app: Flask) -> None:
        beacon(app, add_to_cart(event_time=int(time.time()) + 7200))
        assert abs(queued(app)[0]["event_time"] - time.time()) < 60

    def test_bots_are_accepted_but_not_queued(self, app: Flask) -> None:
        response = beacon(app, add_to_cart(), headers={"User-Agent": "curl/8.5.0"})
        assert response.status_code == 202
        assert response.json["status"] == "skipped: bot"  # type: ignore[index]
        assert queued(app) == []

    def test_purchases_cannot_come_from_the_browser(self, app: Flask) -> None:
        response = beacon(app, add_to_cart(event_name="checkout"))
        assert response.status_code == 403
        assert "checkout" in response.json["error"]  # type: ignore[index]
        assert queued(app) == []

    def test_browser_events_are_configurable(self, make_app: AppFactory) -> None:
        app = make_app(BROWSER_EVENTS=["lead", "add_to_cart"])
        assert beacon(app, add_to_cart(event_name="lead")).status_code == 202
        assert beacon(app, add_to_cart(event_name="search", event_id="s")).status_code == 403

    def test_disabled_kit_accepts_and_drops(self, make_app: AppFactory) -> None:
        app = make_app(ENABLED=False)
        response = beacon(app, add_to_cart())
        assert response.status_code == 202
        assert response.json["status"] == "disabled"  # type: ignore[index]

    @pytest.mark.parametrize(
        ("body", "status", "reason"),
        [
            ("not json", 400, "JSON"),
            ("[1, 2]", 400, "object"),
            (b"\xff\xfe", 400, "JSON"),
            ({"event_id": "1"}, 400, "event_name"),
            ({"event_name": "add_to_cart"}, 400, "event_id"),
            ({"event_name": "purchase", "event_id": "1"}, 400, "purchase"),
            ({"event_name": 7, "event_id": "1"}, 400, "event_name"),
            (add_to_cart(data={"value": "lots"}), 400, "value"),
            (add_to_cart(data={"line_items": [{"product_quantity": "x"}]}), 400, "quantity"),
            (add_to_cart(data=[1]), 400, "data"),
            (add_to_cart(event_id="x" * 300), 400, "event_id"),
            ("x" * 20000, 413, "larger"),
        ],
    )
    def test_bad_input_gets_a_4xx_json_reason(
        self, app: Flask, body: Any, status: int, reason: str
    ) -> None:
        response = beacon(app, body)
        assert response.status_code == status
        assert reason in response.json["error"]  # type: ignore[index]
        assert queued(app) == []

    @pytest.mark.parametrize(
        "data",
        [
            {"data": {"value": {"nested": 1}}},
            {"data": {"currency": ["USD"]}},
            {"data": {"line_items": "SKU"}},
            {"data": {"order_quantity": -1}},
            {"event_time": "yesterday"},
            {"event_time": None},
            {"click_id": 5},
            {"data": None},
        ],
    )
    def test_odd_values_never_cause_a_server_error(self, app: Flask, data: dict[str, Any]) -> None:
        response = beacon(app, add_to_cart(**data))
        assert response.status_code < 500
        assert response.is_json

    @pytest.mark.parametrize(
        "url",
        ["javascript:alert(1)", 7, "http://[::1", "https://x/" + "a" * 3000, "ftp://shop/x"],
    )
    def test_a_bad_page_url_is_dropped_and_the_event_kept(self, app: Flask, url: object) -> None:
        response = beacon(app, add_to_cart(event_source_url=url))
        assert response.status_code == 202
        [payload] = queued(app)
        assert "event_source_url" not in payload

    def test_a_long_query_is_trimmed_not_the_event(self, app: Flask) -> None:
        url = "https://shop.example/p/1?" + "q=1&" * 1000
        assert beacon(app, add_to_cart(event_source_url=url)).status_code == 202
        [payload] = queued(app)
        assert payload["event_source_url"] == "https://shop.example/p/1"

    def test_a_javascript_referer_is_not_a_page_url(self, app: Flask) -> None:
        body = add_to_cart()
        del body["event_source_url"]
        response = beacon(app, body, headers={"Referer": "javascript:alert(1)"})
        assert response.status_code == 202
        [payload] = queued(app)
        assert "event_source_url" not in payload

    @pytest.mark.parametrize("click_id", ["", "  ", "a;b", 7])
    def test_a_bad_page_click_id_is_dropped_and_the_event_kept(
        self, app: Flask, click_id: object
    ) -> None:
        assert beacon(app, add_to_cart(click_id=click_id)).status_code == 202
        [payload] = queued(app)
        assert "click_id" not in payload["user_data"]

    def test_a_null_origin_is_refused_unless_listed(self, make_app: AppFactory) -> None:
        app = make_app()
        refused = beacon(app, add_to_cart(), headers={"Origin": "null"})
        assert refused.status_code == 403
        listed = make_app(ALLOWED_ORIGINS=["null"])
        assert beacon(listed, add_to_cart(), headers={"Origin": "null"}).status_code == 202

    def test_other_origins_are_refused_unless_allowed(self, make_app: AppFactory) -> None:
        app = make_app(ALLOWED_ORIGINS=["https://www.shop.example"])
        evil = beacon(app, add_to_cart(), headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
        assert "DEDUPKIT_ALLOWED_ORIGINS" in evil.json["error"]  # type: ignore[index]
        www = beacon(app, add_to_cart(), headers={"Origin": "https://www.shop.example"})
        assert www.status_code == 202
        assert www.headers["Access-Control-Allow-Origin"] == "https://www.shop.example"
        assert www.headers["Access-Control-Allow-Credentials"] == "true"

    def test_same_origin_beacons_need_no_configuration(self, app: Flask) -> None:
        response = beacon(app, add_to_cart(), headers={"Origin": "https://shop.example"})
        assert response.status_code == 202
        assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert len(queued(app)) == 1

    def test_consent_required_and_missing_means_not_queued(self, make_app: AppFactory) -> None:
        app = make_app(REQUIRE_CONSENT=True)
        assert beacon(app, add_to_cart()).json["status"] == "skipped: no_consent"  # type: ignore[index]
        granted = beacon(app, add_to_cart(), cookies={"_dedupkit_consent": "1"})
        assert granted.json["status"] == "queued"  # type: ignore[index]

    def test_outbox_failure_still_answers(
        self, app: Flask, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from dedupkit.errors import OutboxError

        def broken(*args: object, **kwargs: object) -> bool:
            raise OutboxError("database or disk is full")

        monkeypatch.setattr(get_state(app).outbox, "put", broken)
        response = beacon(app, add_to_cart())
        assert response.status_code == 202
        # Not "queued": the event waits in memory until the outbox works again.
        assert response.json["status"] == "kept_in_memory"  # type: ignore[index]
        assert len(get_state(app).fallback) == 1


def test_an_internal_error_answers_503_json_and_is_logged(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise KeyError("a bug")

    monkeypatch.setattr(get_state(app), "store", broken)
    response = beacon(app, add_to_cart())
    assert response.status_code == 503
    assert "not store" in response.json["error"]  # type: ignore[index]
    assert "dedupkit could not handle POST /dedupkit/events" in caplog.text


def test_an_outbox_path_that_cannot_be_a_database_still_answers(
    make_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-file").mkdir()
    app = make_app(QUEUE_URL=f"sqlite:///{tmp_path}/not-a-file")  # a directory, not a file
    response = beacon(app, add_to_cart())
    assert response.status_code == 202
    assert "could not write to the dedupkit outbox" in caplog.text
    assert "not-a-file" in caplog.text
    # What interpreter exit would do: the event goes to the fallback file, not lost.
    fallback = get_state(app).fallback
    fallback.flush()
    [spill] = fallback.spill_files()
    assert json.loads(Path(spill).read_text())["event"]["event_id"] == add_to_cart()["event_id"]


def test_a_limited_private_address_says_the_app_may_be_behind_a_proxy(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(RATE_LIMIT="2/minute")
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    assert [beacon(app, add_to_cart(), environ_base=proxy).status_code for _ in range(3)] == [
        202,
        202,
        429,
    ]
    assert "ProxyFix" in caplog.text
    assert "DEDUPKIT_CLIENT_IP_HEADER" in caplog.text


class TestTagEvidence:
    def test_a_browser_event_keeps_whether_its_tag_fired(self, app: Flask) -> None:
        assert beacon(app, add_to_cart(event_id="fired", tag=1)).status_code == 202
        assert beacon(app, add_to_cart(event_id="blocked", tag=0)).status_code == 202
        tags = {entry.event_id: entry.tag for entry in get_state(app).outbox.recent()}
        assert tags == {"fired": True, "blocked": False}

    def test_an_evidence_beacon_marks_a_server_event_and_queues_nothing(self, app: Flask) -> None:
        with shopper_request(app, "/thanks"):
            kit_for(app).track("checkout", order_id="A-1", value=5, currency="USD")
        evidence = {"evidence": 1, "event_name": "checkout", "event_id": "checkout-A-1", "tag": 1}
        assert beacon(app, evidence).status_code == 202
        [entry] = get_state(app).outbox.recent()
        assert (entry.event_id, entry.tag) == ("checkout-A-1", True)
        assert get_state(app).outbox.stats().pending == 1

    @pytest.mark.parametrize(
        "body",
        [
            {"evidence": 1, "event_name": "checkout", "event_id": "x", "tag": 1, "value": 9},
            {"evidence": 1, "event_name": "purchase", "event_id": "x", "tag": 1},
            {"evidence": 1, "event_name": "checkout", "event_id": "x" * 300, "tag": 1},
        ],
    )
    def test_junk_evidence_is_a_400(self, app: Flask, body: dict[str, Any]) -> None:
        assert beacon(app, body).status_code == 400

    def test_a_skipped_event_is_kept_by_name_and_id_for_the_ledger(
        self, make_app: AppFactory
    ) -> None:
        app = make_app(REQUIRE_CONSENT=True)
        beacon(app, add_to_cart(event_id="no-yes"))
        [skip] = get_state(app).outbox.recent_skips(10)
        assert (skip.event_name, skip.event_id, skip.reason) == (
            "add_to_cart",
            "no-yes",
            "no_consent",
        )


def test_a_refused_beacon_is_a_werkzeug_exception_answered_as_json(app: Flask) -> None:
    from werkzeug.exceptions import HTTPException

    from dedupkit import BeaconRefused

    assert issubclass(BeaconRefused, HTTPException)
    refused = BeaconRefused(429, "slow down", retry_after=3)
    assert (refused.code, refused.description, refused.retry_after) == (429, "slow down", 3)
    response = app.test_client().post(
        "/dedupkit/events", data="not json", headers={"User-Agent": CHROME_UA}
    )
    assert response.status_code == 400
    assert "error" in response.get_json()
