"""The demo storefront, through Flask's test client and a real FakePinterest."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

import demo_site
from dedupkit.event.user_data import sha256_hex
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest
from dedupkit.testing.blockers import typical_blockers
from demo_site import create_app
from demo_site.database_orders import DatabaseOrders

from .support.agents import CHROME_UA, FIREFOX_DESKTOP_UA
from .support.polling import wait_until
from .support.postgres_server import PostgresServer

#: A desktop Chrome: a shopper, not a bot (the test client's own user agent is filtered).
EMAIL = "Jane.Roe+demo@Example.com"
CUSTOMER = {"email": EMAIL, "phone": "(415) 555-0134", "name": "Jane Roe", "zip": "94103"}
PINTRK_CHECKOUT = re.compile(r"\(window\.dedupkit,\"checkout\",(\{.*?\}),\"checkout\"\)</script>")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakePinterest]:
    with FakePinterest() as fake:
        yield fake


@pytest.fixture
def app(fake: FakePinterest, tmp_path: Path) -> Iterator[Flask]:
    fake.reset()
    app = create_app(
        {
            "TESTING": True,
            "DEMO_FAKE_PINTEREST": fake,
            "DEDUPKIT_QUEUE_URL": f"sqlite:///{tmp_path}/outbox.sqlite3",
            "DEDUPKIT_FLUSH_INTERVAL": 0.05,
        }
    )
    yield app
    state = get_state(app)
    state.background.stop()
    state.outbox.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = CHROME_UA
    return client


def add_to_cart(client: FlaskClient, sku: str = "SKU-MUG", quantity: int = 2) -> Any:
    return client.post(
        "/cart",
        data={"sku": sku, "quantity": str(quantity)},
        headers={"Accept": "application/json"},
    )


def place_order(client: FlaskClient, **customer: str) -> str:
    """Fill the cart, check out; returns the thank-you page's path."""
    assert add_to_cart(client).status_code == 200
    response = client.post("/checkout", data={**CUSTOMER, **customer})
    assert response.status_code == 303
    return str(response.headers["Location"])


def pintrk_checkout(html: str) -> dict[str, Any]:
    match = PINTRK_CHECKOUT.search(html)
    assert match, "the thank-you page does not fire pintrk('track',\"checkout\", …)"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def queued_total(app: Flask) -> int:
    stats = get_state(app).outbox.stats()
    return stats.pending + stats.in_flight + stats.delivered + stats.dead


