"""The extension: registration, configuration, and what track() reads from the request."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from dedupkit import ConfigurationError, DedupKit, UnknownEventName
from dedupkit.errors import OutboxError
from dedupkit.state import get_state

from .conftest import CHROME_UA, AppFactory, kit_for, queued, shopper_request
from .support.polling import wait_until

PINTEREST_IOS_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]"
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_factory_pattern_keeps_state_on_the_app(tmp_path: Path) -> None:
    kit = DedupKit()
    app = Flask("shop", instance_path=str(tmp_path))
    app.config.update(DEDUPKIT_AD_ACCOUNT_ID="1", DEDUPKIT_CONVERSION_TOKEN="t" * 20)
    kit.init_app(app)
    settings = get_state(app).settings
    assert (settings.url_prefix, settings.retry_window) == ("/dedupkit", 3600.0)
    assert app.url_map.bind("").match("/dedupkit/events", method="POST")[0] == "dedupkit.events"
    assert not hasattr(kit, "app")
    assert "t" * 20 not in repr(settings)


def test_registering_twice_is_an_error(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already registered"):
        DedupKit(app)


def test_missing_credentials_name_the_settings_when_enabled_explicitly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEDUPKIT_CONVERSION_TOKEN", raising=False)
    monkeypatch.delenv("DEDUPKIT_AD_ACCOUNT_ID", raising=False)
    app = Flask("shop", instance_path=str(tmp_path))
    app.config["DEDUPKIT_ENABLED"] = True
    with pytest.raises(ConfigurationError) as info:
        DedupKit(app)
    assert "DEDUPKIT_AD_ACCOUNT_ID" in str(info.value)
    assert "DEDUPKIT_CONVERSION_TOKEN" in str(info.value)


def test_credentials_fall_back_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEDUPKIT_AD_ACCOUNT_ID", "549764982399")
    monkeypatch.setenv("DEDUPKIT_CONVERSION_TOKEN", "pina_from_env")
    app = Flask("shop", instance_path=str(tmp_path))
    DedupKit(app)
    settings = get_state(app).settings
    assert (settings.ad_account_id, settings.conversion_token) == ("549764982399", "pina_from_env")
    assert settings.enabled


def test_state_lookup_without_init_app_says_what_to_do() -> None:
    app = Flask("shop")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        get_state()


def test_disabled_needs_no_credentials_and_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEDUPKIT_CONVERSION_TOKEN", raising=False)
    app = Flask("shop", instance_path=str(tmp_path))
    app.config.update(DEDUPKIT_ENABLED=False, DEDUPKIT_QUEUE_URL=f"sqlite:///{tmp_path}/o.sqlite3")
    kit = DedupKit(app)
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("checkout", order_id="A-1", value=10, currency="USD")
    assert event.event_id == "checkout-A-1"
    assert queued(app) == []


def test_track_in_a_request_reads_ip_user_agent_click_id_and_url(app: Flask) -> None:
    kit = kit_for(app)
    with shopper_request(
        app,
        "/checkout/done",
        base_url="https://shop.example",
        headers={"User-Agent": CHROME_UA, "Cookie": "_epik=dj0yJnU9b2JD"},
        environ_base={"REMOTE_ADDR": "2001:db8::7"},
    ):
        event = kit.track("Checkout", order_id="A-1001", value="72.39", currency="usd")
    [payload] = queued(app)
    assert payload == event.to_capi()
    assert payload["event_name"] == "checkout"
    assert payload["event_id"] == "checkout-A-1001"
    assert payload["event_source_url"] == "https://shop.example/checkout/done"
    assert payload["user_data"]["client_ip_address"] == "2001:db8::7"
    assert payload["user_data"]["client_user_agent"] == CHROME_UA
    assert payload["user_data"]["click_id"] == "dj0yJnU9b2JD"
    assert payload["custom_data"] == {"value": "72.39", "currency": "USD", "order_id": "A-1001"}


def test_track_outside_a_request_takes_the_visitor_from_the_caller(app: Flask) -> None:
    kit = kit_for(app)
    with app.app_context():
        kit.track(
            "lead",
            event_id="lead-7",
            user={"email": "Ann@Example.com", "click_id": "abc", "client_ip_address": "192.0.2.4"},
        )
    [payload] = queued(app)
    assert payload["user_data"]["em"] == [sha256("ann@example.com")]
    assert payload["user_data"]["click_id"] == "abc"


def test_cdn_client_ip_header_is_trusted_only_when_configured(make_app: AppFactory) -> None:
    app = make_app(CLIENT_IP_HEADER="CF-Connecting-IP")
    kit = kit_for(app)
    headers = {"User-Agent": CHROME_UA, "CF-Connecting-IP": "198.51.100.23"}
    with shopper_request(app, "/", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"}):
        kit.track("lead", event_id="1")
    [payload] = queued(app)
    assert payload["user_data"]["client_ip_address"] == "198.51.100.23"


def test_proxyfix_gives_the_forwarded_client_ip(app: Flask) -> None:
    kit = kit_for(app)
    ip_seen: list[str] = []

    @app.get("/buy")
    def buy() -> str:
        event = kit.track("lead", event_id="x")
        ip_seen.append(event.user_data["client_ip_address"])
        return "ok"

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    app.test_client().get(
        "/buy",
        headers={"User-Agent": CHROME_UA, "X-Forwarded-For": "203.0.113.9"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert ip_seen == ["203.0.113.9"]


def test_tracking_the_same_event_twice_queues_it_once(app: Flask) -> None:
    kit = kit_for(app)
    for _ in range(3):  # a thank-you page reloaded
        with shopper_request(app, "/thanks", headers={"User-Agent": CHROME_UA}):
            kit.track("checkout", order_id="A-1", value=5)
    assert [p["event_id"] for p in queued(app)] == ["checkout-A-1"]


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/131.0 Safari/537.36",
        "python-requests/2.32.3",
        "",
    ],
)
def test_bots_are_counted_not_sent(app: Flask, user_agent: str) -> None:
    kit = kit_for(app)
    with shopper_request(app, "/", headers={"User-Agent": user_agent}):
        event = kit.track("checkout", order_id="B-1")
    assert event.event_id == "checkout-B-1"  # still returned, for the tag
    assert queued(app) == []
    assert get_state(app).outbox.stats().skipped == {"bot": 1}


def test_the_pinterest_in_app_browser_is_a_shopper(app: Flask) -> None:
    kit = kit_for(app)
    with shopper_request(app, "/", headers={"User-Agent": PINTEREST_IOS_UA}):
        kit.track("checkout", order_id="P-1")
    assert len(queued(app)) == 1


@pytest.mark.parametrize(
    ("require_consent", "cookie", "sent"),
    [
        (True, None, False),
        (True, "1", True),
        (True, "0", False),
        (False, None, True),
        (False, "0", False),  # a visitor who said no is not tracked even without the setting
    ],
)
def test_consent_gates_the_server_channel(
    make_app: AppFactory, require_consent: bool, cookie: str | None, sent: bool
) -> None:
    app = make_app(REQUIRE_CONSENT=require_consent)
    kit = kit_for(app)
    headers = {"User-Agent": CHROME_UA}
    if cookie is not None:
        headers["Cookie"] = f"_dedupkit_consent={cookie}"
    with shopper_request(app, "/", headers=headers):
        kit.track("checkout", order_id="C-1")
    assert (len(queued(app)) == 1) is sent


def test_raw_pii_never_reaches_the_outbox_file(app: Flask, tmp_path: Path) -> None:
    kit = kit_for(app)
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        kit.track(
            "checkout",
            order_id="D-1",
            user={
                "email": "jane.roe@example.com",
                "phone": "+1 650 555 1234",
                "first_name": "Jane",
            },
        )
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite3*"))
    assert b"jane.roe@example.com" not in raw
    assert b"6505551234" not in raw
    assert b"Jane" not in raw
    assert sha256("jane.roe@example.com").encode() in raw


def test_pin_unauth_cookie_becomes_a_hashed_external_id(app: Flask) -> None:
    kit = kit_for(app)
    headers = {"User-Agent": CHROME_UA, "Cookie": "_pin_unauth=dWlkPU5qQXpZVGcw"}
    with shopper_request(app, "/", headers=headers):
        kit.track("lead", event_id="1")
    [payload] = queued(app)
    assert payload["user_data"]["external_id"] == [sha256("dWlkPU5qQXpZVGcw")]


def test_unknown_event_names_are_refused_at_track_time(app: Flask) -> None:
    kit = kit_for(app)
    with app.app_context(), pytest.raises(UnknownEventName, match="purchase"):
        kit.track("purchase", user={"email": "a@b.co"})


def test_advertiser_defined_events_pass_through(make_app: AppFactory) -> None:
    app = make_app(ADVERTISER_EVENTS=["BookDemo"])
    kit = kit_for(app)
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("BookDemo", event_id="d-1")
    assert (event.capi_name, event.tag_name) == ("BookDemo", "BookDemo")


def test_an_unwritable_outbox_never_breaks_track_and_loses_nothing(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = get_state(app)
    kit = kit_for(app)
    real_put = state.outbox.put

    def broken_put(*args: object, **kwargs: object) -> bool:
        raise OutboxError("disk full")

    monkeypatch.setattr(state.outbox, "put", broken_put)
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        kit.track("checkout", order_id="E-1")
        kit.track("checkout", order_id="E-2")
    assert len(state.fallback) == 2
    # The outbox works again and no new event comes in: the fallback writes them by itself.
    monkeypatch.setattr(state.outbox, "put", real_put)
    assert wait_until(lambda: len(state.fallback) == 0)
    assert sorted(p["event_id"] for p in queued(app)) == ["checkout-E-1", "checkout-E-2"]


class TestClickIdCookie:
    def test_landing_with_epik_sets_a_first_party_cookie(self, app: Flask) -> None:
        response = app.test_client().get("/any/page?epik=dj0yJnU9b2JD&utm_source=pinterest")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("_epik=dj0yJnU9b2JD;")
        assert "Path=/" in cookie
        assert "Max-Age=31536000" in cookie
        assert "SameSite=Lax" in cookie
        assert "HttpOnly" not in cookie
        assert "Secure" not in cookie

    def test_the_cookie_is_secure_on_https(self, app: Flask) -> None:
        client = app.test_client()
        response = client.get("/?epik=abc", base_url="https://shop.example")
        assert "Secure" in response.headers["Set-Cookie"]

    def test_a_fresher_epik_replaces_the_cookie(self, app: Flask) -> None:
        client = app.test_client()
        client.get("/?epik=old")
        client.get("/?epik=new")
        cookie = client.get_cookie("_epik")
        assert cookie is not None
        assert cookie.value == "new"

    def test_no_epik_no_cookie(self, app: Flask) -> None:
        assert "Set-Cookie" not in app.test_client().get("/").headers

    @pytest.mark.parametrize(
        "value", ["abc%0d%0aSet-Cookie:%20admin=1", "a;b", "x" * 600, "a b", "%00"]
    )
    def test_unsafe_values_are_not_stored(self, app: Flask, value: str) -> None:
        response = app.test_client().get(f"/?epik={value}")
        assert "Set-Cookie" not in response.headers

    def test_cookie_domain_and_name_are_configurable(self, make_app: AppFactory) -> None:
        app = make_app(COOKIE_DOMAIN="shop.example", CLICK_ID_COOKIE="_pin_click")
        response = app.test_client().get("/?epik=abc", base_url="https://www.shop.example")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("_pin_click=abc;")
        assert "Domain=shop.example" in cookie


def test_any_request_starts_delivery_of_what_a_dead_process_left_behind(
    make_app: AppFactory,
) -> None:
    from dedupkit.testing import FakePinterest

    from .support.payloads import capi_event

    with FakePinterest() as fake:
        app = make_app(
            BACKGROUND_SENDER=True,
            FLUSH_INTERVAL=0.05,
            API_BASE_URL=fake.api_base_url,
            AD_ACCOUNT_ID=fake.ad_account_id,
            CONVERSION_TOKEN=fake.token,
        )
        state = get_state(app)
        # Queued by a process that crashed before delivering it.
        state.outbox.put(capi_event("left-behind"))
        assert app.test_client().get("/no-such-page").status_code == 404
        try:
            assert fake.wait_for_capi_events(1)
            assert fake.capi_events[0]["event_id"] == "left-behind"
        finally:
            state.background.stop()


def test_keyword_overrides_beat_app_config_and_carry_an_httpx_transport(
    tmp_path: Path,
) -> None:
    import httpx

    seen: list[httpx.Request] = []

    def pinterest(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "num_events_received": 1,
                "num_events_processed": 1,
                "events": [{"status": "processed", "error_message": None, "warning_message": None}],
            },
        )

    app = Flask("shop", instance_path=str(tmp_path))
    app.config.update(
        DEDUPKIT_AD_ACCOUNT_ID="549764982399",
        DEDUPKIT_CONVERSION_TOKEN="token-from-config",
        DEDUPKIT_QUEUE_URL=f"sqlite:///{tmp_path}/outbox.sqlite3",
        DEDUPKIT_BACKGROUND_SENDER=False,
        DEDUPKIT_TEST_MODE=False,
    )
    kit = DedupKit(app, test_mode=True, transport=httpx.MockTransport(pinterest))
    assert get_state(app).settings.test_mode is True
    with shopper_request(app, "/thanks"):
        kit.track("checkout", order_id="T-1", value=5, currency="USD")
    sender = get_state(app).make_sender()
    assert sender.run_once() == 1
    [request] = seen
    assert request.url.params["test"] == "true"
    assert request.headers["Authorization"] == "Bearer token-from-config"


def test_the_intake_resolves_the_event_name_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = get_state(app).names
    looked_up: list[object] = []
    real = names.resolve

    def counting(name: object) -> Any:
        if isinstance(name, str):
            looked_up.append(name)
        return real(name)  # type: ignore[arg-type]

    monkeypatch.setattr(names, "resolve", counting)
    with shopper_request(app, "/thanks"):
        kit_for(app).track("Checkout", order_id="R-1", value=5, currency="USD")
    assert looked_up == ["Checkout"]
