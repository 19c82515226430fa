"""Visitor tokens: a webhook's conversion attributed to the shopper who paid."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from dedupkit import InvalidEvent
from dedupkit.event.user_data import sha256_hex
from dedupkit.intake.visitor import Consent, Visitor, normalised_ip
from dedupkit.intake.visitor_token import (
    DEFAULT_MAX_AGE,
    MAX_TOKEN_LENGTH,
    InvalidVisitorToken,
    capture,
    restore,
)

from ..conftest import CHROME_UA, AppFactory, kit_for, queued

PINTEREST_APP_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36 "
    "[Pinterest/Android]"
)
#: A real-looking epik: URL-safe Base64 of Pinterest's click parameters.
EPIK = (
    "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUm"
    "cD0yJm49cnNBQ3F2Q2dOVDBXWWhkWklrUGxBUSZ0PUFBQUFBR1BaY3Bv"
)
KEYS = (b"the shop's key",)


def landing(app: Flask, **headers: str) -> Any:
    """The shopper's request on the checkout page, after an ad click."""
    return app.test_request_context(
        "/checkout?utm_source=pinterest&email=jane%40example.com",
        base_url="https://shop.example",
        headers={"User-Agent": CHROME_UA, **headers},
        environ_base={
            "REMOTE_ADDR": "198.51.100.7",
            "HTTP_COOKIE": f"_epik={EPIK}; _pin_unauth=dWlkPU5qQXlNMk0x",
        },
    )


def token_from_landing(app: Flask, **headers: str) -> str:
    with landing(app, **headers):
        return kit_for(app).visitor_token()


def webhook(app: Flask, token: str, **kw: Any) -> Any:
    """What a Stripe webhook handler does: a request from Stripe, not from the shopper."""
    with app.test_request_context(
        "/stripe/webhook",
        method="POST",
        headers={"User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"},
        environ_base={"REMOTE_ADDR": "3.18.12.63"},
    ):
        return kit_for(app).track(
            "checkout", order_id="A-1001", value="24.13", currency="USD", visitor=token, **kw
        )


def test_the_webhook_event_is_the_shoppers(app: Flask) -> None:
    token = token_from_landing(app)
    event = webhook(app, token, user={"email": "jane@example.com"})
    assert event.event_id == "checkout-A-1001"  # what the thank-you page's tag uses
    [sent] = queued(app)
    user = sent["user_data"]
    assert user["click_id"] == EPIK
    assert user["client_ip_address"] == "198.51.100.7"  # not Stripe's
    assert user["client_user_agent"] == CHROME_UA
    assert user["external_id"] == [sha256_hex("dWlkPU5qQXlNMk0x")]
    assert user["em"] == [sha256_hex("jane@example.com")]
    # The shopper's page, scrubbed; not the webhook's URL.
    assert sent["event_source_url"] == "https://shop.example/checkout?utm_source=pinterest"


def test_outside_any_request_too(app: Flask) -> None:
    token = token_from_landing(app)
    with app.app_context():  # a worker or a scheduled job
        kit_for(app).track("checkout", order_id="A-7", value=5, currency="USD", visitor=token)
    [sent] = queued(app)
    assert sent["user_data"]["click_id"] == EPIK


def test_the_token_fits_stripe_metadata_even_for_a_long_visitor() -> None:
    visitor = Visitor(
        ip="2001:db8:85a3:1234:5678:8a2e:370:7334",
        user_agent=PINTEREST_APP_UA + " " + "x" * 200,
        click_id=EPIK,
        click_id_from_url=False,
        pin_unauth="a3b1c2d3-e4f5-6789-abcd-ef0123456789",
        consent=Consent.GRANTED,
        gpc=True,
        country="us",
        region="ca",
    )
    page = "https://shop.example/checkout?" + "&".join(f"utm_{i}=spring-sale" for i in range(40))
    token = capture(KEYS, visitor, page)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert all(c.isalnum() or c in "-_." for c in token)  # URL-safe
    back = restore(KEYS, token)
    # What attribution needs survives; the page URL went first.
    assert (back.click_id, back.ip, back.consent, back.gpc) == (
        EPIK,
        visitor.ip,
        visitor.consent,
        True,
    )
    assert back.user_agent and back.user_agent.startswith(PINTEREST_APP_UA[:60])


