"""A shop built the way real ones are: an app factory, with the extensions shops run.

Flask-Login (a signed-in customer), Flask-WTF (``CSRFProtect`` on every form), Flask-Talisman
(a strict nonce-based Content-Security-Policy: no ``'unsafe-inline'``, not even ``'self'`` in
``script-src``), Flask-Caching (the catalogue), ``ProxyFix`` behind a forwarding proxy, and
the app mounted under a prefix. Its pages use no inline handlers: under that policy only
scripts with the response's nonce run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, request, url_for
from flask_caching import Cache
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect
from jinja2 import DictLoader
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from dedupkit import DedupKit
from dedupkit.testing import FakePinterest

from .live_server import LiveServer

#: The visitor's address as the proxy in front of the shop forwards it.
CLIENT_IP = "203.0.113.9"

TEMPLATES = {
    "base.html": """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>
{% if with_head %}{{ dedupkit.head() }}{% endif %}</head>
<body><h1>{{ title }}</h1>{% block body %}{% endblock %}
{% if event %}{{ dedupkit.pintrk(event) }}{% endif %}
<nav><a id="product" href="{{ url_for('product') }}">product</a>
<a id="cart" href="{{ url_for('cart') }}">cart</a></nav></body></html>""",
    "home.html": """{% extends "base.html" %}{% block body %}
<form method="post" action="{{ url_for('login') }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<input name="username" value="jane"><button id="login">Sign in</button></form>
{% endblock %}""",
    "product.html": """{% extends "base.html" %}{% block body %}
<p id="who">{{ current_user.username if current_user.is_authenticated else "guest" }}</p>
<p>{{ item.name }}: {{ item.price }}</p><button id="add">Add to cart</button>
<script nonce="{{ csp_nonce() }}">
document.getElementById('add').addEventListener('click', function () {
  window.lastId = dedupkit.track('add_to_cart', {value: {{ item.price|tojson }}, currency: 'USD',
    line_items: [{product_id: {{ item.sku|tojson }}, product_price: {{ item.price|tojson }},
    product_quantity: 1}]});
});
</script>{% endblock %}""",
    "cart.html": """{% extends "base.html" %}{% block body %}
<form method="post" action="{{ url_for('checkout') }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<button id="buy">Buy</button></form>{% endblock %}""",
    "thanks.html": """{% extends "base.html" %}{% block body %}
<p id="order">{{ order_id }}</p>{% endblock %}""",
    "spa.html": """{% extends "base.html" %}{% block body %}
<button id="pay">Pay</button><p id="paid"></p>
<script nonce="{{ csp_nonce() }}">
// A single-page checkout: the server confirms the order and hands back a ticket; the page
// reports the purchase with the ticket alone, in a lower-case currency.
document.getElementById('pay').addEventListener('click', function () {
  fetch({{ url_for('api_checkout')|tojson }}, {method: 'POST',
    headers: {'X-CSRFToken': {{ csrf_token()|tojson }}}})
    .then(function (answer) { return answer.json(); })
    .then(function (order) {
      window.paidId = dedupkit.track('checkout',
        {value: order.value, currency: 'eur', order_id: order.order_id}, {ticket: order.ticket});
      document.getElementById('paid').textContent = order.order_id;
    });
});
</script>{% endblock %}""",
}

PRODUCT = {"sku": "SKU-1", "name": "Trail boots", "price": "24.13"}


class Customer(UserMixin):  # type: ignore[misc]  # untyped base
    def __init__(self, username: str, email: str) -> None:
        self.id = username
        self.username = username
        self.email = email


CUSTOMERS = {"jane": Customer("jane", "Jane.Roe@Example.com")}


