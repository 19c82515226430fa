"""dedupkit in the stack real shops run, in real Chromium: Flask-Login, Flask-WTF's
``CSRFProtect``, Flask-Talisman's strict nonce-based Content-Security-Policy, Flask-Caching,
``ProxyFix`` behind a forwarding proxy, the app mounted under a prefix, and two apps from one
factory (see tests/support/stack_shop.py). Pinterest is the fake; each app has its own.

What each test guards against: a strict policy that blocks the tag's inline scripts (the
checkout then reaches the API only), ``CSRFProtect`` refusing every beacon, a single-page
checkout refused because its ticket alone did not give the event its id, and a base template
without ``{{ dedupkit.head() }}`` that nobody notices.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dedupkit.event.user_data import sha256_hex
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from ..support.browser import DESKTOP_CHROME_UA
from ..support.polling import wait_until
from ..support.stack_shop import CLIENT_IP, create_app, dedupkit_settings, mounted

pytestmark = pytest.mark.browser

#: Collects what Chromium reports as blocked by the policy, on every page of the context.
REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', function (e) {
  window.reportViolation(e.violatedDirective + ' ' + (e.blockedURI || 'inline'));
});
"""


class Browser:
    """One shopper's browser: a context that records every CSP violation and console error."""

    def __init__(self, browser: Any) -> None:
        self.violations: list[str] = []
        self.console: list[str] = []
        self.context = browser.new_context(user_agent=DESKTOP_CHROME_UA)
        self.context.expose_function("reportViolation", self._violation)
        self.context.add_init_script(REPORT_VIOLATIONS)
        self.page = self.context.new_page()
        self.page.on("console", self._console)

    def _violation(self, text: str) -> None:
        self.violations.append(text)

    def _console(self, message: Any) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.console.append(message.text)

    def open(self, url: str) -> Any:
        self.page.goto(url)
        self.until("window.dedupkit && window.dedupkit.loaded === true")
        return self.page

    def until(self, expression: str, timeout: float = 10.0) -> None:
        """Poll ``expression`` in the page. Not ``wait_for_function``: that evaluates a string
        with eval(), which the strict policy forbids."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(f"!!({expression})"):
            assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
            self.page.wait_for_timeout(20)


@pytest.fixture
def shopper(browser: Any) -> Iterator[Browser]:
    shopper = Browser(browser)
    yield shopper
    shopper.context.close()


def funnel(shopper: Browser, base: str) -> tuple[str, str]:
    """Sign in, add to cart, buy: the add-to-cart's event id and the order id."""
    page = shopper.open(f"{base}/")
    page.click("#login")
    page.wait_for_selector("#who")
    assert page.text_content("#who") == "jane"
    shopper.until("window.dedupkit && window.dedupkit.loaded === true")
    page.click("#add")
    add_id: str = page.evaluate("window.lastId")
    page.click("#cart")
    page.click("#buy")
    page.wait_for_selector("#order")
    order_id: str = page.text_content("#order") or ""
    return add_id, order_id


def paired(fake: FakePinterest, *keys: tuple[str, str]) -> bool:
    """Whether each (CAPI name, event_id) reached Pinterest from both the tag and the API."""
    sources = {(c.event_name, c.event_id): c.sources for c in fake.conversions()}
    return all(sources.get(key) == {"tag", "capi"} for key in keys)


def wait_paired(fake: FakePinterest, *keys: tuple[str, str]) -> None:
    assert fake.wait_for(lambda: paired(fake, *keys)), [
        (c.event_name, c.event_id, sorted(c.sources)) for c in fake.conversions()
    ]


def test_a_strict_nonce_policy_reports_no_violation_and_every_event_pairs(
    fake: FakePinterest, tmp_path: Path, shopper: Browser
) -> None:
    app = create_app(dedupkit_settings(fake), instance_path=str(tmp_path / "a"))
    with mounted({"/shop": app}) as server:
        add_id, order_id = funnel(shopper, f"{server.url}/shop")
        wait_paired(fake, ("add_to_cart", add_id), ("checkout", f"checkout-{order_id}"))
    assert shopper.violations == []
    assert [line for line in shopper.console if "Content Security Policy" in line] == []
    # The base code's own page call ran too: its script carried the nonce.
    assert len(fake.page_calls) >= 3


@pytest.mark.parametrize("csrf_first", [False, True], ids=["dedupkit-first", "csrf-first"])
def test_csrf_protect_lets_the_beacons_through_and_still_guards_the_shops_forms(
    fake: FakePinterest, tmp_path: Path, shopper: Browser, csrf_first: bool
) -> None:
    # Without Talisman: this test sees CSRFProtect alone (the whole stack is tested below).
    app = create_app(
        dedupkit_settings(fake),
        instance_path=str(tmp_path / "a"),
        csrf_first=csrf_first,
        talisman=False,
    )
    with mounted({"/shop": app}) as server:
        page = shopper.open(f"{server.url}/shop/product")
        page.click("#add")
        add_id = page.evaluate("window.lastId")
        wait_paired(fake, ("add_to_cart", add_id))
        # A forged form post, from the shop's own page but without the token.
        status = page.evaluate(
            "fetch('/shop/checkout', {method: 'POST', body: new URLSearchParams({x: '1'})})"
            ".then(function (answer) { return answer.status; })"
        )
        assert status == 400
    assert [e for e in fake.capi_events if e["event_name"] == "checkout"] == []