def test_home_lists_products_with_the_tag_and_the_ad_click_link(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    for name in ("Linen tote bag", "Speckled ceramic mug", "Wool throw blanket"):
        assert name in html
    assert "/dedupkit/dedupkit.js" in html
    assert "pintrk('load'" in html
    assert 'href="/?epik=demo-click"' in html
    assert 'id="consent-banner"' in html


def test_consent_banner_is_gone_once_decided(client: FlaskClient) -> None:
    client.set_cookie("_dedupkit_consent", "0")
    html = client.get("/").get_data(as_text=True)
    assert 'id="consent-banner"' not in html
    assert "declined" in html


def test_require_consent_toggle(
    fake: FakePinterest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEMO_REQUIRE_CONSENT", "1")
    app = create_app(
        {
            "DEMO_FAKE_PINTEREST": fake,
            "DEDUPKIT_QUEUE_URL": f"sqlite:///{tmp_path}/consent.sqlite3",
        }
    )
    assert app.config["DEDUPKIT_REQUIRE_CONSENT"] is True
    html = app.test_client().get("/").get_data(as_text=True)
    assert 'data-require-consent="1"' in html
    assert "Nothing is sent on either channel until you accept" in html


def test_product_page_tracks_add_to_cart_in_the_browser(client: FlaskClient) -> None:
    response = client.get("/products/SKU-MUG")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Speckled ceramic mug" in html
    assert "$18.50" in html
    assert "dedupkit.track('add_to_cart'" in html
    assert '"product_id": "SKU-MUG"' in html
    assert client.get("/products/SKU-NOPE").status_code == 404


def test_add_to_cart_fills_the_session_cart(client: FlaskClient) -> None:
    assert add_to_cart(client, "SKU-MUG", 2).get_json() == {"count": 2}
    assert add_to_cart(client, "SKU-NOTE", 1).get_json() == {"count": 3}
    html = client.get("/cart").get_data(as_text=True)
    assert "Speckled ceramic mug" in html
    assert "Dot-grid notebook" in html
    assert "$49.00" in html  # 2 * 18.50 + 12.00
    assert add_to_cart(client, "SKU-NOPE").status_code == 400


def test_add_to_cart_without_javascript_redirects_to_the_cart(client: FlaskClient) -> None:
    response = client.post("/cart", data={"sku": "SKU-TOTE"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/cart"
    assert "Linen tote bag" in client.get("/cart").get_data(as_text=True)


def test_search_reports_the_query(client: FlaskClient) -> None:
    html = client.get("/search", query_string={"q": "wool </script>"}).get_data(as_text=True)
    assert "dedupkit.track('search', {search_query: " in html
    # The query is data, never markup: it cannot close the script it is written into.
    assert "wool </script>" not in html
    html = client.get("/search", query_string={"q": "mug"}).get_data(as_text=True)
    assert "Speckled ceramic mug" in html
    assert "Linen tote bag" not in html


def test_checkout_redirects_to_a_thank_you_page_firing_the_same_event(
    client: FlaskClient, fake: FakePinterest
) -> None:
    client.get("/?epik=demo-click")
    thanks = place_order(client)
    assert thanks == "/thanks/A-1001"
    assert client.get("/cart").get_data(as_text=True).count("Speckled ceramic mug") == 0

    html = client.get(thanks).get_data(as_text=True)
    tag_data = pintrk_checkout(html)
    assert tag_data["event_id"] == "checkout-A-1001"
    assert tag_data["order_id"] == "A-1001"
    assert tag_data["value"] == "37.00"
    assert EMAIL not in html

    # The Conversions API got the same event, hashed, with the ad click.
    assert fake.wait_for_capi_events(1)
    [sent] = fake.capi_events
    assert sent["event_name"] == "checkout"
    assert sent["event_id"] == "checkout-A-1001"
    assert sent["custom_data"]["value"] == "37.00"
    assert sent["user_data"]["em"] == [sha256_hex(EMAIL.lower())]
    assert sent["user_data"]["click_id"] == "demo-click"


def test_reloading_the_thank_you_page_queues_nothing_new(client: FlaskClient, app: Flask) -> None:
    thanks = place_order(client)
    assert queued_total(app) == 1
    first = pintrk_checkout(client.get(thanks).get_data(as_text=True))
    second = pintrk_checkout(client.get(thanks).get_data(as_text=True))
    assert first["event_id"] == second["event_id"] == "checkout-A-1001"
    assert queued_total(app) == 1


def test_a_second_order_gets_its_own_event(client: FlaskClient, app: Flask) -> None:
    assert place_order(client) == "/thanks/A-1001"
    assert place_order(client) == "/thanks/A-1002"
    assert queued_total(app) == 2


def test_thank_you_page_is_only_for_the_buyer(app: Flask, client: FlaskClient) -> None:
    thanks = place_order(client)
    stranger = app.test_client()
    assert stranger.get(thanks).status_code == 404
    assert client.get("/thanks/A-9999").status_code == 404


def test_checkout_needs_an_email(client: FlaskClient, app: Flask) -> None:
    add_to_cart(client)
    response = client.post("/checkout", data={**CUSTOMER, "email": ""})
    assert response.status_code == 422
    assert "An email address is needed" in response.get_data(as_text=True)
    assert queued_total(app) == 0


def test_checkout_with_an_empty_cart_goes_back_to_the_cart(client: FlaskClient) -> None:
    response = client.post("/checkout", data=CUSTOMER)
    assert response.status_code == 303
    assert response.headers["Location"] == "/cart"


def test_epik_lands_in_the_click_id_cookie(client: FlaskClient) -> None:
    response = client.get("/?epik=demo-click")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("_epik=demo-click;")
    assert "HttpOnly" not in cookie
    assert "<code>demo-click</code>" in client.get("/cart").get_data(as_text=True)


def test_pinterest_page_shows_one_deduplicated_conversion(
    client: FlaskClient, fake: FakePinterest
) -> None:
    place_order(client)
    assert fake.wait_for_capi_events(1)
    # What the thank-you page's tag call reports to Pinterest, as a browser would send it.
    report = {
        "kind": "track",
        "tag_id": "2612345678901",
        "event": "checkout",
        "data": {"event_id": "checkout-A-1001", "value": "37.00"},
    }
    httpx.post(f"{fake.base_url}/_fake/tag", content=json.dumps(report)).raise_for_status()

    delivered = re.compile(r"<th scope=\"row\">Delivered</th><td class=\"num\">1</td>")
    # Pinterest answers before the sender records the ack: wait for it, as a reload would.
    assert wait_until(lambda: delivered.search(client.get("/pinterest").get_data(as_text=True)))
    html = client.get("/pinterest").get_data(as_text=True)
    assert "<code>checkout-A-1001</code>" in html
    assert '<span class="badge both">both</span> = 1 conversion' in html
    assert re.search(r"<th scope=\"row\">Delivered</th><td class=\"num\">1</td>", html)
    # The page shows Pinterest's side; it does not track itself.
    assert "dedupkit.js" not in html


def test_pinterest_page_renders_before_anything_happened(client: FlaskClient) -> None:
    response = client.get("/pinterest")
    assert response.status_code == 200
    assert "Nothing yet." in response.get_data(as_text=True)


def test_raw_email_never_reaches_the_outbox_file(
    client: FlaskClient, app: Flask, tmp_path: Path
) -> None:
    place_order(client)
    get_state(app).background.stop()  # settle the file: nothing writes to it any more
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.sqlite3*"))
    assert sha256_hex(EMAIL.lower()).encode() in stored  # the event is there, hashed
    for raw in (EMAIL, EMAIL.lower(), "Jane Roe", "555-0134"):
        assert raw.encode() not in stored


# -- the hosted checkout ------------------------------------------------------------------------


def hosted_order(client: FlaskClient) -> str:
    add_to_cart(client)
    response = client.post("/checkout/hosted", data=CUSTOMER)
    assert response.status_code == 303
    return response.headers["Location"].rsplit("/", 1)[1]


def test_a_hosted_payment_is_tracked_by_the_webhook_as_the_shopper(
    client: FlaskClient, app: Flask
) -> None:
    client.get("/?epik=hosted-click")
    order_id = hosted_order(client)
    assert queued_total(app) == 0  # placed, not paid: nothing tracked yet
    assert client.get(f"/thanks/{order_id}").status_code == 404
    page = client.get(f"/pay/{order_id}").get_data(as_text=True)
    assert "dedupkit" not in page.split("</head>")[0]  # the provider's page has no shop tag
    assert client.post(f"/pay/{order_id}").status_code == 303
    assert queued_total(app) == 1
    [entry] = get_state(app).outbox.claim(10, lease=60.0)
    user = entry.payload["user_data"]
    assert user["click_id"] == "hosted-click"
    assert user["client_user_agent"] == CHROME_UA  # the shopper's, not the webhook client's
    assert entry.payload["event_id"] == f"checkout-{order_id}"
    html = client.get(f"/thanks/{order_id}").get_data(as_text=True)
    assert pintrk_checkout(html)["event_id"] == f"checkout-{order_id}"
    assert queued_total(app) == 1  # the thank-you page tracked nothing more


def test_the_webhook_refuses_an_unsigned_call(client: FlaskClient, app: Flask) -> None:
    order_id = hosted_order(client)
    body = {"order_id": order_id, "metadata": {"dedupkit": "forged"}}
    response = client.post("/webhooks/payments", json=body)
    assert response.status_code == 400
    assert queued_total(app) == 0


# -- the demo on PostgreSQL: each order and its conversion commit together ------------------------


@pytest.fixture
def postgres_app(
    fake: FakePinterest, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    fake.reset()
    # How a developer runs it: DEDUPKIT_QUEUE_URL=postgresql+psycopg://… make demo
    monkeypatch.setenv("DEDUPKIT_QUEUE_URL", postgres_server.new_database())
    app = create_app(
        {"TESTING": True, "DEMO_FAKE_PINTEREST": fake, "DEDUPKIT_FLUSH_INTERVAL": 0.05}
    )
    yield app
    state = get_state(app)
    state.background.stop()
    state.outbox.close()
    orders = app.extensions["demo_shop"].orders
    assert isinstance(orders, DatabaseOrders)
    orders.engine.dispose()


@pytest.mark.postgres
def test_on_postgres_an_order_and_its_conversion_commit_together(
    postgres_app: Flask, fake: FakePinterest, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = postgres_app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = CHROME_UA
    client.get("/?epik=pg-click")
    thanks = place_order(client)
    assert thanks == "/thanks/A-1001"
    for _ in range(2):  # a reload fires the same tag event and tracks nothing
        assert pintrk_checkout(client.get(thanks).get_data(as_text=True))["event_id"] == (
            "checkout-A-1001"
        )
    assert fake.wait_for_capi_events(1)
    [sent] = fake.capi_events
    assert (sent["event_id"], sent["user_data"]["click_id"]) == ("checkout-A-1001", "pg-click")
    assert get_state(postgres_app).outbox.stats().duplicates == 0

    # The order fails after its conversion was tracked: neither exists.
    def track_then_fail(*args: Any, **kwargs: Any) -> Any:
        track(*args, **kwargs)
        raise RuntimeError("the payment service timed out")

    track = demo_site._track_checkout
    monkeypatch.setattr(demo_site, "_track_checkout", track_then_fail)
    with pytest.raises(RuntimeError, match="timed out"):
        place_order(client)
    monkeypatch.setattr(demo_site, "_track_checkout", track)
    orders = postgres_app.extensions["demo_shop"].orders
    assert orders.get("A-1002") is None
    assert place_order(client) == "/thanks/A-1003"

    # The hosted checkout: the webhook marks the order paid and tracks it in one transaction.
    order_id = hosted_order(client)
    assert client.post(f"/pay/{order_id}").status_code == 303
    assert orders.is_paid(order_id)
    assert fake.wait_for_capi_events(3)
    assert sorted(e["event_id"] for e in fake.capi_events) == [
        "checkout-A-1001",
        "checkout-A-1003",
        f"checkout-{order_id}",
    ]


def test_the_pinterest_page_says_whose_tag_was_blocked(
    client: FlaskClient, fake: FakePinterest
) -> None:
    fake.block_tag(typical_blockers)
    try:
        for user_agent in (FIREFOX_DESKTOP_UA, CHROME_UA):
            httpx.get(fake.pintrk_src, headers={"User-Agent": user_agent})
        text = client.get("/pinterest").get_data(as_text=True)
    finally:
        fake.block_tag(None)
    assert "The tag was refused 1 time(s)" in text
    assert "Firefox strict tracking protection 1." in text
    assert 'href="/dedupkit/debug"' in text


def test_the_thank_you_page_says_the_event_was_queued(client: FlaskClient) -> None:
    html = client.get(place_order(client)).get_data(as_text=True)

    # Tracked where the order was placed; the page only fires the tag and says so.
    assert 'data-outcome="queued"' in html
    assert "queued it for the Conversions API when the order was placed" in html


def test_the_thank_you_page_says_a_bots_event_was_skipped_and_how_to_count_it(
    client: FlaskClient, app: Flask
) -> None:
    client.environ_base["HTTP_USER_AGENT"] = "curl/8.5.0"

    html = client.get(place_order(client)).get_data(as_text=True)

    assert 'data-outcome="skipped"' in html
    assert '(bot: <code>event.skipped == "bot"</code>)' in html
    assert "DEDUPKIT_BOT_FILTER = False" in html
    assert queued_total(app) == 0


@pytest.mark.parametrize("queue_url", ["", "postgresql+psycopg://shop@127.0.0.1/shop"])
def test_make_demo_runs_commands_the_shell_can_read(queue_url: str) -> None:
    # `make demo` is a newcomer's first command: every line it would run must parse, with and
    # without the PostgreSQL switch (a comma inside make's $(if …) once split one in two).
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DEDUPKIT_QUEUE_URL": queue_url}
    planned = subprocess.run(
        ["make", "-n", "-W", ".venv/.demo-installed", "demo", "PORT=5099"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    assert any("-m demo_site --port 5099" in line for line in planned)
    for line in planned:
        parsed = subprocess.run(["sh", "-n", "-c", line], capture_output=True, text=True)
        assert parsed.returncode == 0, (line, parsed.stderr)