def create_app(
    config: Mapping[str, Any],
    *,
    instance_path: str,
    csrf_first: bool = False,
    with_head: bool = True,
    talisman: bool = True,
) -> Flask:
    """The shop's factory, one call per app. ``config`` is the app's config (DEDUPKIT_* too);
    ``FAKE_ORIGIN`` is the fake Pinterest's origin, which the policy allows."""
    app = Flask("stack_shop", instance_path=instance_path)
    app.config.update(SECRET_KEY="stack-shop-secret", CACHE_TYPE="SimpleCache", **config)
    app.jinja_loader = DictLoader(TEMPLATES)
    # Pages that name csp_nonce() render without Talisman too.
    app.jinja_env.globals["csp_nonce"] = lambda: ""
    kit = DedupKit()
    csrf = CSRFProtect()
    if csrf_first:
        csrf.init_app(app)
    kit.init_app(app)
    if not csrf_first:
        csrf.init_app(app)
    logins = LoginManager(app)
    cache = Cache(app)
    if talisman:
        fake = app.config["FAKE_ORIGIN"]
        Talisman(
            app,
            force_https=False,
            session_cookie_secure=False,
            content_security_policy={
                "default-src": "'self'",
                "script-src": [],  # the nonce only: not even this shop's own files
                "connect-src": ["'self'", fake],
                "img-src": ["'self'", fake],
            },
            content_security_policy_nonce_in=["script-src"],
        )
    orders: dict[str, str | None] = {}

    @logins.user_loader  # type: ignore[untyped-decorator]
    def load_customer(username: str) -> Customer | None:
        return CUSTOMERS.get(username)

    @cache.memoize(timeout=60)
    def catalogue(sku: str) -> dict[str, str]:
        return dict(PRODUCT)

    @app.context_processor
    def page_flags() -> dict[str, Any]:
        return {"with_head": with_head}

    def page(template: str, title: str, **context: Any) -> str:
        return render_template(template, title=title, **context)

    @app.get("/")
    def home() -> str:
        return page("home.html", "Home")

    @app.post("/login")
    def login() -> Response:
        customer = CUSTOMERS.get(request.form.get("username", ""))
        if customer is None:
            abort(403)
        login_user(customer)
        return redirect(url_for("product"))  # type: ignore[return-value]

    @app.get("/product")
    def product() -> str:
        return page("product.html", "Product", item=catalogue("SKU-1"))

    @app.get("/cart")
    def cart() -> str:
        return page("cart.html", "Cart")

    def new_order() -> str:
        order_id = f"A-{1001 + len(orders)}"
        orders[order_id] = current_user.email if current_user.is_authenticated else None
        return order_id

    @app.post("/checkout")
    def checkout() -> Response:
        return redirect(url_for("thanks", order_id=new_order()))  # type: ignore[return-value]

    @app.get("/thanks/<order_id>")
    def thanks(order_id: str) -> str:
        if order_id not in orders:
            abort(404)
        email = orders[order_id]
        event = kit.track(
            "checkout",
            order_id=order_id,
            value="24.13",
            currency="usd",
            user={"email": email} if email else None,
        )
        return page("thanks.html", "Thanks", order_id=order_id, event=event)

    @app.get("/spa")
    def spa() -> str:
        return page("spa.html", "Checkout")

    @app.post("/api/checkout")
    def api_checkout() -> Response:
        order_id = new_order()
        ticket = kit.ticket("checkout", order_id=order_id, value="31.50", currency="EUR")
        return jsonify(order_id=order_id, value="31.50", ticket=ticket)

    app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
        app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1
    )
    return app


def forwarding_proxy(app: Callable[..., Any]) -> Callable[..., Any]:
    """What a reverse proxy in front of the shop adds: the visitor's address."""

    def proxied(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["HTTP_X_FORWARDED_FOR"] = CLIENT_IP
        environ["REMOTE_ADDR"] = "10.0.0.2"  # the proxy's own address
        return app(environ, start_response)

    return proxied


def dedupkit_settings(fake: FakePinterest, **settings: Any) -> dict[str, Any]:
    """``app.config`` for a shop talking to ``fake``; ``settings`` are DEDUPKIT_* keys
    without the prefix."""
    values = {
        "AD_ACCOUNT_ID": fake.ad_account_id,
        "CONVERSION_TOKEN": fake.token,
        "TAG_ID": "2612345678901",
        "API_BASE_URL": fake.api_base_url,
        "PINTRK_SRC": fake.pintrk_src,
        "PIXEL_URL": fake.pixel_url,
        "FLUSH_INTERVAL": 0.05,
        **settings,
    }
    return {"FAKE_ORIGIN": fake.base_url, **{f"DEDUPKIT_{k}": v for k, v in values.items()}}


@contextmanager
def mounted(apps: Mapping[str, Flask]) -> Iterator[LiveServer]:
    """``apps`` mounted at their prefixes behind the forwarding proxy, on one loopback server."""

    def not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return Response("not found", status=404)(environ, start_response)

    front = forwarding_proxy(DispatcherMiddleware(not_found, dict(apps)))
    with LiveServer(front) as server:
        yield server