@pytest.mark.parametrize("talisman", [False, True], ids=["plain", "strict-csp"])
def test_a_ticket_alone_reports_a_single_page_checkout_on_both_channels(
    fake: FakePinterest, tmp_path: Path, shopper: Browser, talisman: bool
) -> None:
    app = create_app(dedupkit_settings(fake), instance_path=str(tmp_path / "a"), talisman=talisman)
    with mounted({"/shop": app}) as server:
        page = shopper.open(f"{server.url}/shop/spa")
        page.click("#pay")
        shopper.until("document.getElementById('paid').textContent !== ''")
        order_id = page.text_content("#paid")
        event_id = f"checkout-{order_id}"
        assert page.evaluate("window.paidId") == event_id
        wait_paired(fake, ("checkout", event_id))
    [capi] = [e for e in fake.capi_events if e["event_name"] == "checkout"]
    [tag] = [t for t in fake.tag_events if t.event_name == "checkout"]
    # One currency spelling on both channels, whatever the page wrote.
    assert capi["custom_data"]["currency"] == tag.data["currency"] == "EUR"
    assert shopper.violations == []


def test_a_base_template_without_head_is_named_in_the_log_and_the_ledger(
    fake: FakePinterest,
    tmp_path: Path,
    shopper: Browser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = dedupkit_settings(fake, DEBUG_UI=True)
    app = create_app(settings, instance_path=str(tmp_path / "a"), with_head=False, talisman=False)
    with mounted({"/shop": app}) as server:
        page = shopper.page
        for _ in range(3):
            page.goto(f"{server.url}/shop/cart")
            page.click("#buy")
            page.wait_for_selector("#order")
        assert fake.wait_for(lambda: len(fake.capi_events) == 3)
        answer = page.goto(f"{server.url}/shop/dedupkit/debug?format=json")
        headline = json.loads(answer.text())["headline"]
    # No tag fired: nothing on the page could call it.
    assert fake.tag_events == []
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "has no {{ dedupkit.head() }}" in r.getMessage()
    ]
    assert warnings and "'/thanks/A-1001'" in warnings[0] and "'checkout'" in warnings[0]
    assert headline.endswith("is {{ dedupkit.head() }} in your base template?")


def test_the_whole_stack_with_two_apps_of_one_factory(
    tmp_path: Path, shopper: Browser, browser: Any
) -> None:
    with (
        FakePinterest() as fake_a,
        FakePinterest(ad_account_id="549764982400", token="outlet-token") as fake_b,
    ):
        apps = {
            prefix: create_app(
                dedupkit_settings(fake, QUEUE_URL=f"sqlite:///{tmp_path}/{name}.sqlite3"),
                instance_path=str(tmp_path / "instance"),
            )
            for prefix, name, fake in (("/shop", "shop", fake_a), ("/outlet", "outlet", fake_b))
        }
        with mounted(apps) as server:
            add_a, order_a = funnel(shopper, f"{server.url}/shop")
            other = Browser(browser)
            try:
                add_b, order_b = funnel(other, f"{server.url}/outlet")
            finally:
                other.context.close()
            wait_paired(fake_a, ("add_to_cart", add_a), ("checkout", f"checkout-{order_a}"))
            wait_paired(fake_b, ("add_to_cart", add_b), ("checkout", f"checkout-{order_b}"))
        for fake, prefix in ((fake_a, "/shop"), (fake_b, "/outlet")):
            # Each app's events reach its own account only, from its own mount.
            assert len(fake.capi_events) == 2
            for event in fake.capi_events:
                assert event["event_source_url"].startswith(f"{server.url}{prefix}/")
                # ProxyFix: the visitor's address as the proxy forwarded it.
                assert event["user_data"]["client_ip_address"] == CLIENT_IP
            [checkout] = [e for e in fake.capi_events if e["event_name"] == "checkout"]
            # Flask-Login's customer, hashed.
            assert checkout["user_data"]["em"] == [sha256_hex("jane.roe@example.com")]
    assert shopper.violations == []


def test_two_apps_of_one_factory_with_default_outboxes_keep_their_events_apart(
    tmp_path: Path, shopper: Browser
) -> None:
    # The factory as most shops write it: no queue URL, one instance folder for both apps.
    with (
        FakePinterest() as fake_a,
        FakePinterest(ad_account_id="549764982400", token="outlet-token") as fake_b,
    ):
        apps = {
            prefix: create_app(dedupkit_settings(fake), instance_path=str(tmp_path / "instance"))
            for prefix, fake in (("/shop", fake_a), ("/outlet", fake_b))
        }
        with mounted(apps) as server:
            orders = {}
            for prefix in apps:
                page = shopper.page
                page.goto(f"{server.url}{prefix}/cart")
                page.click("#buy")
                page.wait_for_selector("#order")
                orders[prefix] = page.text_content("#order")
            for app in apps.values():
                settle(app)
        ids = {
            "/shop": [e["event_id"] for e in fake_a.capi_events],
            "/outlet": [e["event_id"] for e in fake_b.capi_events],
        }
        assert ids == {prefix: [f"checkout-{order}"] for prefix, order in orders.items()}


def settle(app: Flask, timeout: float = 10.0) -> None:
    """Wait until the app's outbox has nothing pending or in flight."""
    state = get_state(app)

    def drained() -> bool:
        state.background.wake()
        stats = state.outbox.stats()
        return stats.pending == 0 and stats.in_flight == 0

    assert wait_until(drained, timeout), state.outbox.stats()
