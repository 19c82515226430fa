"""Conversions from anywhere, forged from nowhere: real Chromium, real servers, the fake Pinterest.

A single-page checkout reports its purchase from the browser with a ticket; a forged, replayed
or expired ticket gets nothing to Pinterest; the demo's hosted checkout is confirmed by a
webhook and still attributed to the ad click; a GPC browser gets an LDP event on both channels.

The SPA reports its purchase through the snippet, ``dedupkit.track(name, data, {ticket,
event_id})``; the forgeries are posted with ``fetch`` so that each answer can be read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string

from dedupkit import DedupKit
from dedupkit.intake.tickets import mint
from dedupkit.signing import signing_keys
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from ..support.browser import DESKTOP_CHROME_UA
from ..support.live_server import LiveServer
from ..support.polling import wait_until

pytestmark = pytest.mark.browser

SPA = """<!doctype html><html><head>{{ dedupkit.head() }}</head><body>
<p id="ticket">{{ ticket }}</p>
<script>
window.buy = function (ticket) {
  // The app confirmed the payment in the browser: one call, one event_id for tag and server.
  return dedupkit.track('checkout', {value: '24.13', currency: 'USD', order_id: 'A-1001'},
    {ticket: ticket, event_id: 'checkout-A-1001'});
};
window.report = function (ticket, data, eventId) {
  // The app confirmed the payment in the browser: tag and server get one event_id.
  window.pintrk('track', 'checkout', Object.assign({event_id: eventId}, data));
  return fetch('/dedupkit/events', {method: 'POST', body: JSON.stringify({
    event_name: 'checkout', event_id: eventId, event_source_url: location.href,
    data: data, ticket: ticket})}).then(function (r) { return r.status; });
};
</script></body></html>"""
THANKS = "<html><head>{{ dedupkit.head() }}</head><body>{{ dedupkit.pintrk(event) }}</body></html>"
ORDER = {"value": "24.13", "currency": "USD", "order_id": "A-1001"}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(user_agent=DESKTOP_CHROME_UA)
    yield context.new_page()
    context.close()


@pytest.fixture
def serve(fake: FakePinterest, tmp_path: Path) -> Iterator[Callable[[Flask], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def fake_settings(fake: FakePinterest, tmp_path: Path) -> dict[str, Any]:
    return {
        "DEDUPKIT_AD_ACCOUNT_ID": fake.ad_account_id,
        "DEDUPKIT_CONVERSION_TOKEN": fake.token,
        "DEDUPKIT_TAG_ID": "2612345678901",
        "DEDUPKIT_API_BASE_URL": fake.api_base_url,
        "DEDUPKIT_PINTRK_SRC": fake.pintrk_src,
        "DEDUPKIT_QUEUE_URL": f"sqlite:///{tmp_path}/outbox.sqlite3",
        "DEDUPKIT_FLUSH_INTERVAL": 0.05,
    }


def spa_shop(fake: FakePinterest, tmp_path: Path, **config: Any) -> Flask:
    app = Flask("spa")
    app.config.update(SECRET_KEY="spa secret", **fake_settings(fake, tmp_path), **config)
    kit = DedupKit(app)

    @app.get("/spa")
    def spa() -> str:
        ticket = kit.ticket("checkout", order_id="A-1001", value="24.13", currency="USD")
        return render_template_string(SPA, ticket=ticket)

    @app.get("/thanks")
    def thanks() -> str:
        event = kit.track("checkout", order_id="A-1001", value="24.13", currency="USD")
        return render_template_string(THANKS, event=event)

    return app


def settle(app: Flask) -> None:
    outbox = get_state(app).outbox

    def drained() -> bool:
        get_state(app).background.wake()
        stats = outbox.stats()
        return stats.pending == 0 and stats.in_flight == 0

    assert wait_until(drained), f"outbox did not drain: {outbox.stats()}"


def report(page: Any, ticket: str, data: dict[str, Any], event_id: str = "checkout-A-1001") -> int:
    status: int = page.evaluate("([t, d, id]) => window.report(t, d, id)", [ticket, data, event_id])
    return status


def test_a_spa_checkout_with_a_ticket_pairs_with_the_tag_and_forgeries_get_nothing(
    fake: FakePinterest, tmp_path: Path, serve: Callable[[Flask], LiveServer], page: Any
) -> None:
    app = spa_shop(fake, tmp_path)
    server = serve(app)
    page.goto(f"{server.url}/spa?epik=spa-click")
    page.wait_for_function("window.dedupkit && window.dedupkit.loaded === true")
    ticket = page.inner_text("#ticket")

    assert page.evaluate("(t) => window.buy(t)", ticket) == "checkout-A-1001"
    assert fake.wait_for(lambda: fake.capi_events and fake.tag_events)
    [conversion] = fake.conversions()
    assert conversion.sources == {"tag", "capi"}
    assert conversion.event_id == "checkout-A-1001"
    assert fake.capi_events[0]["user_data"]["click_id"] == "spa-click"

    # Replayed, value changed, another order's ticket, expired: refused, nothing more sent.
    with app.app_context():
        state = get_state()
        keys = signing_keys(state.app, state.settings)
        other_order = mint(
            keys, state.names, "checkout", order_id="A-1002", value="24.13", currency="USD"
        )
        expired = mint(
            keys, state.names, "checkout", order_id="A-1001", value="24.13", currency="USD",
            expires_in=1, now=time.time() - 5,
        )  # fmt: skip
    assert report(page, ticket, ORDER) == 409
    assert report(page, ticket, {**ORDER, "value": "2.41"}) == 403
    assert report(page, other_order, ORDER) == 403
    assert report(page, other_order, {**ORDER, "order_id": "A-1001"}, "checkout-A-1002") == 403
    assert report(page, expired, ORDER) == 403
    assert report(page, ticket[:-4], ORDER) == 403
    settle(app)
    assert len(fake.capi_events) == 1
    assert get_state(app).outbox.stats().delivered == 1


def gpc_context(browser: Any) -> Any:
    """A browser context whose visitor sends Global Privacy Control, in header and page."""
    context = browser.new_context(user_agent=DESKTOP_CHROME_UA, extra_http_headers={"Sec-GPC": "1"})
    context.add_init_script(
        "Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})"
    )
    return context


def test_gpc_yields_an_ldp_event_on_both_channels(
    fake: FakePinterest, tmp_path: Path, serve: Callable[[Flask], LiveServer], browser: Any
) -> None:
    server = serve(spa_shop(fake, tmp_path))
    context = gpc_context(browser)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/thanks")
        assert fake.wait_for(lambda: fake.capi_events and fake.tag_events)
    finally:
        context.close()
    [capi] = fake.capi_events
    assert capi["custom_data"]["opt_out_type"] == "LDP"
    [tag] = fake.tag_events
    assert tag.data["opt_out_type"] == "LDP"
    assert tag.event_id == capi["event_id"]


def test_gpc_with_opt_out_sends_nothing_on_either_channel(
    fake: FakePinterest, tmp_path: Path, serve: Callable[[Flask], LiveServer], browser: Any
) -> None:
    app = spa_shop(fake, tmp_path, DEDUPKIT_GPC="opt_out")
    server = serve(app)
    context = gpc_context(browser)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/thanks")
        page.wait_for_function("window.dedupkit && window.dedupkit.loaded === true")
        page.evaluate("dedupkit.track('add_to_cart', {value: 1, currency: 'USD'})")
    finally:
        context.close()
    settle(app)
    assert fake.capi_events == []
    assert fake.tag_events == []
    assert get_state(app).outbox.stats().skipped == {"gpc_opt_out": 1}


def test_the_demos_hosted_checkout_is_attributed_to_the_landing_click(
    fake: FakePinterest, tmp_path: Path, serve: Callable[[Flask], LiveServer], page: Any
) -> None:
    from demo_site import create_app

    app = create_app(
        {
            "DEMO_FAKE_PINTEREST": fake,
            "DEDUPKIT_QUEUE_URL": f"sqlite:///{tmp_path}/demo.sqlite3",
            "DEDUPKIT_FLUSH_INTERVAL": 0.05,
        }
    )
    server = serve(app)
    page.goto(f"{server.url}/?epik=hosted-click")
    page.goto(f"{server.url}/products/SKU-MUG")
    page.click("#add-to-cart button")
    page.wait_for_function("document.getElementById('cart-count').textContent === '1'")
    page.goto(f"{server.url}/checkout")
    page.click("#hosted-checkout")  # to the payment provider's page
    page.wait_for_selector("#pay")
    page.click("#pay")  # the provider confirms by webhook, then sends the shopper back
    page.wait_for_selector("#event-id")
    order_event_id = page.inner_text("#event-id")
    assert fake.wait_for(
        lambda: any(
            c.event_id == order_event_id and c.sources == {"tag", "capi"}
            for c in fake.conversions()
        )
    )
    [capi] = [e for e in fake.capi_events if e["event_name"] == "checkout"]
    assert capi["user_data"]["click_id"] == "hosted-click"
    assert (
        capi["user_data"]["client_user_agent"] == DESKTOP_CHROME_UA
    )  # the shopper's, not the provider's
    page.goto(f"{server.url}/pinterest")
    row = page.locator("tr", has_text=order_event_id)
    assert "both" in row.inner_text()
    assert "hosted-click" in row.inner_text()
