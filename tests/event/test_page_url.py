"""Page URLs reach Pinterest without the PII pages put in them."""

from __future__ import annotations

import pytest
from flask import Flask

from dedupkit.event.page_url import MAX_URL_LENGTH, clean_page_url, pii_name

from ..conftest import kit_for, queued, shopper_request

SCRUBBED = [
    # The issue's own example: an e-mail in a query value, percent-encoded.
    ("https://shop.example/p/1?email=jane.doe%40example.com", "https://shop.example/p/1"),
    # Attribution stays, PII goes, the order of what stays is kept byte for byte.
    (
        "https://shop.example/p/1?utm_source=pinterest&email=jane%40example.com&epik=dj0yJnU9b2&id=7",
        "https://shop.example/p/1?utm_source=pinterest&epik=dj0yJnU9b2&id=7",
    ),
    # A parameter whose name is harmless but whose value is an address.
    (
        "https://shop.example/confirm?ref=jane.doe@example.com&step=2",
        "https://shop.example/confirm?step=2",
    ),
    # Double-encoded, as a "next" URL inside a URL.
    (
        "https://shop.example/login?next=%252Faccount%253Fu%253Djane%252540example.com&lang=en",
        "https://shop.example/login?lang=en",
    ),
    # An e-mail in the path.
    (
        "https://shop.example/u/jane.doe@example.com/orders",
        "https://shop.example/u/redacted/orders",
    ),
    (
        "https://shop.example/u/jane.doe%40example.com/orders",
        "https://shop.example/u/redacted/orders",
    ),
    # Phone numbers as people write them.
    ("https://shop.example/search?q=%2B1+415+555+0134", "https://shop.example/search"),
    ("https://shop.example/search?q=(415)+555-0134&page=2", "https://shop.example/search?page=2"),
    ("https://shop.example/call/+44-20-7946-0958", "https://shop.example/call/redacted"),
    # Names that say PII, in the spellings forms produce.
    (
        "https://shop.example/checkout?first_name=Jane&lastName=Roe&e-mail=x&phone=1&tel=2&zip=94103&sku=A",
        "https://shop.example/checkout?sku=A",
    ),
    (
        "https://shop.example/s?customer%5Bemail%5D=x&billing_address=1+Main+St&postcode=SW1A&dob=1990-01-01",
        "https://shop.example/s",
    ),
    (
        "https://shop.example/reset?token=8f14e45fceea167a5a36dedd4bea2543&password=hunter2&utm_campaign=spring",
        "https://shop.example/reset?utm_campaign=spring",
    ),
    # The fragment never leaves: single-page apps keep state there.
    ("https://shop.example/app#/account/jane@example.com", "https://shop.example/app"),
    # Credentials in the authority: the whole URL is dropped.
    ("https://jane:secret@shop.example/p/1", None),
]

KEPT = [
    "https://shop.example/products/SKU-TOTE?utm_source=pinterest&utm_medium=paid&utm_campaign=spring",
    "https://shop.example/thanks/A-1001?order=1718000000123&variant=40123456789012",
    "https://shop.example/p/1?epik=dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVU",
    "https://shop.example/collections/2024-spring/mugs?page=3&sort=price-asc",
    "https://shop.example/blog/2024/06/15/new-linen",
]


@pytest.mark.parametrize(("url", "expected"), SCRUBBED)
def test_pii_is_removed(url: str, expected: str | None) -> None:
    assert clean_page_url(url) == expected


@pytest.mark.parametrize("url", KEPT)
def test_ids_dates_and_attribution_stay(url: str) -> None:
    assert clean_page_url(url) == url


@pytest.mark.parametrize("url", [u for u, _ in SCRUBBED] + KEPT)
def test_scrubbing_twice_changes_nothing(url: str) -> None:
    once = clean_page_url(url)
    assert clean_page_url(once) == once


@pytest.mark.parametrize(
    ("name", "pii"),
    [
        ("email", True),
        ("customer_email", True),
        ("user[first_name]", True),
        ("resetToken", True),
        ("E-Mail", True),
        ("hotel", False),
        ("utm_campaign", False),
        ("product_id", False),
        ("variant", False),
    ],
)
def test_parameter_names(name: str, pii: bool) -> None:
    assert pii_name(name) is pii


def test_a_long_query_is_trimmed_after_scrubbing() -> None:
    url = "https://shop.example/p?" + "&".join(f"k{i}=v" for i in range(600))
    assert clean_page_url(url) == "https://shop.example/p"
    assert len(url) > MAX_URL_LENGTH


def test_the_queued_event_carries_the_scrubbed_url(app: Flask) -> None:
    with shopper_request(app, "/p/1?email=jane.doe%40example.com&utm_source=pin"):
        kit_for(app).track("add_to_cart", value=1, currency="USD")
    [event] = queued(app)
    assert event["event_source_url"] == "http://localhost/p/1?utm_source=pin"
    assert "jane" not in str(event)


def test_a_beacon_page_url_is_scrubbed_too(app: Flask) -> None:
    response = app.test_client().post(
        "/dedupkit/events",
        json={
            "event_name": "search",
            "event_id": "e-1",
            "event_source_url": "https://shop.example/s?q=boots&phone=%2B14155550134",
            "data": {"search_query": "boots"},
        },
        headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"},
    )
    assert response.status_code == 202
    [event] = queued(app)
    assert event["event_source_url"] == "https://shop.example/s?q=boots"
