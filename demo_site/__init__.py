"""The demo storefront: a tiny shop wired to dedupkit and, offline, to a fake Pinterest.

``python -m demo_site`` starts it with an embedded :class:`dedupkit.testing.FakePinterest`.
Two ways to pay: the shop's own checkout (tracked on the server when the order is placed), and
a simulated hosted checkout whose payment a webhook confirms, attributed to the shopper's ad
click through a visitor token (``kit.visitor_token()``, ``kit.track(…, visitor=token)``).
:func:`create_app` builds the shop; pass the running fake as ``DEMO_FAKE_PINTEREST`` in
``config`` and the shop talks to it (``/pinterest`` then shows what it counted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from dedupkit import DedupKit, Event
from dedupkit.event.model import build_event
from dedupkit.settings import redacted_url
from dedupkit.state import get_state
from dedupkit.testing import Conversion, FakePinterest
from dedupkit.vocabulary import SkipReason

#: A made-up tag id: the fake's stand-in tag accepts any.
DEMO_TAG_ID = "2612345678901"
#: The outbox file in the app's instance folder.
QUEUE_FILE = "demo-outbox.sqlite3"
CURRENCY = "USD"
#: Order ids start here: "A-1001", "A-1002", ...
FIRST_ORDER_NUMBER = 1001
MAX_QUANTITY = 99
CHECKOUT_FIELDS = ("email", "phone", "name", "zip")


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    price: Decimal
    category: str
    blurb: str
    #: The colour of the product's placeholder picture.
    colour: str


CATALOGUE: Mapping[str, Product] = {
    p.sku: p
    for p in (
        Product(
            "SKU-TOTE",
            "Linen tote bag",
            Decimal("29.00"),
            "Bags",
            "Sturdy undyed linen, long handles, one inside pocket.",
            "#d9c7a7",
        ),
        Product(
            "SKU-MUG",
            "Speckled ceramic mug",
            Decimal("18.50"),
            "Kitchen",
            "Hand-thrown stoneware, 350 ml, dishwasher safe.",
            "#9fb8ad",
        ),
        Product(
            "SKU-THROW",
            "Wool throw blanket",
            Decimal("89.00"),
            "Living",
            "Merino wool, 130 by 170 cm, woven in a herringbone twill.",
            "#c0392b",
        ),
        Product(
            "SKU-NOTE",
            "Dot-grid notebook",
            Decimal("12.00"),
            "Stationery",
            "A5, 160 pages of 100 gsm paper that fountain pens like.",
            "#34495e",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Line:
    product: Product
    quantity: int

    @property
    def total(self) -> Decimal:
        return self.product.price * self.quantity

    def line_item(self) -> dict[str, Any]:
        """The line in the tag's vocabulary (what ``kit.track`` and ``pintrk`` take)."""
        return {
            "product_id": self.product.sku,
            "product_name": self.product.name,
            "product_category": self.product.category,
            "product_price": self.product.price,
            "product_quantity": self.quantity,
        }


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    lines: tuple[Line, ...]
    email: str
    phone: str
    name: str
    zip: str
    #: Paid on the hosted checkout: the signed visitor, kept as payment metadata.
    visitor_token: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.total for line in self.lines), Decimal("0.00"))

    @property
    def hosted(self) -> bool:
        return self.visitor_token is not None


