"""A small shop for browser tests: a landing page, products, a checkout, a thank-you page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template_string, request, url_for
from werkzeug.wrappers import Response

from dedupkit import DedupKit
from dedupkit.testing import FakePinterest

from .live_server import LiveServer

LAYOUT = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>{{ dedupkit.head() }}</head>
<body><h1>{{ title }}</h1>{{ body|safe }}
{% if event %}{{ dedupkit.pintrk(event) }}{% endif %}
<nav><a id="home" href="/">home</a> <a id="product" href="/product">product</a>
<a id="cart" href="/cart">cart</a></nav>
</body></html>"""

PRODUCT = """<button id="add" onclick="window.lastId = dedupkit.track('add_to_cart',
 {value: 24.13, currency: 'USD', line_items: [{product_id: 'SKU-1', product_price: 24.13,
 product_quantity: 1}]})">Add to cart</button>
<button id="yes" onclick="dedupkit.consent(true)">Accept</button>
<button id="no" onclick="dedupkit.consent(false)">Decline</button>"""

CART = """<form method="post" action="/checkout">
<input name="email" value="Jane.Roe@Example.com"><button id="buy">Buy</button></form>"""


def create_shop(instance_path: str | None = None, **settings: Any) -> Flask:
    """The shop; keyword arguments are DEDUPKIT_* settings without the prefix."""
    app = Flask("shop", instance_path=instance_path)
    app.config.update({f"DEDUPKIT_{key}": value for key, value in settings.items()})
    kit = DedupKit(app)
    orders: dict[str, str] = {}

    def page(title: str, body: str = "", event: object = None) -> str:
        return render_template_string(LAYOUT, title=title, body=body, event=event)

    @app.get("/")
    def home() -> str:
        return page("Home")

    @app.get("/product")
    def product() -> str:
        return page("Product", PRODUCT)

    cache: dict[str, str] = {}

    @app.get("/cached")
    def cached() -> str:
        # A full-page cache: the first visitor's HTML is served to everyone after.
        if "page" not in cache:
            cache["page"] = page("Cached", PRODUCT)
        return cache["page"]

    @app.get("/cart")
    def cart() -> str:
        return page("Cart", CART)

    @app.post("/checkout")
    def checkout() -> Response:
        order_id = f"A-{1000 + len(orders) + 1}"
        orders[order_id] = request.form["email"]
        return redirect(url_for("thanks", order_id=order_id))  # type: ignore[return-value]

    @app.get("/thanks/<order_id>")
    def thanks(order_id: str) -> str:
        # Tracked on every render: the order id makes the event_id, so reloads repeat it.
        event = kit.track(
            "checkout",
            order_id=order_id,
            value="24.13",
            currency="USD",
            line_items=[{"product_id": "SKU-1", "product_price": "24.13", "product_quantity": 1}],
            user={"email": orders[order_id]},
        )
        return page("Thanks", f"<p id='order'>{order_id}</p>", event)

    return app


Shop = tuple[Flask, LiveServer]


@contextmanager
def shop_servers(
    fake: FakePinterest, folder: Path, **defaults: Any
) -> Iterator[Callable[..., Shop]]:
    """Start shops on loopback, each with its own outbox and instance folder, talking to
    ``fake``; all stopped on exit. Keyword arguments of the factory (and ``defaults``) are
    DEDUPKIT_* settings without the prefix."""
    servers: list[LiveServer] = []

    def factory(**settings: Any) -> Shop:
        config = {
            "AD_ACCOUNT_ID": fake.ad_account_id,
            "CONVERSION_TOKEN": fake.token,
            "TAG_ID": "2612345678901",
            "API_BASE_URL": fake.api_base_url,
            "PINTRK_SRC": fake.pintrk_src,
            "PIXEL_URL": fake.pixel_url,
            "QUEUE_URL": f"sqlite:///{folder}/outbox-{len(servers)}.sqlite3",
            "FLUSH_INTERVAL": 0.05,
            **defaults,
            **settings,
        }
        app = create_shop(str(folder / f"instance-{len(servers)}"), **config)
        server = LiveServer(app).__enter__()
        servers.append(server)
        return app, server

    try:
        yield factory
    finally:
        for server in servers:
            server.__exit__(None, None, None)