def test_a_typical_visitor_keeps_everything() -> None:
    visitor = Visitor("198.51.100.7", CHROME_UA, EPIK, False, "dWlkPU5qQXlNMk0x", Consent.UNKNOWN)
    token = capture(KEYS, visitor, "https://shop.example/checkout")
    back = restore(KEYS, token)
    assert back.page_url == "https://shop.example/checkout"
    assert back.external_id == visitor.external_id
    assert back.user_agent == CHROME_UA


def test_a_tampered_token_raises_a_clear_error(app: Flask) -> None:
    token = token_from_landing(app)
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with pytest.raises(InvalidEvent, match="visitor token is invalid"):
        webhook(app, tampered)
    assert queued(app) == []


def test_an_expired_token_is_refused() -> None:
    visitor = Visitor("198.51.100.7", CHROME_UA, EPIK, False, None, Consent.UNKNOWN)
    token = capture(KEYS, visitor, None, now=time.time() - DEFAULT_MAX_AGE - 60)
    with pytest.raises(InvalidVisitorToken, match="expired"):
        restore(KEYS, token)
    assert restore(KEYS, token, max_age=DEFAULT_MAX_AGE + 120).click_id == EPIK


def test_a_ticket_is_no_visitor_token(app: Flask) -> None:
    with app.app_context():
        ticket = kit_for(app).ticket("checkout", order_id="A-1", value=1, currency="USD")
    with pytest.raises(InvalidVisitorToken):
        webhook(app, ticket)


def test_consent_refused_at_capture_is_honoured(app: Flask) -> None:
    with app.test_request_context(
        "/checkout",
        headers={"User-Agent": CHROME_UA, "Cookie": f"_epik={EPIK}; _dedupkit_consent=0"},
    ):
        token = kit_for(app).visitor_token()
    webhook(app, token)
    assert queued(app) == []


def test_consent_given_at_capture_is_honoured_where_consent_is_required(
    make_app: AppFactory,
) -> None:
    app = make_app(REQUIRE_CONSENT=True)
    unknown = token_from_landing(app)
    webhook(app, unknown)
    assert queued(app) == []
    with app.test_request_context(
        "/checkout", headers={"User-Agent": CHROME_UA, "Cookie": "_dedupkit_consent=1"}
    ):
        granted = kit_for(app).visitor_token()
    webhook(app, granted, user={"email": "jane@example.com"})
    assert len(queued(app)) == 1


def test_capturing_needs_the_visitors_request(app: Flask) -> None:
    with app.app_context(), pytest.raises(RuntimeError, match="request"):
        kit_for(app).visitor_token()


# -- property-based -----------------------------------------------------------------------------

visitors = st.builds(
    Visitor,
    # As a request gives it: normalised (an IPv4-mapped IPv6 address is its IPv4 one).
    ip=st.one_of(st.none(), st.ip_addresses().map(lambda address: normalised_ip(str(address)))),
    user_agent=st.one_of(st.none(), st.text(min_size=1, max_size=400)),
    click_id=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_-]{1,160}", fullmatch=True)),
    click_id_from_url=st.booleans(),
    pin_unauth=st.one_of(st.none(), st.text(min_size=1, max_size=80)),
    consent=st.sampled_from(Consent),
    gpc=st.booleans(),
)


@given(visitor=visitors, page=st.one_of(st.none(), st.text(max_size=3000)))
def test_any_visitor_round_trips_within_the_limit(visitor: Visitor, page: str | None) -> None:
    token = capture(KEYS, visitor, page)
    assert len(token) <= MAX_TOKEN_LENGTH
    back = restore(KEYS, token)
    assert (back.ip, back.consent, back.gpc) == (visitor.ip, visitor.consent, visitor.gpc)
    assert back.click_id == visitor.click_id


@given(visitor=visitors, position=st.integers(min_value=0), char=st.characters(codec="ascii"))
def test_an_altered_token_never_restores(visitor: Visitor, position: int, char: str) -> None:
    token = capture(KEYS, visitor, None)
    i = position % len(token)
    altered = token[:i] + char + token[i + 1 :]
    if altered != token:
        with pytest.raises(InvalidVisitorToken):
            restore(KEYS, altered)


@given(visitor=visitors, length=st.integers(min_value=0))
def test_a_truncated_token_never_restores(visitor: Visitor, length: int) -> None:
    token = capture(KEYS, visitor, None)
    with pytest.raises(InvalidVisitorToken):
        restore(KEYS, token[: length % len(token)])


@given(visitor=visitors)
def test_a_token_signed_with_another_key_never_restores(visitor: Visitor) -> None:
    with pytest.raises(InvalidVisitorToken, match="another key"):
        restore(KEYS, capture((b"an attacker's key",), visitor, None))