class Orders:
    """Orders in memory: a demo forgets them when it stops.

    :class:`~demo_site.database_orders.DatabaseOrders` keeps them in PostgreSQL instead,
    where the outbox is, so that an order and its conversion commit together.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(FIRST_ORDER_NUMBER)
        self._orders: dict[str, Order] = {}
        self._paid: set[str] = set()

    def place(
        self, lines: tuple[Line, ...], visitor_token: str | None = None, **customer: str
    ) -> Order:
        with self._lock:
            order = Order(
                f"A-{next(self._numbers)}", lines, visitor_token=visitor_token, **customer
            )
            self._orders[order.id] = order
        return order

    @contextmanager
    def placing(self, lines: tuple[Line, ...], **customer: str) -> Iterator[tuple[Order, Any]]:
        """Place an order; yields it and the database transaction it is written in (none
        here: work done in the block cannot be rolled back with the order)."""
        yield self.place(lines, **customer), None

    @contextmanager
    def paying(self, order_id: str) -> Iterator[Any]:
        """Mark an order paid once the block ran; yields its transaction (none here)."""
        yield None
        self.mark_paid(order_id)

    def mark_paid(self, order_id: str) -> None:
        with self._lock:
            self._paid.add(order_id)

    def is_paid(self, order_id: str) -> bool:
        with self._lock:
            return order_id in self._paid

    def get(self, order_id: str) -> Order | None:
        with self._lock:
            return self._orders.get(order_id)


@dataclass(slots=True)
class Shop:
    """What the shop keeps per app, in ``app.extensions["demo_shop"]``."""

    kit: DedupKit
    orders: Orders
    fake: FakePinterest | None


shop = Blueprint("shop", __name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the demo shop.

    :param config: overrides for ``app.config``. ``DEMO_FAKE_PINTEREST``, a running
        :class:`~dedupkit.testing.FakePinterest`, points dedupkit's API, tag script and
        credentials at it; without it they come from ``config`` or the environment.
        ``DEMO_REQUIRE_CONSENT=1`` in the environment turns on ``DEDUPKIT_REQUIRE_CONSENT``.
    """
    config = dict(config or {})
    app = Flask(__name__)
    app.config.from_mapping(
        # A fresh key per start: demo carts need not survive a restart.
        SECRET_KEY=secrets.token_hex(32),
        SESSION_COOKIE_SAMESITE="Lax",
        DEMO_FAKE_PINTEREST=None,
        DEDUPKIT_TAG_ID=DEMO_TAG_ID,
        DEDUPKIT_QUEUE_URL=f"sqlite:///{Path(app.instance_path) / QUEUE_FILE}",
        DEDUPKIT_PAGE_VISIT=True,
        DEDUPKIT_DEBUG_UI=True,
        DEDUPKIT_PHONE_REGION="US",
        DEDUPKIT_REQUIRE_CONSENT=os.environ.get("DEMO_REQUIRE_CONSENT", "").lower()
        in ("1", "true", "yes", "on"),
    )
    fake = config.get("DEMO_FAKE_PINTEREST")
    if fake is not None:
        app.config.update(
            DEDUPKIT_API_BASE_URL=fake.api_base_url,
            DEDUPKIT_PINTRK_SRC=fake.pintrk_src,
            DEDUPKIT_PIXEL_URL=fake.pixel_url,
            DEDUPKIT_CONVERSION_TOKEN=fake.token,
            DEDUPKIT_AD_ACCOUNT_ID=fake.ad_account_id,
        )
    # DEDUPKIT_QUEUE_URL=postgresql+psycopg://… in the environment runs the demo on PostgreSQL.
    if os.environ.get("DEDUPKIT_QUEUE_URL"):
        app.config["DEDUPKIT_QUEUE_URL"] = os.environ["DEDUPKIT_QUEUE_URL"]
    app.config.update(config)

    kit = DedupKit(app)
    app.extensions["demo_shop"] = Shop(kit, _orders_for(app.config["DEDUPKIT_QUEUE_URL"]), fake)
    app.register_blueprint(shop)
    app.context_processor(_layout_context)
    return app


def uses_postgres(queue_url: str) -> bool:
    return queue_url.partition(":")[0].partition("+")[0].lower() in ("postgresql", "postgres")


def _orders_for(queue_url: str) -> Orders:
    """Orders in PostgreSQL when the outbox is there (the transactional outbox), else in
    memory."""
    if not uses_postgres(queue_url):
        return Orders()
    from .database_orders import DatabaseOrders

    return DatabaseOrders(queue_url)


def _shop() -> Shop:
    state: Shop = current_app.extensions["demo_shop"]
    return state


# -- the cart, in the session cookie ----------------------------------------------------------


