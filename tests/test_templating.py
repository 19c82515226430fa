"""The Jinja helpers: head() and pintrk(event)."""

from __future__ import annotations

import json
import re

from flask import Flask, render_template_string

from dedupkit.extension import get_state

from .conftest import CHROME_UA, TAG_ID, AppFactory, shopper_request


def render(app: Flask, source: str, cookie: str | None = None, **context: object) -> str:
    headers = {"User-Agent": CHROME_UA}
    if cookie:
        headers["Cookie"] = cookie
    with shopper_request(app, "/", headers=headers):
        return render_template_string(source, **context)


def test_head_loads_the_tag_and_the_snippet(app: Flask) -> None:
    html = render(app, "{{ dedupkit.head() }}")
    assert '"https://s.pinimg.com/ct/core.js"' in html
    assert f"pintrk('load',\"{TAG_ID}\")" in html
    assert "pintrk('page')" in html
    assert 'data-endpoint="/dedupkit/events"' in html
    assert re.search(r'<script defer src="/dedupkit/dedupkit\.js\?v=[0-9a-f]{16}"', html)
    assert "dedupkit.track" in html or "track" in html  # the inline queue stub


def test_automatic_page_visit_replaces_the_bare_page_call(make_app: AppFactory) -> None:
    html = render(make_app(PAGE_VISIT=True), "{{ dedupkit.head() }}")
    assert "pintrk('page')" not in html
    assert 'data-page-visit="1"' in html


def test_pending_consent_defers_core_js_to_the_snippet(make_app: AppFactory) -> None:
    app = make_app(REQUIRE_CONSENT=True)
    html = render(app, "{{ dedupkit.head() }}")
    assert '}}("");' in html  # the base code's queue stub, with nothing injected
    assert 'data-pintrk-src="https://s.pinimg.com/ct/core.js"' in html
    assert 'data-require-consent="1"' in html
    granted = render(app, "{{ dedupkit.head() }}", cookie="_dedupkit_consent=1")
    assert '}}("https://s.pinimg.com/ct/core.js");' in granted
    assert "data-pintrk-src" not in granted


def test_without_a_tag_id_only_the_snippet_is_rendered(make_app: AppFactory) -> None:
    html = render(make_app(TAG_ID=None), "{{ dedupkit.head() }}")
    assert "pintrk" not in html
    assert "dedupkit.js" in html


def test_disabled_renders_nothing(make_app: AppFactory) -> None:
    app = make_app(ENABLED=False)
    assert render(app, "{{ dedupkit.head() }}").strip() == ""


def test_pintrk_fires_the_server_event_with_the_same_id(app: Flask) -> None:
    kit = get_state(app).kit
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("AddToCart", event_id="e-1", value=10, currency="USD")
        html = render_template_string("{{ dedupkit.pintrk(event) }}", event=event)
    match = re.fullmatch(
        r"<script>window\.pintrk&&window\.pintrk\('track',(.*?),(.*)\);</script>", html
    )
    assert match, html
    assert json.loads(match.group(1)) == "addtocart"
    assert json.loads(match.group(2)) == {"value": 10, "currency": "USD", "event_id": "e-1"}


def test_event_data_cannot_break_out_of_the_script(app: Flask) -> None:
    kit = get_state(app).kit
    evil = "</script><script>alert(1)</script><!--"
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("search", event_id="s-1", search_query=evil)
        html = render_template_string("{{ dedupkit.pintrk(event) }}", event=event)
    assert html.count("</script>") == 1
    assert "<!--" not in html
    assert "<script>alert" not in html


def test_pintrk_renders_nothing_without_consent(make_app: AppFactory) -> None:
    app = make_app(REQUIRE_CONSENT=True)
    kit = get_state(app).kit
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("checkout", order_id="1")
        html = render_template_string("{{ dedupkit.pintrk(event) }}", event=event)
    assert html == ""


def test_pintrk_of_nothing_is_nothing(app: Flask) -> None:
    assert render(app, "{{ dedupkit.pintrk(none) }}") == ""
