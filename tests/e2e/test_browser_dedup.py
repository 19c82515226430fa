"""The dedup path end to end: real Chromium, a real shop server, the fake Pinterest.

Each scenario is one a merchant lives through: an ad click days before the purchase, an add
to cart seen by both channels, an ad blocker, a reloaded thank-you page, a visitor who says
no, a crawler, and a marketing site on another subdomain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from ..support.browser import DESKTOP_CHROME_UA
from ..support.live_server import LiveServer, static_site
from ..support.polling import wait_until
from ..support.shop_app import Shop, shop_servers

pytestmark = pytest.mark.browser

GOOGLEBOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def make_shop(fake: FakePinterest, tmp_path: Path) -> Iterator[Callable[..., Shop]]:
    with shop_servers(fake, tmp_path) as factory:
        yield factory


@pytest.fixture
def shop(make_shop: Callable[..., Shop]) -> Shop:
    return make_shop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(user_agent=DESKTOP_CHROME_UA)
    page = context.new_page()
    yield page
    context.close()


def settle(app: Flask, timeout: float = 10.0) -> None:
    """Wait until the shop's outbox has nothing pending or in flight."""
    outbox = get_state(app).outbox

    def drained() -> bool:
        stats = outbox.stats()
        get_state(app).background.wake()
        return stats.pending == 0 and stats.in_flight == 0

    assert wait_until(drained, timeout), f"outbox did not drain: {outbox.stats()}"


def loaded(page: Any) -> None:
    page.wait_for_function("window.dedupkit && window.dedupkit.loaded === true")


def test_an_ad_click_three_pages_before_checkout_is_attributed(
    shop: Shop, fake: Any, page: Any
) -> None:
    _app, server = shop
    landing = page.goto(f"{server.url}/?epik=dj0yJnU9b2JDcFFH")
    # Set by the server's response, not by the snippet's document.cookie fallback.
    assert "_epik=dj0yJnU9b2JDcFFH" in landing.header_value("set-cookie")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "_epik"]
    assert cookie["value"] == "dj0yJnU9b2JDcFFH"
    assert cookie["httpOnly"] is False
    assert cookie["expires"] > time.time() + 364 * 86400  # the server's one year

    page.click("#product")
    page.click("#cart")
    page.click("#buy")
    page.wait_for_selector("#order")

    assert fake.wait_for(lambda: any(e["event_name"] == "checkout" for e in fake.capi_events))
    [checkout] = [e for e in fake.capi_events if e["event_name"] == "checkout"]
    assert checkout["user_data"]["click_id"] == "dj0yJnU9b2JDcFFH"
    assert checkout["event_id"] == "checkout-A-1001"


def test_add_to_cart_reaches_both_channels_as_one_conversion(
    shop: Shop, fake: Any, page: Any
) -> None:
    _app, server = shop
    page.goto(f"{server.url}/product")
    loaded(page)
    page.click("#add")
    event_id = page.evaluate("window.lastId")

    assert fake.wait_for(lambda: fake.tag_events and fake.capi_events)
    [tag] = fake.tag_events
    [capi] = fake.capi_events
    assert tag.event_name == "addtocart"
    assert capi["event_name"] == "add_to_cart"
    assert tag.event_id == capi["event_id"] == event_id
    assert capi["custom_data"]["value"] == "24.13"
    assert capi["event_source_url"] == f"{server.url}/product"
    [conversion] = fake.conversions()
    assert conversion.sources == {"tag", "capi"}


def test_calls_made_before_the_snippet_loads_keep_their_id(
    shop: Shop, fake: Any, page: Any
) -> None:
    _app, server = shop
    # The route answers the snippet only when the test says so: the page calls track first.
    release: list[Any] = []
    page.route("**/dedupkit/dedupkit.js*", lambda route: release.append(route))
    page.goto(f"{server.url}/product", wait_until="commit")
    page.wait_for_function("typeof window.dedupkit === 'object'")
    early_id = page.evaluate("dedupkit.track('search', {search_query: 'boots'})")
    deadline = time.monotonic() + 10
    while not release and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    release[0].continue_()
    loaded(page)
    assert fake.wait_for(lambda: fake.tag_events and fake.capi_events)
    assert fake.capi_events[0]["event_id"] == early_id
    assert fake.capi_events[0]["custom_data"]["search_string"] == "boots"
    assert fake.tag_events[0].event_id == early_id


