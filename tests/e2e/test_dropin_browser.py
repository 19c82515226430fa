"""The drop-in script tag in real Chromium: a static page on another origin, the fake Pinterest.

The shop app runs on one loopback server, the static page on another port (another origin). The
page gets the shipped snippet (``dedupkit.min.js``) and the fake's stand-in core.js. What the
browser sends is captured at the events endpoint; what Pinterest would count comes from the fake.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dedupkit.testing import FakePinterest
from dedupkit.web.assets import queue_stub, snippet

from ..conftest import TAG_ID, AppFactory
from ..support.browser import DESKTOP_CHROME_UA
from ..support.live_server import LiveServer, static_site

pytestmark = pytest.mark.browser

#: Pinterest's base code (pinterest.md §8.1) loading ``{src}``, with load and page calls.
BASE_CODE = (
    "<script>!function(e){if(!window.pintrk){window.pintrk=function(){window.pintrk.queue.push("
    'Array.prototype.slice.call(arguments))};var n=window.pintrk;n.queue=[],n.version="3.0";'
    'var t=document.createElement("script");t.async=!0,t.src=e;'
    'var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r)}}'
    '("{src}");pintrk("load","{tag}");pintrk("page");</script>'
)
#: What ``{{ dedupkit.pintrk(event) }}`` renders for a mirrored event (without its <noscript>).
MIRROR = (
    "<script>!function(d,t,x,n){d&&d.mirror?d.mirror(t,x,n):window.pintrk&&pintrk('track',t,x)}"
    "(window.dedupkit,{tag},{data},{capi})</script>"
)
BUTTON = (
    "<button id=add onclick=\"window.lastId=dedupkit.track('add_to_cart',"
    "{value:'9.99',currency:'USD'})\">Add</button>"
    # The server checks tickets (a made-up one is refused): this one only shows what is sent.
    "<button id=ticket onclick=\"dedupkit.track('checkout',{value:'5.00',currency:'USD'},"
    "{ticket:'t.1'})\">Pay</button>"
)


class Site:
    """A shop app and a static site on another origin; ``page()`` opens one of its pages."""

    def __init__(
        self, fake: FakePinterest, shop: LiveServer, www: LiveServer, pages: dict[str, str]
    ) -> None:
        self.fake, self.shop, self.www, self.pages = fake, shop, www, pages
        #: JSON bodies the browser posted to the events endpoint, in order.
        self.beacons: list[dict[str, Any]] = []

    def script_tag(self, **attrs: str) -> str:
        attrs = {"tag-id": TAG_ID, "pintrk-src": self.fake.pintrk_src, **attrs}
        data = "".join(f' data-{name}="{value}"' for name, value in attrs.items())
        return f'<script defer src="{self.shop.url}/dedupkit/dedupkit.js"{data}></script>'

    def open(
        self, browser: Any, head: str, body: str = BUTTON, gpc: bool = False, script: str = ""
    ) -> Any:
        self.pages["/p.html"] = (
            f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"
        )
        context = browser.new_context(user_agent=DESKTOP_CHROME_UA)
        if gpc:  # Chromium has no GPC switch; Firefox and Brave set this
            context.add_init_script(
                "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', "
                "{get: function () { return true; }})"
            )
        if script:
            context.add_init_script(script)
        page = context.new_page()
        # The shipped bytes, whichever file the app's route serves today.
        page.route(
            "**/dedupkit/dedupkit.js*",
            lambda route: route.fulfill(body=snippet()[0], content_type="application/javascript"),
        )

        def capture(request: Any) -> None:
            if request.method == "POST" and request.url.endswith("/dedupkit/events"):
                self.beacons.append(json.loads(request.post_data))

        page.on("request", capture)
        page.goto(f"{self.www.url}/p.html")
        page.wait_for_function("window.dedupkit && window.dedupkit.loaded === true")
        return page

    def wait_for_beacons(self, page: Any, count: int, timeout: float = 10.0) -> None:
        # Playwright delivers request events only while it runs: poll through it, with a deadline.
        deadline = time.monotonic() + timeout
        while len(self.beacons) < count and time.monotonic() < deadline:
            page.wait_for_timeout(20)
        assert len(self.beacons) >= count, self.beacons


@pytest.fixture
def site(make_app: AppFactory) -> Iterator[Site]:
    pages: dict[str, str] = {}
    with FakePinterest() as fake, LiveServer(static_site(pages)) as www:
        app = make_app(
            ALLOWED_ORIGINS=[www.url],
            BACKGROUND_SENDER=True,
            API_BASE_URL=fake.api_base_url,
            PINTRK_SRC=fake.pintrk_src,
            FLUSH_INTERVAL=0.05,
        )
        with LiveServer(app) as shop:
            yield Site(fake, shop, www, pages)


def core_scripts(page: Any) -> int:
    count: int = page.evaluate("document.querySelectorAll('script[src*=\"ct/core.js\"]').length")
    return count


def test_only_the_drop_in_tag_loads_the_tag_and_pairs_with_capi(site: Site, browser: Any) -> None:
    page = site.open(browser, site.script_tag())
    assert site.fake.wait_for(lambda: len(site.fake.page_calls) == 1)
    page.click("#add")
    event_id = page.evaluate("window.lastId")
    fake = site.fake
    assert fake.wait_for(lambda: fake.tag_events and fake.capi_events)
    [tag] = fake.tag_events
    assert (tag.tag_id, tag.event_name, tag.event_id) == (TAG_ID, "addtocart", event_id)
    [conversion] = fake.conversions()
    assert conversion.event_id == event_id
    assert conversion.sources == {"tag", "capi"}
    assert core_scripts(page) == 1
    assert fake.page_calls[0].tag_id == TAG_ID
    page.click("#ticket")
    site.wait_for_beacons(page, 2)
    beacon, with_ticket = site.beacons
    assert (beacon["event_id"], beacon["tag"]) == (event_id, 1)
    assert not {"ticket", "gpc", "consent", "evidence"} & set(beacon)
    assert (with_ticket["event_name"], with_ticket["ticket"]) == ("checkout", "t.1")
    page.context.close()


def test_with_the_base_code_present_each_event_fires_once(site: Site, browser: Any) -> None:
    base = BASE_CODE.replace("{src}", site.fake.pintrk_src).replace("{tag}", TAG_ID)
    page = site.open(browser, base + site.script_tag())
    page.click("#add")
    page.click("#add")
    fake = site.fake
    assert fake.wait_for(lambda: len(fake.tag_events) == 2 and len(fake.capi_events) == 2)
    conversions = fake.conversions()
    assert len(conversions) == 2
    assert all(c.sources == {"tag", "capi"} for c in conversions)
    assert all(len(c.tag_events) == 1 for c in conversions)
    assert len(fake.page_calls) == 1  # the base code's, not a second one from the snippet
    assert core_scripts(page) == 1
    page.context.close()


def test_a_mirrored_server_event_sends_its_evidence(site: Site, browser: Any) -> None:
    data = {"value": "72.39", "currency": "USD", "event_id": "checkout-A-1001"}
    mirror = (
        MIRROR.replace("{tag}", '"checkout"')
        .replace("{data}", json.dumps(data))
        .replace("{capi}", '"checkout"')
    )
    page = site.open(browser, f"<script>{queue_stub()}</script>" + site.script_tag(), body=mirror)
    fake = site.fake
    assert fake.wait_for(lambda: fake.tag_events)
    site.wait_for_beacons(page, 1)
    assert site.beacons == [
        {"evidence": 1, "event_name": "checkout", "event_id": "checkout-A-1001", "tag": 1}
    ]
    [tag] = fake.tag_events
    assert (tag.event_name, tag.event_id) == ("checkout", "checkout-A-1001")
    page.context.close()


def test_gpc_ldp_flags_the_beacon_and_opt_out_sends_nothing(site: Site, browser: Any) -> None:
    ldp = site.open(browser, site.script_tag(), gpc=True)
    ldp.click("#add")
    site.wait_for_beacons(ldp, 1)
    assert site.beacons[0]["gpc"] == 1
    ldp.context.close()

    sent: list[str] = []
    site.beacons.clear()
    opted_out = site.open(browser, site.script_tag(gpc="opt_out"), gpc=True)
    opted_out.on("request", lambda r: sent.append(r.url))
    opted_out.click("#add")
    # A later beacon would still be caught: the page's own probe request goes after the click.
    with opted_out.expect_response(f"{site.www.url}/probe"):
        opted_out.evaluate(f"fetch('{site.www.url}/probe')")
    assert [u for u in sent if "/dedupkit/events" in u or "ct/core.js" in u] == []
    assert site.beacons == []
    assert core_scripts(opted_out) == 0
    opted_out.context.close()


def test_without_send_beacon_the_fetch_fallback_reaches_the_shop(site: Site, browser: Any) -> None:
    # Some hardened browsers turn sendBeacon off; the fallback is a credentialed CORS fetch.
    page = site.open(browser, site.script_tag(), script="delete Navigator.prototype.sendBeacon")
    assert page.evaluate("typeof navigator.sendBeacon") == "undefined"
    with page.expect_response("**/dedupkit/events") as answer:
        page.click("#add")
    assert answer.value.status == 202
    event_id = page.evaluate("window.lastId")
    fake = site.fake
    assert fake.wait_for(lambda: fake.capi_events)
    assert fake.capi_events[0]["event_id"] == event_id
    page.context.close()
