"""Debian's Chromium driven by Playwright: never `playwright install`, which downloads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .agents import CHROME_UA
from .requirements import missing

CHROMIUM = "/usr/bin/chromium"
# Without these Chromium keeps calling Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Subdomains of a pretend shop, all on loopback: www.shop.test and shop.test.
    "--host-resolver-rules=MAP shop.test 127.0.0.1, MAP *.shop.test 127.0.0.1",
]
#: A shopper's browser; Chromium's own headless user agent is (rightly) treated as a bot.
#: What the headless browser announces itself as: a desktop Chrome, not HeadlessChrome.
DESKTOP_CHROME_UA = CHROME_UA


def require_chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        missing("Debian's chromium is not installed (make test installs it)")
    return path


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser for the duration of the block."""
    executable = require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - installed by make test
        missing("playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shop_funnel(page: Any, url: str) -> tuple[str, str]:
    """On the test shop: product, add to cart (a browser event), checkout (tracked by the
    server, mirrored by the page); the two event ids, once the thank-you page's evidence
    beacon has left."""
    page.goto(f"{url}/product")
    page.wait_for_function("window.dedupkit && window.dedupkit.loaded === true")
    page.click("#add")
    add_id = str(page.wait_for_function("window.lastId").json_value())
    page.goto(f"{url}/cart")
    with page.expect_request(lambda r: r.url.endswith("/dedupkit/events")):
        page.click("#buy")  # the thank-you page sends its evidence at its load event
    return add_id, f"checkout-{page.wait_for_selector('#order').inner_text()}"
