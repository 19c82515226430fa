"""Signed tickets: the browser reports a conversion only with the server's permission."""

from __future__ import annotations

import itertools
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, render_template_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from dedupkit import ConfigurationError
from dedupkit.event.model import build_event
from dedupkit.intake.tickets import MAX_EXPIRES_IN, TicketRefused, mint, verify
from dedupkit.signing import signing_keys
from dedupkit.state import get_state

from ..conftest import CHROME_UA, AppFactory, kit_for, queued

PAGE = "https://shop.example/checkout"


def beacon(app: Flask, body: dict[str, Any]) -> TestResponse:
    return app.test_client().post(
        "/dedupkit/events",
        data=json.dumps(body),
        content_type="text/plain",
        headers={"User-Agent": CHROME_UA},
        base_url="https://shop.example",
    )


def checkout(ticket: str | None, **overrides: Any) -> dict[str, Any]:
    data = {"value": "24.13", "currency": "USD", "order_id": "A-1001"}
    data.update(overrides.pop("data", {}))
    body: dict[str, Any] = {
        "event_name": "checkout",
        "event_id": "checkout-A-1001",
        "event_time": int(time.time()),
        "event_source_url": PAGE,
        "data": data,
        "ticket": ticket,
        **overrides,
    }
    return {k: v for k, v in body.items() if v is not None}


def ticket_for(app: Flask, **kw: Any) -> str:
    args: dict[str, Any] = {"order_id": "A-1001", "value": "24.13", "currency": "USD", **kw}
    with app.app_context():
        return kit_for(app).ticket("checkout", **args)


def test_a_ticketed_checkout_is_accepted_once(app: Flask) -> None:
    ticket = ticket_for(app)
    first = beacon(app, checkout(ticket))
    assert first.status_code == 202, first.json
    assert first.json == {"status": "queued", "event_id": "checkout-A-1001"}
    replay = beacon(app, checkout(ticket))
    assert replay.status_code == 409
    assert "already used" in replay.json["error"]
    [event] = queued(app)
    assert event["event_name"] == "checkout"
    assert event["custom_data"]["value"] == "24.13"


def test_a_checkout_without_a_ticket_is_refused(app: Flask) -> None:
    response = beacon(app, checkout(None))
    assert response.status_code == 403
    assert "ticket" in response.json["error"]
    assert queued(app) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"data": {"value": "2.41"}}, "value"),
        ({"data": {"value": 24.14}}, "value"),
        ({"data": {"currency": "EUR"}}, "currency"),
        ({"data": {"order_id": "A-1002"}}, "order_id"),
        ({"event_id": "checkout-A-1002"}, "event_id"),
        ({"event_name": "lead"}, "event_name"),
    ],
)
def test_a_changed_signed_field_is_refused_by_name(
    app: Flask, change: dict[str, Any], field: str
) -> None:
    response = beacon(app, checkout(ticket_for(app), **change))
    assert response.status_code == 403
    assert f"{field} differs" in response.json["error"]
    assert queued(app) == []


def test_the_same_amount_written_otherwise_still_matches(app: Flask) -> None:
    ticket = ticket_for(app, value=Decimal("24.130"), currency="usd")
    response = beacon(app, checkout(ticket, data={"value": 24.13, "currency": "USD"}))
    assert response.status_code == 202, response.json


def test_another_orders_ticket_is_refused(app: Flask) -> None:
    other = ticket_for(app, order_id="A-1002")
    response = beacon(app, checkout(other))
    assert response.status_code == 403
    assert queued(app) == []


def test_an_expired_ticket_is_refused(app: Flask) -> None:
    with app.app_context():
        state = get_state()
        keys = signing_keys(state.app, state.settings)
        old = mint(
            keys, state.names, "checkout", order_id="A-1001", value="24.13", currency="USD",
            expires_in=60, now=time.time() - 61,
        )  # fmt: skip
    response = beacon(app, checkout(old))
    assert response.status_code == 403
    assert "expired" in response.json["error"]
    assert queued(app) == []


def test_a_ticket_of_another_shop_is_refused(make_app: AppFactory) -> None:
    shop = make_app(SECRET_KEY="this shop's key")
    other = make_app(SECRET_KEY="another shop's key")
    response = beacon(shop, checkout(ticket_for(other)))
    assert response.status_code == 403
    assert "another key" in response.json["error"]


def test_a_browser_event_with_a_bad_ticket_is_refused_too(app: Flask) -> None:
    body = checkout("garbage.ticket", event_name="add_to_cart", event_id="x-1")
    assert beacon(app, body).status_code == 403


def test_flasks_own_fallbacks_verify_tickets_signed_with_the_apps_old_key(
    make_app: AppFactory,
) -> None:
    app = make_app()  # no DEDUPKIT_SECRET_KEY: the app's SECRET_KEY signs
    app.secret_key = "first key"
    ticket = ticket_for(app)
    app.secret_key = "second key"
    assert beacon(app, checkout(ticket)).status_code == 403
    app.config["SECRET_KEY_FALLBACKS"] = ["first key"]
    assert beacon(app, checkout(ticket)).status_code == 202


