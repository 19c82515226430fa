"""The Jinja helpers: head() and pintrk(event)."""

from __future__ import annotations

import json
import re
from html import unescape as html_unescape
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import Flask, render_template_string

from ..conftest import CHROME_UA, TAG_ID, AppFactory, kit_for, shopper_request


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


def test_head_is_the_same_for_every_visitor_so_cached_pages_stay_right(
    make_app: AppFactory,
) -> None:
    app = make_app(REQUIRE_CONSENT=True)
    pages = {
        render(app, "{{ dedupkit.head() }}", cookie=cookie)
        for cookie in (None, "_dedupkit_consent=1", "_dedupkit_consent=0", "_epik=x")
    }
    assert len(pages) == 1


def test_with_consent_required_the_tag_loads_only_after_a_stored_yes(
    make_app: AppFactory,
) -> None:
    html = render(make_app(REQUIRE_CONSENT=True), "{{ dedupkit.head() }}")
    assert "/(^|; )_dedupkit_consent=1(;|$)/.test(document.cookie));" in html
    assert 'data-pintrk-src="https://s.pinimg.com/ct/core.js"' in html
    assert 'data-require-consent="1"' in html


def test_without_consent_required_a_stored_no_still_holds_the_tag(app: Flask) -> None:
    html = render(app, "{{ dedupkit.head() }}")
    assert "!/(^|; )_dedupkit_consent=0(;|$)/.test(document.cookie));" in html


def test_cookie_names_that_could_break_a_header_or_a_script_are_refused(
    make_app: AppFactory,
) -> None:
    from dedupkit import ConfigurationError

    with pytest.raises(ConfigurationError, match="DEDUPKIT_CONSENT_COOKIE"):
        make_app(CONSENT_COOKIE="a/b</script>")


def test_without_a_tag_id_only_the_snippet_is_rendered(make_app: AppFactory) -> None:
    html = render(make_app(TAG_ID=None), "{{ dedupkit.head() }}")
    # The stub mentions pintrk (dedupkit.mirror); the base code's load call is what must go.
    assert "pintrk('load'" not in html
    assert "core.js" not in html
    assert "dedupkit.js" in html


def test_disabled_renders_nothing(make_app: AppFactory) -> None:
    app = make_app(ENABLED=False)
    assert render(app, "{{ dedupkit.head() }}").strip() == ""


def test_pintrk_fires_the_server_event_with_the_same_id(app: Flask) -> None:
    kit = kit_for(app)
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("AddToCart", event_id="e-1", value=10, currency="USD")
        html = render_template_string("{{ dedupkit.pintrk(event) }}", event=event)
    script, _, noscript = html.partition("<noscript>")
    match = re.fullmatch(
        r"<script>!function\(d,t,x,n\)\{d&&d\.mirror\?d\.mirror\(t,x,n\):"
        r"window\.pintrk&&pintrk\('track',t,x\)\}\(window\.dedupkit,(.*?),(\{.*\}),(.*)\)</script>",
        script,
    )
    assert match, html
    assert json.loads(match.group(1)) == "addtocart"
    assert json.loads(match.group(2)) == {"value": 10, "currency": "USD", "event_id": "e-1"}
    assert json.loads(match.group(3)) == "add_to_cart"
    # Without JavaScript, Pinterest's image pixel carries the same event and id.
    src = re.search(r'src="([^"]+)"', noscript)
    assert src, noscript
    url = urlsplit(html_unescape(src.group(1)))
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://ct.pinterest.com/v3/"
    assert dict(parse_qsl(url.query)) == {
        "tid": TAG_ID,
        "event": "addtocart",
        "ed[value]": "10",
        "ed[currency]": "USD",
        "ed[event_id]": "e-1",
        "noscript": "1",
    }


def test_head_has_the_noscript_page_pixel_unless_consent_is_required(
    make_app: AppFactory,
) -> None:
    html = render(make_app(), "{{ dedupkit.head() }}")
    assert f"https://ct.pinterest.com/v3/?tid={TAG_ID}&amp;noscript=1" in html
    asked = render(make_app(REQUIRE_CONSENT=True), "{{ dedupkit.head() }}")
    assert "<noscript>" not in asked


def test_event_data_cannot_break_out_of_the_script(app: Flask) -> None:
    kit = kit_for(app)
    evil = "</script><script>alert(1)</script><!--"
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("search", event_id="s-1", search_query=evil)
        html = render_template_string("{{ dedupkit.pintrk(event) }}", event=event)
    assert html.count("</script>") == 1
    assert "<!--" not in html
    assert "<script>alert" not in html


def test_pintrk_renders_nothing_without_consent(make_app: AppFactory) -> None:
    app = make_app(REQUIRE_CONSENT=True)
    kit = kit_for(app)
    with shopper_request(app, "/", headers={"User-Agent": CHROME_UA}):
        event = kit.track("checkout", order_id="1")
        html = render_template_string("{{ dedupkit.pintrk(event) }}", event=event)
    assert html == ""


def test_pintrk_of_nothing_is_nothing(app: Flask) -> None:
    assert render(app, "{{ dedupkit.pintrk(none) }}") == ""