def test_a_blocked_tag_still_gets_the_conversion_to_pinterest(
    shop: Shop, fake: Any, page: Any
) -> None:
    app, server = shop
    page.route("**/ct/core.js", lambda route: route.abort())  # what an ad blocker does
    page.goto(f"{server.url}/product")
    loaded(page)
    page.click("#add")
    assert fake.wait_for_capi_events(1)
    settle(app)
    assert fake.capi_events[0]["event_name"] == "add_to_cart"
    assert fake.tag_events == []


def test_reloading_the_thank_you_page_counts_one_conversion(
    shop: Shop, fake: Any, page: Any
) -> None:
    app, server = shop
    page.goto(f"{server.url}/cart")
    page.click("#buy")
    page.wait_for_selector("#order")
    # The tag fires on every render, with the same id; each reload once the tag has reported.
    assert fake.wait_for_tag_events(1)
    for renders in range(2, 5):
        page.reload()
        page.wait_for_selector("#order")
        assert fake.wait_for_tag_events(renders)
    settle(app)
    assert [e["event_id"] for e in fake.capi_events] == ["checkout-A-1001"]
    assert {t.event_id for t in fake.tag_events} == {"checkout-A-1001"}
    [conversion] = fake.conversions()
    assert conversion.sources == {"tag", "capi"}
    assert get_state(app).outbox.stats().delivered == 1


