"""The ledger's headline against what Pinterest counted: real Chromium, a real shop, the fake.

Five shoppers on different browsers walk the same funnel (a browser add to cart, a checkout
the server tracks and the page mirrors). The fake refuses its tag to the ones a blocker would
stop: Safari on an iPhone, Firefox, and a desktop Chrome with an ad blocker; Chrome on a
desktop and the Pinterest app's in-app browser load it. The ledger's headline, its shares and
its breakdown by browser and device type must be what the fake counted. The page must pass
axe-core (no serious or critical violation) and fit a 390 px phone with legible chart text;
screenshots at 1280 and 390 px are kept in ``tests/artifacts/`` to look at.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dedupkit.ledger.chart import FONT_SIZE, WIDTH
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest
from dedupkit.testing.blockers import AD_BLOCKER_MARKER, typical_blockers

from ..support.agents import (
    ANDROID_PINTEREST_APP_UA,
    CHROME_UA,
    FIREFOX_DESKTOP_UA,
    IPHONE_SAFARI_UA,
)
from ..support.axe import axe_violations
from ..support.browser import shop_funnel
from ..support.polling import wait_until
from ..support.shop_app import Shop, shop_servers

pytestmark = pytest.mark.browser

#: Where the screenshots go (gitignored); DEDUPKIT_SCREENSHOTS=dir puts them elsewhere.
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
#: What the test shop's checkout is worth.
CHECKOUT_VALUE = 24.13
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
#: name: (user agent, viewport, the fake blocks the tag)
SHOPPERS = {
    "chrome": (CHROME_UA, DESKTOP, False),
    "in-app": (ANDROID_PINTEREST_APP_UA, PHONE, False),
    "safari-iphone": (IPHONE_SAFARI_UA, PHONE, True),
    "firefox": (FIREFOX_DESKTOP_UA, DESKTOP, True),
    "chrome-adblock": (f"{CHROME_UA} {AD_BLOCKER_MARKER}", DESKTOP, True),
}


@pytest.fixture
def make_shop(fake: FakePinterest, tmp_path: Path) -> Iterator[Callable[..., Shop]]:
    with shop_servers(fake, tmp_path, DEBUG_UI=True) as factory:
        yield factory


def shopper(browser: Any, user_agent: str, viewport: dict[str, int]) -> Any:
    context = browser.new_context(user_agent=user_agent, viewport=viewport)
    return context.new_page()


def ledger_json(page: Any, url: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(page.goto(f"{url}/dedupkit/debug?format=json").text())
    return data


def screenshot_path(name: str) -> Path:
    folder = Path(os.environ.get("DEDUPKIT_SCREENSHOTS") or ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"ledger-{name}.png"


def screenshot(page: Any, name: str) -> Path:
    path = screenshot_path(name)
    page.screenshot(path=str(path), full_page=name.endswith("full"))
    return path


def test_the_headline_is_what_the_fake_counted_across_browsers_and_blockers(
    make_shop: Callable[..., Shop], fake: FakePinterest, browser: Any
) -> None:
    app, server = make_shop()
    fake.block_tag(typical_blockers)
    ids: dict[str, tuple[str, str]] = {}
    for name, (user_agent, viewport, _) in SHOPPERS.items():
        page = shopper(browser, user_agent, viewport)
        ids[name] = shop_funnel(page, server.url)
        page.context.close()
    everything = {i for pair in ids.values() for i in pair}
    assert fake.wait_for(lambda: {e["event_id"] for e in fake.capi_events} >= everything)

    # What Pinterest counted: one conversion per event; from both channels where the tag
    # loaded, from the API alone where it was blocked.
    conversions = {c.event_id: c for c in fake.conversions() if c.event_id in everything}
    assert len(conversions) == len(everything) == 10
    paired = {i for i, c in conversions.items() if c.sources == {"tag", "capi"}}
    api_only = {i for i, c in conversions.items() if c.sources == {"capi"}}
    blocked = {i for n, pair in ids.items() if SHOPPERS[n][2] for i in pair}
    assert api_only == blocked and paired == everything - blocked
    tag_events = [t for t in fake.tag_events if t.event_id in everything]
    capi_events = [e for e in fake.capi_events if e["event_id"] in everything]
    assert (len(tag_events), len(capi_events)) == (len(paired), len(everything))
    assert sum(fake.tag_blocked.values()) >= 3

    viewer = shopper(browser, CHROME_UA, DESKTOP)

    def delivered() -> bool:
        get_state(app).background.wake()
        day = ledger_json(viewer, server.url)["value"]["day"]
        return bool(day["counted"] == len(everything) and day["pending"] == 0)

    assert wait_until(delivered, timeout=15), ledger_json(viewer, server.url)["value"]
    data = ledger_json(viewer, server.url)
    day, week = data["value"]["day"], data["value"]["week"]
    assert day["counted"] == len(conversions)
    assert day["paired"] == len(paired) == len(tag_events)
    assert day["server_only"] == len(api_only)
    assert (day["checkouts"], day["recovered_checkouts"]) == (5, 3)
    assert day["recovered_checkout_share"] == 0.6
    assert day["recovered_revenue"] == {"USD": round(3 * CHECKOUT_VALUE, 2)}
    assert day["shares"] == {"paired": 0.4, "server_only": 0.6, "tag_only": 0.0}
    assert (
        data["headline"]
        == day["sentence"]
        == (
            "Last day: Pinterest counted 10 conversions once; the server recovered 6 that the tag "
            "lost (60% of checkouts, $72.39 of revenue)."
        )
    )
    assert (week["counted"], week["server_only"]) == (10, 6)
    assert data["status"]["level"] == "ok"
    # Where the tag is lost, from the visitors' user agents.
    by = {key: {r["name"]: r["share"] for r in rows} for key, rows in data["devices"].items()}
    assert by["browser"] == {"Safari": 1.0, "Firefox": 1.0, "Chrome": 0.5, "Pinterest": 0.0}
    assert by["type"] == {"mobile": 1.0, "desktop": 0.6667, "in-app": 0.0}
    assert by["os"] == {"iOS": 1.0, "Windows": 0.6667, "Android": 0.0}
    # Nothing of a user agent beyond its label reaches the ledger.
    assert "AppleWebKit" not in json.dumps(data)

    # The page says the same, and its first screen answers "is it working, what did it
    # recover" on a desktop and on a phone.
    for label, viewport in (("1280", DESKTOP), ("390", PHONE)):
        page = shopper(browser, CHROME_UA, viewport)
        page.goto(f"{server.url}/dedupkit/debug")
        assert page.inner_text("#headline") == day["sentence"]
        assert page.get_attribute("#status", "data-level") == "ok"
        assert "Working" in page.inner_text("#status")
        for selector in ("#status", "#headline"):
            box = page.locator(selector).bounding_box()
            assert box["y"] + box["height"] <= viewport["height"], (label, selector)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        row = page.locator('#lost-browser tr[data-name="Safari"]')
        assert row.inner_text().split() == ["Safari", "2", "100%"]
        screenshot(page, label)
        screenshot(page, f"{label}-full")
        # Every detail opened, so that axe and the screenshot see all of it.
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        shown = page.evaluate("document.querySelector('svg.chart').getBoundingClientRect().width")
        assert FONT_SIZE * shown / WIDTH >= 12, f"chart text {FONT_SIZE * shown / WIDTH:.1f} px"
        assert page.locator('#events tr[data-verdict="server only"]').count() == 6
        screenshot(page, f"{label}-open-full")
        for part in ("delivery", "timeline", "matching", "recent"):
            page.locator(f"#{part}").screenshot(path=str(screenshot_path(f"{label}-{part}")))
        assert axe_violations(page) == [], label
        page.context.close()
    viewer.context.close()


def test_a_newcomer_testing_with_curl_sees_why_nothing_was_sent(
    make_shop: Callable[..., Shop], browser: Any
) -> None:
    _app, server = make_shop()
    for n in range(3):  # what `curl -d … /dedupkit/events` sends: a bot's, not a shopper's
        body = {"event_name": "add_to_cart", "event_id": f"curl-{n}", "data": {"value": 1}}
        response = httpx.post(
            f"{server.url}/dedupkit/events",
            content=json.dumps(body),
            headers={"User-Agent": "curl/8.5.0", "Content-Type": "text/plain"},
        )
        assert response.json()["status"] == "skipped: bot"
    page = shopper(browser, CHROME_UA, PHONE)
    page.goto(f"{server.url}/dedupkit/debug")
    status = page.inner_text("#status")
    assert "No conversions yet" in status
    assert "3 events skipped: bot (3)." in status
    assert "curl" in status
    assert page.get_attribute("#status", "data-level") == "idle"
    screenshot(page, "390-curl")
    assert axe_violations(page) == []
    page.context.close()
