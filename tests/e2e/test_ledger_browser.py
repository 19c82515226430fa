"""The dedup ledger against what Pinterest really got: real Chromium, a real shop, the fake.

One visitor with the tag allowed and one whose ad blocker stops core.js walk the same funnel
(a browser add to cart, a server-tracked checkout the page mirrors). The ledger must call the
first visitor's events *paired* and the second's *server only*, exactly as the fake counts
them; a visitor who refuses consent sends no evidence; test mode shows its banner; the page
fits a 390 px phone.

The evidence is the snippet's own: the ``tag`` flag of the browser event's beacon, and the
evidence beacon of the checkout the thank-you page mirrors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from ..support.browser import DESKTOP_CHROME_UA, shop_funnel
from ..support.polling import wait_until
from ..support.shop_app import Shop, shop_servers

pytestmark = pytest.mark.browser


@pytest.fixture
def make_shop(fake: FakePinterest, tmp_path: Path) -> Iterator[Callable[..., Shop]]:
    with shop_servers(fake, tmp_path, DEBUG_UI=True) as factory:
        yield factory


def visitor(browser: Any, *, blocked: bool = False, width: int = 1280) -> Any:
    context = browser.new_context(
        user_agent=DESKTOP_CHROME_UA, viewport={"width": width, "height": 900}
    )
    page = context.new_page()
    if blocked:
        page.route("**/ct/core.js", lambda route: route.abort())  # what an ad blocker does
    return page


def ledger(page: Any, url: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(page.goto(f"{url}/dedupkit/debug?format=json").text())
    return data


def shoot(page: Any, url: str, name: str, tmp_path: Path) -> None:
    """A full-page screenshot, to look at while building (DEDUPKIT_SCREENSHOTS=dir keeps it)."""
    page.goto(f"{url}/dedupkit/debug")
    folder = Path(os.environ.get("DEDUPKIT_SCREENSHOTS") or tmp_path)
    page.screenshot(path=str(folder / f"ledger-{name}.png"), full_page=True)


def test_paired_for_the_tag_and_server_only_for_the_blocked_as_the_fake_counts(
    make_shop: Callable[..., Shop], fake: FakePinterest, browser: Any, tmp_path: Path
) -> None:
    app, server = make_shop()
    allowed, blocked = visitor(browser), visitor(browser, blocked=True)
    allowed_ids = shop_funnel(allowed, server.url)
    blocked_ids = shop_funnel(blocked, server.url)
    everything = {*allowed_ids, *blocked_ids}

    assert fake.wait_for(lambda: {e["event_id"] for e in fake.capi_events} >= everything)
    tagged = {t.event_id for t in fake.tag_events}
    assert set(allowed_ids) <= tagged and not set(blocked_ids) & tagged

    def judged() -> dict[str, str]:
        get_state(app).background.wake()
        entries = ledger(allowed, server.url)["entries"]
        return {e["event_id"]: e["verdict"] for e in entries if e["event_id"] in everything}

    expected = {i: "paired" for i in allowed_ids} | {i: "server only" for i in blocked_ids}
    assert wait_until(lambda: judged() == expected, timeout=10), judged()
    # Exactly what the fake counted: one conversion per event, from both channels or the API.
    sources = {c.event_id: c.sources for c in fake.conversions()}
    assert [sources[i] for i in allowed_ids] == [{"tag", "capi"}] * 2
    assert [sources[i] for i in blocked_ids] == [{"capi"}] * 2

    shoot(allowed, server.url, "1280", tmp_path)
    phone = visitor(browser, width=390)
    shoot(phone, server.url, "390", tmp_path)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator('[data-verdict="paired"]').count() == 2
    for page in (allowed, blocked, phone):
        page.context.close()


def test_the_snippets_tag_flag_reaches_the_ledger(
    make_shop: Callable[..., Shop], fake: FakePinterest, browser: Any
) -> None:
    app, server = make_shop()
    page = visitor(browser)
    add_id, _ = shop_funnel(page, server.url)

    def verdict() -> str | None:
        get_state(app).background.wake()
        entries = ledger(page, server.url)["entries"]
        return next((e["verdict"] for e in entries if e["event_id"] == add_id), None)

    assert wait_until(lambda: verdict() == "paired", timeout=10), verdict()
    assert add_id in {t.event_id for t in fake.tag_events}
    page.context.close()


def test_a_visitor_who_refuses_consent_sends_no_evidence(
    make_shop: Callable[..., Shop], fake: FakePinterest, browser: Any
) -> None:
    app, server = make_shop(REQUIRE_CONSENT=True)
    page = visitor(browser)
    beacons: list[Any] = []
    page.on(
        "request",
        lambda r: beacons.append(r.post_data) if r.url.endswith("/dedupkit/events") else None,
    )
    page.goto(f"{server.url}/product")
    page.wait_for_function("window.dedupkit && window.dedupkit.loaded === true")
    page.click("#no")
    page.click("#add")
    page.goto(f"{server.url}/cart")
    page.click("#buy")
    page.wait_for_selector("#order")
    page.goto(f"{server.url}/")  # any beacon of the thank-you page has left by now
    assert beacons == []
    assert get_state(app).outbox.stats().skipped.get("no_consent") == 1
    assert fake.tag_events == []
    page.context.close()


def test_test_mode_shows_its_banner(
    make_shop: Callable[..., Shop], fake: FakePinterest, browser: Any
) -> None:
    _app, server = make_shop(TEST_MODE=True)
    page = visitor(browser, width=390)
    page.goto(f"{server.url}/dedupkit/debug")
    banner = page.locator("#test-mode")
    assert banner.is_visible()
    assert "records nothing" in banner.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.context.close()