def test_a_visitor_without_javascript_pairs_through_the_noscript_pixel(
    shop: Shop, fake: Any, browser: Any
) -> None:
    app, server = shop
    context = browser.new_context(user_agent=DESKTOP_CHROME_UA, java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{server.url}/cart")
    page.click("#buy")  # a plain form post: no script runs anywhere
    page.wait_for_selector("#order")
    assert fake.wait_for_tag_events(1)
    settle(app)
    [tag] = fake.tag_events
    assert (tag.event_name, tag.event_id, tag.tag_id) == (
        "checkout",
        "checkout-A-1001",
        "2612345678901",
    )
    [conversion] = fake.conversions()
    assert conversion.sources == {"tag", "capi"}
    assert conversion.event_id == "checkout-A-1001"
    context.close()


def test_a_declined_visitor_is_tracked_on_neither_channel(
    make_shop: Callable[..., Shop], fake: Any, page: Any
) -> None:
    app, server = make_shop(REQUIRE_CONSENT=True)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.goto(f"{server.url}/product")
    loaded(page)
    page.click("#add")  # before any decision: held, not sent
    page.click("#no")
    page.click("#add")
    page.goto(f"{server.url}/cart")
    page.click("#buy")
    page.wait_for_selector("#order")
    # The checkout POST is the shop's own; nothing went to dedupkit or to the tag.
    assert [u for u in sent if "/dedupkit/events" in u or "/_fake/" in u] == []
    assert page.evaluate("document.querySelectorAll('script[src*=\"ct/core.js\"]').length") == 0
    settle(app)
    assert fake.capi_events == []
    assert fake.tag_events == []
    assert get_state(app).outbox.stats().skipped.get("no_consent") == 1


def test_consent_granted_later_releases_both_channels(
    make_shop: Callable[..., Shop], fake: Any, page: Any
) -> None:
    _app, server = make_shop(REQUIRE_CONSENT=True)
    page.goto(f"{server.url}/product")
    loaded(page)
    held_id = page.evaluate("dedupkit.track('add_to_cart', {value: 1, currency: 'USD'})")
    page.click("#yes")
    assert fake.wait_for(lambda: fake.tag_events and fake.capi_events)
    assert fake.capi_events[0]["event_id"] == held_id
    assert fake.tag_events[0].event_id == held_id
    assert {c["name"]: c["value"] for c in page.context.cookies()}["_dedupkit_consent"] == "1"


def test_a_crawler_sends_nothing_to_the_conversions_api(
    shop: Shop, fake: Any, browser: Any
) -> None:
    app, server = shop
    context = browser.new_context(user_agent=GOOGLEBOT_UA)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/product")
        loaded(page)
        with page.expect_response("**/dedupkit/events") as answer:
            page.click("#add")
        assert answer.value.json()["status"] == "skipped: bot"
        page.goto(f"{server.url}/cart")
        page.click("#buy")
        page.wait_for_selector("#order")
    finally:
        context.close()
    settle(app)
    assert fake.capi_events == []
    assert get_state(app).outbox.stats().skipped.get("bot") == 2


def test_automatic_page_visit_fires_once_per_page_on_both_channels(
    make_shop: Callable[..., Shop], fake: Any, page: Any
) -> None:
    app, server = make_shop(PAGE_VISIT=True)
    page.goto(f"{server.url}/")
    loaded(page)
    page.click("#product")
    loaded(page)
    # The snippet included a second time must not fire again.
    page.add_script_tag(url=f"{server.url}/dedupkit/dedupkit.js")
    assert fake.wait_for(lambda: len(fake.capi_events) == 2 and len(fake.tag_events) == 2)
    settle(app)
    assert len(fake.capi_events) == 2
    assert len(fake.tag_events) == 2
    assert fake.page_calls == []  # no bare pintrk('page') beside the page_visit
    conversions = fake.conversions()
    assert len(conversions) == 2
    assert all(c.sources == {"tag", "capi"} for c in conversions)
    assert all(c.event_name == "page_visit" for c in conversions)


def test_a_static_site_on_another_subdomain_keeps_the_click(
    make_shop: Callable[..., Shop], fake: Any, page: Any
) -> None:
    site: dict[str, str] = {}
    with LiveServer(static_site(site)) as www:
        www_origin = f"http://www.shop.test:{www.port}"
        # Settings are read once at start-up: the static site listens before the shop starts.
        _, shop_server = make_shop(COOKIE_DOMAIN="shop.test", ALLOWED_ORIGINS=[www_origin])
        shop_url = f"http://shop.test:{shop_server.port}"
        site["/landing.html"] = f"""<!doctype html><html><head>
<script defer src="{shop_url}/dedupkit/dedupkit.js" data-cookie-domain="shop.test"></script>
</head><body><button id="signup" onclick="window.lastId=dedupkit.track('search',
{{search_query: 'winter boots'}})">Search</button></body></html>"""
        page.goto(f"{www_origin}/landing.html?epik=from-the-ad")
        loaded(page)
        page.click("#signup")
        assert fake.wait_for_capi_events(1)
        [search] = fake.capi_events
        assert search["user_data"]["click_id"] == "from-the-ad"
        assert search["event_source_url"] == f"{www_origin}/landing.html?epik=from-the-ad"
        # The shop's server set its own first-party cookie for the whole site.
        cookies = {(c["name"], c["domain"]) for c in page.context.cookies()}
        assert ("_epik", ".shop.test") in cookies

        page.goto(f"{shop_url}/cart")
        page.click("#buy")
        page.wait_for_selector("#order")
        assert fake.wait_for_capi_events(2)
        assert fake.capi_events[1]["user_data"]["click_id"] == "from-the-ad"


def test_a_cached_page_is_right_for_every_visitor(
    make_shop: Callable[..., Shop], fake: Any, browser: Any
) -> None:
    app, server = make_shop(REQUIRE_CONSENT=True, PAGE_VISIT=True)
    host = server.url.split("//")[1].split(":")[0]
    visits: dict[str, Any] = {}
    for visitor, consent in (("first", "1"), ("second", None)):
        context = browser.new_context(user_agent=DESKTOP_CHROME_UA)
        if consent:
            context.add_cookies(
                [{"name": "_dedupkit_consent", "value": consent, "domain": host, "path": "/"}]
            )
        page = context.new_page()
        page.goto(f"{server.url}/cached")  # the first visitor's HTML, served to both
        loaded(page)
        visits[visitor] = (context, page)

    def core_scripts(page: Any) -> int:
        count: int = page.evaluate(
            "document.querySelectorAll('script[src*=\"ct/core.js\"]').length"
        )
        return count

    first, second = visits["first"][1], visits["second"][1]
    assert core_scripts(first) == 1
    assert fake.wait_for(lambda: len(fake.capi_events) == 1 and len(fake.tag_events) == 1)
    # The second visitor has said nothing yet: the first one's yes does not apply.
    assert core_scripts(second) == 0
    settle(app)
    assert len(fake.capi_events) == 1

    second.click("#yes")
    assert fake.wait_for(lambda: len(fake.capi_events) == 2 and len(fake.tag_events) == 2)
    assert core_scripts(second) == 1
    conversions = fake.conversions()
    assert len({c.event_id for c in conversions}) == 2  # one id per page view, cache or not
    assert all(c.sources == {"tag", "capi"} for c in conversions)
    for context, _ in visits.values():
        context.close()