def _cart() -> dict[str, int]:
    raw = session.get("cart")
    if not isinstance(raw, dict):
        return {}
    return {
        sku: qty
        for sku, qty in raw.items()
        if sku in CATALOGUE and isinstance(qty, int) and 0 < qty <= MAX_QUANTITY
    }


def _cart_lines() -> tuple[Line, ...]:
    return tuple(Line(CATALOGUE[sku], qty) for sku, qty in _cart().items())


def _quantity(value: str | None) -> int:
    try:
        quantity = int(value or "1")
    except ValueError:
        abort(400, "quantity must be a whole number")
    return max(1, min(quantity, MAX_QUANTITY))


def _layout_context() -> dict[str, Any]:
    settings = get_state().settings
    return {
        "cart_count": sum(_cart().values()),
        "currency": CURRENCY,
        "require_consent": settings.require_consent,
        "consent": request.cookies.get(settings.consent_cookie),
        "click_id": request.cookies.get(settings.click_id_cookie),
        "dashboard_url": dashboard_path(current_app),
    }


def dashboard_path(app: Flask) -> str | None:
    """The dedupkit ledger dashboard's path, when this dedupkit version has one and it is on."""
    settings = get_state(app).settings
    if not settings.debug_ui:
        return None
    path = settings.url_prefix.rstrip("/") + "/debug"
    exists = any(rule.rule == path for rule in app.url_map.iter_rules())
    return path if exists else None


# -- pages ------------------------------------------------------------------------------------


@shop.get("/")
def home() -> str:
    return render_template("home.html", products=CATALOGUE.values())


@shop.get("/products/<sku>")
def product(sku: str) -> str:
    item = CATALOGUE.get(sku) or abort(404)
    return render_template("product.html", product=item, line=Line(item, 1).line_item())


@shop.get("/search")
def search() -> str:
    query = request.args.get("q", "").strip()[:100]
    needle = query.casefold()
    found = [
        p for p in CATALOGUE.values() if needle in f"{p.name} {p.category} {p.blurb}".casefold()
    ]
    return render_template("search.html", query=query, products=found if query else [])


@shop.get("/cart")
def cart() -> str:
    lines = _cart_lines()
    total = sum((line.total for line in lines), Decimal("0.00"))
    return render_template("cart.html", lines=lines, total=total)


@shop.post("/cart")
def add_to_cart() -> Response:
    """Add a product; JSON for the page's fetch(), a redirect for a plain form post."""
    sku = request.form.get("sku", "")
    if sku not in CATALOGUE:
        abort(400, "unknown product")
    contents = _cart()
    added = _quantity(request.form.get("quantity"))
    contents[sku] = min(contents.get(sku, 0) + added, MAX_QUANTITY)
    session["cart"] = contents
    if request.accept_mimetypes.best == "application/json":
        return jsonify(count=sum(contents.values()))
    return redirect(url_for("shop.cart"), 303)


@shop.post("/cart/empty")
def empty_cart() -> Response:
    session.pop("cart", None)
    return redirect(url_for("shop.cart"), 303)


@shop.get("/checkout")
def checkout_form() -> str | Response:
    lines = _cart_lines()
    if not lines:
        return redirect(url_for("shop.cart"))
    total = sum((line.total for line in lines), Decimal("0.00"))
    return render_template("checkout.html", lines=lines, total=total, errors={}, form={})


def _checkout_form() -> tuple[tuple[Line, ...], dict[str, str]] | Response:
    """The cart and the checkout form, or the response that sends the shopper back."""
    lines = _cart_lines()
    if not lines:
        return redirect(url_for("shop.cart"), 303)
    form = {key: request.form.get(key, "").strip()[:200] for key in CHECKOUT_FIELDS}
    errors = {}
    if "@" not in form["email"]:
        errors["email"] = "An email address is needed for the receipt."
    if not form["name"]:
        errors["name"] = "Please tell us who the parcel is for."
    if errors:
        total = sum((line.total for line in lines), Decimal("0.00"))
        page = render_template("checkout.html", lines=lines, total=total, errors=errors, form=form)
        return Response(page, status=422)
    return lines, form


