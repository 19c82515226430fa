"""dedupkit next to the extensions shops run: CSP nonces (Flask-Talisman), Flask-WTF's CSRF
protection, and a base template that forgot ``{{ dedupkit.head() }}``.

The browser side of each is in tests/e2e/test_real_stack_browser.py.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from flask import Flask, g, render_template_string, request
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect

from dedupkit import ConfigurationError
from dedupkit.ledger.coverage import MISSING_TAG_HINT, with_missing_tag_hint
from dedupkit.ledger.page import ledger
from dedupkit.outbox.base import LedgerEntry
from dedupkit.state import get_state
from dedupkit.vocabulary import EventState

from ..conftest import AppFactory, kit_for, shopper_request
from .test_blueprint import add_to_cart, beacon

HEAD_AND_EVENT = "<html><head>{{ dedupkit.head() }}</head><body>{{ dedupkit.pintrk(e) }}</body>"
EVENT_ONLY = "<!doctype html><html><head><title>t</title></head><body>{{ dedupkit.pintrk(e) }}"


def rendered(app: Flask, template: str, **context: Any) -> str:
    with shopper_request(app, "/thanks"):
        event = kit_for(app).track("checkout", order_id="A-1", value="24.13", currency="usd")
        return render_template_string(template, e=event, **context)


def nonces(html: str) -> list[str | None]:
    """The nonce attribute of each <script> and <img> in ``html`` (None where it has none)."""
    tags = re.findall(r"<(?:script|img)\b[^>]*>", html)
    return [(re.search(r'\bnonce="([^"]*)"', tag) or [None, None])[1] for tag in tags]


# CSP nonces


def test_with_talisman_every_script_and_the_pixel_carry_the_request_nonce(
    make_app: AppFactory,
) -> None:
    app = make_app()
    Talisman(
        app,
        force_https=False,
        content_security_policy={"default-src": "'self'", "script-src": "'strict-dynamic'"},
        content_security_policy_nonce_in=["script-src"],
    )
    seen: list[str] = []

    @app.get("/thanks")
    def thanks() -> str:
        seen.append(request.csp_nonce)  # type: ignore[attr-defined]
        event = kit_for(app).track("checkout", order_id="A-1", value="24.13", currency="USD")
        return render_template_string(HEAD_AND_EVENT, e=event)

    response = app.test_client().get("/thanks", headers={"User-Agent": "Mozilla/5.0 Chrome"})
    html = response.get_data(as_text=True)
    [nonce] = seen
    # base code, its pixel, the stub, the snippet, the pintrk call and its pixel
    assert nonces(html) == [nonce] * 6
    assert f"'nonce-{nonce}'" in response.headers["Content-Security-Policy"]
    # The base code hands it to the core.js it inserts (a policy without 'strict-dynamic').
    assert f't.nonce="{nonce}"' in html


def test_a_nonce_in_g_is_found_and_the_setting_and_argument_beat_it(make_app: AppFactory) -> None:
    app = make_app(CSP_NONCE=lambda req: req.headers.get("X-Nonce"))
    with shopper_request(app, "/", headers={"X-Nonce": "fromHook1"}):
        g.csp_nonce = "fromG"
        env = app.jinja_env
        assert set(nonces(env.from_string("{{ dedupkit.head() }}").render())) == {"fromHook1"}
        html = env.from_string("{{ dedupkit.head(nonce='arg+/=') }}").render()
        assert set(nonces(html)) == {"arg+/="}

    plain = make_app()
    with shopper_request(plain, "/"):
        g.csp_nonce = "fromG"
        html = plain.jinja_env.from_string("{{ dedupkit.head() }}").render()
        assert set(nonces(html)) == {"fromG"}


def test_pintrk_takes_a_nonce_argument(make_app: AppFactory) -> None:
    html = rendered(make_app(), "{{ dedupkit.pintrk(e, nonce='abc123') }}")
    assert nonces(html) == ["abc123", "abc123"]


def test_without_a_nonce_nothing_changes(make_app: AppFactory) -> None:
    html = rendered(make_app(), HEAD_AND_EVENT)
    assert "nonce" not in html


@pytest.mark.parametrize("bad", ['x" onload="alert(1)', "", "a b", "n" * 300])
def test_a_value_that_is_no_nonce_is_never_written(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    app = make_app(CSP_NONCE=lambda req: bad)
    html = rendered(app, HEAD_AND_EVENT)
    assert "nonce" not in html and "onload" not in html
    assert "DEDUPKIT_CSP_NONCE is no CSP nonce" in caplog.text


def test_a_nonce_hook_that_raises_is_logged_and_the_page_still_renders(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(req: Any) -> str:
        raise RuntimeError("no nonce today")

    html = rendered(make_app(CSP_NONCE=broken), HEAD_AND_EVENT)
    assert "pintrk" in html and "nonce" not in html
    assert "DEDUPKIT_CSP_NONCE raised" in caplog.text


def test_a_fixed_nonce_string_is_a_start_up_error(make_app: AppFactory) -> None:
    with pytest.raises(ConfigurationError, match="DEDUPKIT_CSP_NONCE must be a callable"):
        make_app(CSP_NONCE="always-the-same")


# Flask-WTF's CSRFProtect


def shop_with_csrf(make_app: AppFactory, csrf_first: bool) -> Flask:
    if not csrf_first:
        app = make_app()
        CSRFProtect(app)
    else:
        # CSRFProtect set up before DedupKit: build the app by hand, as a factory would.
        app = Flask("csrf_first")
        app.config.update(make_app().config)
        CSRFProtect(app)
        from dedupkit import DedupKit

        DedupKit(app)

    @app.post("/account/email")
    def change_email() -> str:
        return "changed"

    return app


@pytest.mark.parametrize("csrf_first", [False, True], ids=["dedupkit-first", "csrf-first"])
def test_csrf_protect_exempts_the_events_endpoint_and_only_it(
    make_app: AppFactory, csrf_first: bool
) -> None:
    app = shop_with_csrf(make_app, csrf_first)
    assert beacon(app, add_to_cart()).status_code == 202
    # The shop's own forms stay protected.
    response = app.test_client().post("/account/email", data={"email": "x@example.com"})
    assert response.status_code == 400
    assert b"CSRF" in response.data


def test_one_csrf_protect_for_two_apps_exempts_the_endpoint_on_both(make_app: AppFactory) -> None:
    csrf = CSRFProtect()
    apps = [make_app(), make_app()]
    for app in apps:
        csrf.init_app(app)
    assert [beacon(app, add_to_cart()).status_code for app in apps] == [202, 202]


# A forgotten head()


def page_app(make_app: AppFactory, template: str, **settings: Any) -> Flask:
    app = make_app(**settings)

    @app.get("/thanks")
    def thanks() -> Any:
        event = kit_for(app).track("checkout", order_id="A-7", value="24.13", currency="USD")
        if template == "json":
            return {"event_id": event.event_id}
        return render_template_string(template, e=event)

    return app


def head_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "dedupkit.head()" in r.getMessage()
    ]


def get_page(app: Flask) -> None:
    response = app.test_client().get("/thanks", headers={"User-Agent": "Mozilla/5.0 Chrome"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "template",
    [EVENT_ONLY, "<html><head></head><body>thanks</body></html>"],
    ids=["pintrk-without-head", "track-without-head-or-pintrk"],
)
def test_a_page_that_should_fire_the_tag_without_head_warns(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, template: str
) -> None:
    get_page(page_app(make_app, template))
    [warning] = head_warnings(caplog)
    assert "'/thanks'" in warning and "'checkout'" in warning
    assert "Is {{ dedupkit.head() }} in your base template's <head>?" in warning


@pytest.mark.parametrize(
    "template",
    [
        HEAD_AND_EVENT,
        "{{ dedupkit.pintrk(e) }}",  # an htmx fragment: the page around it has its head
        "json",
        # Pinterest's own base code pasted in by hand.
        "<html><head><script src='https://s.pinimg.com/ct/core.js'></script></head>"
        "<body>{{ dedupkit.pintrk(e) }}</body></html>",
    ],
    ids=["with-head", "fragment", "json", "pasted-base-code"],
)
def test_pages_with_a_tag_or_no_page_at_all_do_not_warn(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, template: str
) -> None:
    get_page(page_app(make_app, template))
    assert head_warnings(caplog) == []


def entry(name: str = "checkout", tag: bool | None = None, n: int = 0) -> LedgerEntry:
    return LedgerEntry(
        event_name=name,
        event_id=f"{name}-{n}",
        state=EventState.DELIVERED,
        attempts=1,
        event_time=1.0,
        updated_at=2.0,
        last_error=None,
        has_click_id=False,
        tag=tag,
    )


HEADLINE = "100 % of checkouts carry the click id; none failed."


@pytest.mark.parametrize(
    ("entries", "asks"),
    [
        ([entry(n=i) for i in range(3)], True),
        ([entry(n=i) for i in range(2)], False),  # too few to tell
        ([entry(n=i) for i in range(3)] + [entry("add_to_cart", tag=True)], False),
        ([entry(n=i) for i in range(3)] + [entry("add_to_cart", tag=False)], False),  # blocked
        ([entry(n=0, tag=True), entry(n=1), entry(n=2)], False),
    ],
    ids=["silent", "two", "cart-fired", "cart-blocked", "one-fired"],
)
def test_the_headline_asks_for_head_only_when_no_event_carries_tag_evidence(
    entries: list[LedgerEntry], asks: bool
) -> None:
    headline = with_missing_tag_hint(HEADLINE, entries)
    expected = f"{HEADLINE[:-1]}; {MISSING_TAG_HINT}" if asks else HEADLINE
    assert headline == expected


def test_the_ledger_headline_asks_when_checkouts_came_without_any_tag(
    make_app: AppFactory,
) -> None:
    app = make_app()
    with shopper_request(app, "/thanks"):
        for order in range(3):
            kit_for(app).track("checkout", order_id=f"A-{order}", value="5.00", currency="USD")
    data = ledger(get_state(app))
    assert data["headline"].endswith("is {{ dedupkit.head() }} in your base template?")