def test_dedupkit_fallbacks_verify_tickets_of_the_key_it_replaced(make_app: AppFactory) -> None:
    before = make_app(SECRET_KEY="old dedupkit key")
    ticket = ticket_for(before)
    after = make_app(SECRET_KEY="new dedupkit key", SECRET_KEY_FALLBACKS=["old dedupkit key"])
    assert beacon(after, checkout(ticket)).status_code == 202
    # The new key signs: the old one alone no longer verifies what the new app mints.
    alone = make_app(SECRET_KEY="old dedupkit key")
    assert beacon(alone, checkout(ticket_for(after, order_id="A-1001"))).status_code == 403


def test_without_any_key_minting_names_the_setting(app: Flask) -> None:
    app.secret_key = None
    with pytest.raises(ConfigurationError, match="DEDUPKIT_SECRET_KEY"):
        ticket_for(app)


def test_without_any_key_a_ticketed_beacon_is_refused_not_an_error(app: Flask) -> None:
    ticket = ticket_for(app)
    app.secret_key = None
    response = beacon(app, checkout(ticket))
    assert response.status_code == 403
    assert "cannot verify" in response.json["error"]


def test_the_jinja_helper_mints_the_same_kind_of_ticket(app: Flask) -> None:
    with app.test_request_context("/"):
        page = render_template_string(
            "<script>var t = {{ dedupkit.ticket('checkout', order_id='A-1001', value='24.13',"
            " currency='USD')|tojson }};</script>"
        )
    ticket = json.loads(page.split("var t = ")[1].split(";</script>")[0])
    assert beacon(app, checkout(ticket)).status_code == 202


def test_expiry_is_bounded(app: Flask) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        ticket_for(app, expires_in=MAX_EXPIRES_IN + 1)


# -- property-based: no altered ticket is ever accepted ----------------------------------------

KEYS = (b"the shop's signing key",)
OTHER_KEYS = (b"an attacker's key",)
EVENT = build_event(
    "checkout",
    {"value": "24.13", "currency": "USD", "order_id": "A-1001"},
    user={"email": "jane@example.com"},
)


def _ticket() -> str:
    from dedupkit.event.names import STANDARD

    return mint(KEYS, STANDARD, "checkout", order_id="A-1001", value="24.13", currency="USD")


@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_a_ticket_altered_anywhere_is_refused(position: int, replacement: str) -> None:
    ticket = _ticket()
    i = position % len(ticket)
    altered = ticket[:i] + replacement + ticket[i + 1 :]
    if altered == ticket:
        return
    with pytest.raises(TicketRefused):
        verify(KEYS, altered, EVENT)


@given(length=st.integers(min_value=0))
def test_a_truncated_ticket_is_refused(length: int) -> None:
    ticket = _ticket()
    with pytest.raises(TicketRefused):
        verify(KEYS, ticket[: length % len(ticket)], EVENT)


@given(
    order_id=st.text(st.characters(categories=("L", "N", "Pd")), min_size=1, max_size=40),
    cents=st.integers(min_value=0, max_value=10**9),
)
def test_a_ticket_signed_with_another_key_is_refused(order_id: str, cents: int) -> None:
    from dedupkit.event.names import STANDARD

    value = Decimal(cents) / 100
    forged = mint(OTHER_KEYS, STANDARD, "checkout", order_id=order_id, value=value, currency="USD")
    event = build_event(
        "checkout",
        {"value": value, "currency": "USD", "order_id": order_id},
        user={"email": "jane@example.com"},
    )
    with pytest.raises(TicketRefused, match="another key"):
        verify(KEYS, forged, event)
    # The genuine ticket for the same fields verifies: the refusal is the key's doing.
    genuine = mint(KEYS, STANDARD, "checkout", order_id=order_id, value=value, currency="USD")
    verify(KEYS, genuine, event)


_orders = itertools.count(1)


@pytest.fixture
def unlimited_app(make_app: AppFactory) -> Flask:
    return make_app(RATE_LIMIT="off")


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(replays=st.integers(min_value=2, max_value=5))
def test_a_replayed_ticket_yields_one_event(unlimited_app: Flask, replays: int) -> None:
    app = unlimited_app
    order_id = f"R-{next(_orders)}"  # one app and outbox for every example: a new order each
    ticket = ticket_for(app, order_id=order_id)
    body = checkout(ticket, event_id=f"checkout-{order_id}", data={"order_id": order_id})
    answers = [beacon(app, body).status_code for _ in range(replays)]
    assert answers == [202] + [409] * (replays - 1)
    assert [e["event_id"] for e in queued(app)] == [f"checkout-{order_id}"]