def _remember(order: Order, event: Event | None = None) -> None:
    """The order is this session's; with what became of its checkout event, for its
    thank-you page to say (the page tracks nothing itself)."""
    session.pop("cart", None)
    session["orders"] = [*session.get("orders", [])[-19:], order.id]
    if event is not None:
        told = session.get("outcomes", {})
        skipped = event.skipped.value if event.skipped is not None else None
        told = {**dict(list(told.items())[-19:]), order.id: [event.outcome, skipped]}
        session["outcomes"] = told


@shop.post("/checkout")
def checkout() -> str | Response:
    checked = _checkout_form()
    if isinstance(checked, Response):
        return checked
    lines, form = checked
    # Tracked where the order is created, so the Conversions API hears of the sale even if
    # the browser never reaches the thank-you page (closed tab, failed redirect, blocked tag).
    # On PostgreSQL the event is written in the order's own transaction: both commit, or
    # neither does (a crash in between can lose neither the conversion nor invent one).
    with _shop().orders.placing(lines, **form) as (order, transaction):
        event = _track_checkout(order, transaction=transaction)
    _remember(order, event)
    return redirect(url_for("shop.thanks", order_id=order.id), 303)


@shop.get("/thanks/<order_id>")
def thanks(order_id: str) -> str:
    order = _shop().orders.get(order_id)
    # Only the session that placed the order may see it: the page repeats what was bought.
    if order is None or order_id not in session.get("orders", []):
        abort(404)
    if order.hosted and not _shop().orders.is_paid(order.id):
        abort(404)
    # The sale was tracked where the order was placed (or by the payment webhook): this page
    # only fires the tag, with the same event_id ("checkout-A-1001"), as often as it is shown,
    # and says what became of the server's copy then.
    event = _tag_only_checkout(order)
    outcome, skipped = session.get("outcomes", {}).get(order.id, [None, None])
    if outcome is not None:
        reason = SkipReason(skipped) if skipped else None
        event = dataclasses.replace(event, outcome=outcome, skipped=reason)
    return render_template("thanks.html", order=order, event=event)


def _checkout_data(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "value": order.total,
        "currency": CURRENCY,
        "order_quantity": sum(line.quantity for line in order.lines),
        "line_items": [line.line_item() for line in order.lines],
    }


def _customer(order: Order) -> dict[str, str]:
    first, _, last = order.name.partition(" ")
    return {
        "email": order.email,
        "phone": order.phone,
        "first_name": first,
        "last_name": last,
        "zip": order.zip,
        "country": "US",
    }


def _track_checkout(order: Order, visitor: str | None = None, transaction: Any = None) -> Event:
    return _shop().kit.track(
        "checkout",
        user=_customer(order),
        visitor=visitor,
        session=transaction,
        **_checkout_data(order),
    )


def _tag_only_checkout(order: Order) -> Event:
    """The checkout as the tag sees it, not tracked again: ``checkout-<order id>``."""
    return build_event("checkout", _checkout_data(order), require_identity=False)


# -- the hosted checkout: a payment page elsewhere, confirmed by a webhook --------------------

#: The simulated payment provider's webhook client.
PROVIDER_USER_AGENT = "DemoPay-Webhooks/1.0 (+https://payments.example/webhooks)"
PROVIDER_ADDRESS = "203.0.113.50"


@shop.post("/checkout/hosted")
def hosted_checkout() -> str | Response:
    """Place the order unpaid and hand the shopper to the payment provider's page.

    The visitor is captured now, in the shopper's request: the webhook that confirms the
    payment comes from the provider, with none of the shopper's click id, IP or browser.
    """
    checked = _checkout_form()
    if isinstance(checked, Response):
        return checked
    lines, form = checked
    token = _shop().kit.visitor_token()  # what a shop passes as payment metadata
    order = _shop().orders.place(lines, visitor_token=token, **form)
    _remember(order)
    return redirect(url_for("shop.payment_page", order_id=order.id), 303)


@shop.get("/pay/<order_id>")
def payment_page(order_id: str) -> str:
    """The provider's hosted payment page (simulated): no shop tag, no dedupkit."""
    order = _shop().orders.get(order_id)
    if order is None or not order.hosted:
        abort(404)
    return render_template("pay.html", order=order, token_length=len(order.visitor_token or ""))


@shop.post("/pay/<order_id>")
def pay(order_id: str) -> Response:
    """The provider charges the card, tells the shop by webhook, and sends the shopper back."""
    order = _shop().orders.get(order_id)
    if order is None or not order.hosted:
        abort(404)
    body = json.dumps(
        {
            "type": "payment.succeeded",
            "order_id": order.id,
            "metadata": {"dedupkit": order.visitor_token},
        }
    ).encode()
    # A request of its own, from the provider's address and client, as a real webhook is.
    answer = current_app.test_client().post(
        url_for("shop.payment_webhook"),
        data=body,
        content_type="application/json",
        headers={"User-Agent": PROVIDER_USER_AGENT, "X-Demo-Signature": _signature(body)},
        environ_base={"REMOTE_ADDR": PROVIDER_ADDRESS},
    )
    if answer.status_code != 204:
        abort(502, "the payment webhook failed")
    return redirect(url_for("shop.thanks", order_id=order.id), 303)


@shop.post("/webhooks/payments")
def payment_webhook() -> Response:
    """Confirm a hosted payment: verify the provider's signature, track as the shopper."""
    if not hmac.compare_digest(
        request.headers.get("X-Demo-Signature", ""), _signature(request.get_data())
    ):
        abort(400, "bad signature")
    payload = request.get_json(silent=True) or {}
    order = _shop().orders.get(str(payload.get("order_id", "")))
    if order is None:
        abort(404)
    token = (payload.get("metadata") or {}).get("dedupkit")
    # Paid and tracked in one transaction on PostgreSQL.
    with _shop().orders.paying(order.id) as transaction:
        _track_checkout(order, visitor=token, transaction=transaction)
    return Response(status=204)


def _signature(body: bytes) -> str:
    """The provider's signature over a webhook body (Stripe signs with HMAC-SHA256 too)."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    key = hashlib.sha256(b"demo webhook secret:" + secret).digest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


@shop.post("/privacy/reset")
def reset_consent() -> Response:
    """Forget the consent decision so the banner asks again."""
    response = redirect(url_for("shop.home"), 303)
    response.delete_cookie(get_state().settings.consent_cookie, path="/")
    return response


# -- what Pinterest saw -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversionRow:
    """One line of the /pinterest table."""

    event_name: str
    event_id: str | None
    sources: str
    tag_calls: int
    capi_events: int
    click_id: str | None


def _row(conversion: Conversion) -> ConversionRow:
    both = len(conversion.sources) == 2
    sources = "both" if both else ("CAPI" if "capi" in conversion.sources else "tag")
    click_id = next(
        (e["user_data"].get("click_id") for e in conversion.capi_events if e.get("user_data")),
        None,
    ) or next((t.epik for t in conversion.tag_events if t.epik), None)
    return ConversionRow(
        conversion.event_name,
        conversion.event_id,
        sources,
        len(conversion.tag_events),
        len(conversion.capi_events),
        click_id,
    )


#: Why dedupkit did not send an event, in words (``OutboxStats.skipped`` keys): the one
#: vocabulary's labels.
SKIP_REASONS = {reason.value: reason.label for reason in SkipReason}


@shop.get("/pinterest")
def pinterest() -> str:
    fake = _shop().fake
    rows = [_row(c) for c in fake.conversions()] if fake else []
    state = get_state()
    return render_template(
        "pinterest.html",
        fake=fake,
        rows=list(reversed(rows)),
        tag_calls=sum(r.tag_calls for r in rows),
        capi_events=sum(r.capi_events for r in rows),
        deduplicated=sum(r.sources == "both" for r in rows),
        stats=state.outbox.stats(),
        queue_url=redacted_url(state.queue_url),
        skip_reasons=SKIP_REASONS,
        tag_blocked=fake.tag_blocked if fake else {},
        ledger_path=dashboard_path(current_app),
    )
