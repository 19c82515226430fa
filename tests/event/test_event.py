"""The Event: one event id on both channels, payloads valid against Pinterest's schema."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dedupkit.errors import InvalidEvent
from dedupkit.event.model import build_event
from dedupkit.event.names import TAG_NAMES, EventName, EventNames
from dedupkit.event.user_data import sha256_hex
from dedupkit.spec import load_request_schema

from ..support.agents import CHROME_UA

EPIK = (
    "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2Q2dOVDBXWWhkWklrUGxBUSZ0"
)
USER: dict[str, Any] = {
    "email": " John.Doe@Example.COM ",
    "phone": "+1 (650) 555-1234",
    "first_name": "John",
    "last_name": "Doe",
    "gender": "m",
    "date_of_birth": "1991-05-26",
    "city": "San Francisco",
    "state": "CA",
    "zip": "94103",
    "country": "US",
    "external_id": "cust-42",
    "client_ip_address": "203.0.113.7",
    "client_user_agent": CHROME_UA,
    "click_id": EPIK,
    "partner_id": "ramp-1",
}
DATA: dict[str, Any] = {
    "value": Decimal("72.39"),
    "currency": "usd",
    "order_id": "A-1001",
    "search_query": "trail boots",
    "promo_code": "WINTER10",
    "line_items": [
        {
            "product_id": "sku-1",
            "product_name": "Trail boot",
            "product_category": "Shoes",
            "product_brand": "Acme",
            "product_price": 24.13,
            "product_quantity": 3,
        },
        {"product_id": "sku-2", "product_price": "0", "product_quantity": 1},
    ],
}
MINIMAL_USER = {"email": "john@example.com"}
#: 2024-12-01T00:00:00Z.
DEC_1 = 1733011200


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = load_request_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(validator: Draft202012Validator, events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors({"data": events})
    ]


# event_id


@pytest.mark.parametrize(
    ("name", "order_id", "expected"),
    [
        ("Checkout", "A-1", "checkout-A-1"),
        ("checkout", 1001, "checkout-1001"),
        ("AddToCart", "o-9", "add_to_cart-o-9"),
        ("SignUp", "u-7", "signup-u-7"),
        ("custom", "A-1", "custom-A-1"),
    ],
)
def test_an_order_id_gives_a_deterministic_event_id(
    name: str, order_id: object, expected: str
) -> None:
    first = build_event(name, {"order_id": order_id}, user=MINIMAL_USER)
    again = build_event(name, {"order_id": order_id}, user=MINIMAL_USER)

    assert first.event_id == again.event_id == expected
    assert first.to_capi()["event_id"] == first.to_pintrk()["event_id"] == expected


@pytest.mark.parametrize("data", [None, {}, {"order_id": ""}, {"order_id": None}, {"value": 5}])
def test_without_an_order_id_the_event_id_is_a_fresh_uuid4(data: dict[str, Any] | None) -> None:
    first = build_event("checkout", data, user=MINIMAL_USER)
    second = build_event("checkout", data, user=MINIMAL_USER)

    parsed = uuid.UUID(first.event_id)
    assert parsed.version == 4
    assert str(parsed) == first.event_id
    assert first.event_id != second.event_id


def test_an_explicit_event_id_wins_over_the_order_id() -> None:
    event = build_event("checkout", {"order_id": "A-1"}, event_id="evt-123", user=MINIMAL_USER)

    assert event.event_id == "evt-123"
    assert event.to_capi()["event_id"] == event.to_pintrk()["event_id"] == "evt-123"


@pytest.mark.parametrize("event_id", ["", "   ", "a\nb", "a\rb", "x" * 257, 123])
def test_an_unusable_event_id_is_refused(event_id: Any) -> None:
    with pytest.raises(InvalidEvent, match="event_id"):
        build_event("checkout", event_id=event_id, user=MINIMAL_USER)


def test_an_order_id_that_would_make_an_unusable_event_id_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="event_id"):
        build_event("checkout", {"order_id": "A-1\r\nX"}, user=MINIMAL_USER)


# event_time


def test_event_time_defaults_to_now_in_unix_seconds() -> None:
    before = int(time.time())
    event = build_event("checkout", user=MINIMAL_USER)
    after = int(time.time())

    assert before <= event.event_time <= after
    assert type(event.to_capi()["event_time"]) is int


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (DEC_1, DEC_1),
        (DEC_1 + 0.9, DEC_1),
        (dt.datetime(2024, 12, 1, tzinfo=dt.timezone.utc), DEC_1),
        (dt.datetime(2024, 12, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), DEC_1),
    ],
)
def test_event_time_is_unix_seconds(given: Any, expected: int) -> None:
    event = build_event("checkout", event_time=given, user=MINIMAL_USER)

    assert event.event_time == expected
    assert type(event.to_capi()["event_time"]) is int


@pytest.mark.parametrize(
    "given",
    [
        DEC_1 * 1000,  # JavaScript Date.now()
        float(DEC_1 * 1000),
        dt.datetime(2024, 12, 1),  # naive: which zone?
        0,
        -1,
        str(DEC_1),
        True,
        dt.date(2024, 12, 1),
        float("inf"),
        float("nan"),
    ],
)
def test_an_unusable_event_time_is_refused(given: Any) -> None:
    with pytest.raises(InvalidEvent, match="event_time"):
        build_event("checkout", event_time=given, user=MINIMAL_USER)


# Names


def test_the_event_carries_both_spellings_of_its_name() -> None:
    event = build_event("AddToCart", user=MINIMAL_USER)

    assert (event.capi_name, event.tag_name) == ("add_to_cart", "addtocart")
    assert event.to_capi()["event_name"] == "add_to_cart"
    assert event.key == ("add_to_cart", event.event_id)


def test_an_advertiser_defined_event_keeps_its_name_on_both_channels(
    validator: Draft202012Validator,
) -> None:
    names = EventNames(advertiser_defined=["BookDemo"])

    event = build_event("BookDemo", {"order_id": "D-1"}, names=names, user=MINIMAL_USER)

    assert event.name == EventName("BookDemo", "BookDemo", advertiser_defined=True)
    assert event.to_capi()["event_name"] == event.tag_name == "BookDemo"
    assert event.event_id == "BookDemo-D-1"
    assert schema_errors(validator, [event.to_capi()]) == []


def test_an_unknown_event_name_is_refused_before_anything_else() -> None:
    with pytest.raises(InvalidEvent, match="Purchase"):
        build_event("Purchase", {"value": "not a number"}, user=None)


# The CAPI payload


@pytest.mark.parametrize("capi_name", sorted(TAG_NAMES))
def test_every_standard_event_validates_against_pinterests_schema(
    validator: Draft202012Validator, capi_name: str
) -> None:
    event = build_event(
        capi_name,
        DATA,
        user=USER,
        event_source_url="https://shop.example/checkout/thank-you",
        partner_name="ss-dedupkit",
        language="en",
        opt_out=False,
    )
    payload = event.to_capi()

    assert schema_errors(validator, [payload]) == []
    assert payload["event_name"] == capi_name
    assert payload["event_id"] == f"{capi_name}-A-1001"
    assert payload["action_source"] == "web"


def test_the_payload_is_the_translated_and_hashed_event() -> None:
    event = build_event(
        "Checkout",
        DATA,
        user=USER,
        event_time=DEC_1,
        event_source_url="https://shop.example/thank-you",
        partner_name="ss-dedupkit",
        language="en",
        opt_out=False,
    )

    assert event.to_capi() == {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": DEC_1,
        "event_id": "checkout-A-1001",
        "event_source_url": "https://shop.example/thank-you",
        "partner_name": "ss-dedupkit",
        "language": "en",
        "opt_out": False,
        "user_data": {
            "em": [sha256("john.doe@example.com")],
            "ph": [sha256("16505551234")],
            "fn": [sha256("john")],
            "ln": [sha256("doe")],
            "ge": [sha256("m")],
            "db": [sha256("19910526")],
            "ct": [sha256("sanfrancisco")],
            "st": [sha256("ca")],
            "zp": [sha256("94103")],
            "country": [sha256("us")],
            "external_id": [sha256("cust-42")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": CHROME_UA,
            "click_id": EPIK,
            "partner_id": "ramp-1",
        },
        "custom_data": {
            "value": "72.39",
            "currency": "USD",
            "order_id": "A-1001",
            "search_string": "trail boots",
            "contents": [
                {
                    "id": "sku-1",
                    "item_name": "Trail boot",
                    "item_category": "Shoes",
                    "item_brand": "Acme",
                    "item_price": "24.13",
                    "quantity": 3,
                },
                {"id": "sku-2", "item_price": "0", "quantity": 1},
            ],
            "content_ids": ["sku-1", "sku-2"],
            "num_items": 4,
        },
    }


@pytest.mark.parametrize(
    "user",
    [
        {"email": "john@example.com"},
        {"maid": "38400000-8cf0-11bd-b23e-10b96e40000d"},
        {"client_ip_address": "2001:db8::1", "client_user_agent": CHROME_UA},
    ],
)
@pytest.mark.parametrize("action_source", ["web", "app_android", "app_ios", "offline"])
def test_each_identity_and_action_source_validates(
    validator: Draft202012Validator, user: dict[str, Any], action_source: str
) -> None:
    event = build_event("app_install", user=user, action_source=action_source)

    assert schema_errors(validator, [event.to_capi()]) == []
    assert event.to_capi()["action_source"] == action_source


def test_an_unknown_action_source_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="action_source"):
        build_event("checkout", user=MINIMAL_USER, action_source="website")


def test_optional_fields_are_left_out_when_not_given() -> None:
    payload = build_event("page_visit", user=MINIMAL_USER, event_source_url="").to_capi()

    assert set(payload) == {"event_name", "action_source", "event_time", "event_id", "user_data"}


def test_a_batch_of_1000_built_events_validates(validator: Draft202012Validator) -> None:
    names = sorted(TAG_NAMES)
    events = [
        build_event(
            names[i % len(names)],
            {**DATA, "order_id": f"A-{i}"} if i % 2 else {"value": i, "currency": "EUR"},
            user=USER if i % 3 else {"client_ip_address": "203.0.113.7", "client_user_agent": "UA"},
            event_time=DEC_1 + i,
        ).to_capi()
        for i in range(1000)
    ]

    assert schema_errors(validator, events) == []
    assert len({(e["event_name"], e["event_id"]) for e in events}) == 1000


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("custom_data", "value"), 72.39),
        (("custom_data", "contents", 0, "item_price"), 24.13),
        (("user_data", "em"), "not-a-list"),
        (("event_time",), "1733011200"),
    ],
)
def test_the_schema_catches_what_a_broken_translation_would_send(
    validator: Draft202012Validator, path: tuple[Any, ...], bad: Any
) -> None:
    # Guards the guard: the schema tests above would be vacuous if it accepted anything.
    payload = build_event("checkout", DATA, user=USER).to_capi()
    target: Any = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = bad

    assert schema_errors(validator, [payload]) != []


def test_the_schema_rejects_an_event_without_identity_or_a_batch_over_1000(
    validator: Draft202012Validator,
) -> None:
    payload = build_event("checkout", user=MINIMAL_USER).to_capi()
    anonymous = {**payload, "user_data": {"client_ip_address": "203.0.113.7"}}

    assert schema_errors(validator, [anonymous]) != []
    assert schema_errors(validator, [payload] * 1001) != []


# The pintrk payload


def test_pintrk_data_carries_the_same_event_id_in_the_tag_vocabulary() -> None:
    event = build_event("Checkout", DATA, user=USER)

    data = event.to_pintrk()

    assert data["event_id"] == event.to_capi()["event_id"] == event.event_id
    assert event.tag_name == "checkout"
    # The API's normalised currency: both channels say the same.
    assert data["currency"] == event.to_capi()["custom_data"]["currency"] == "USD"
    assert data == {
        "value": "72.39",
        "currency": "USD",
        "order_id": "A-1001",
        "search_query": "trail boots",
        "promo_code": "WINTER10",
        "line_items": DATA["line_items"],
        "event_id": "checkout-A-1001",
    }
    json.dumps(data)  # goes into a <script>: must be JSON
    assert not {"contents", "content_ids", "num_items", "search_string"} & data.keys()


def test_pintrk_data_holds_no_user_data() -> None:
    event = build_event("checkout", {"value": 1}, user=USER)

    rendered = json.dumps(event.to_pintrk())

    assert "john" not in rendered.lower()
    assert sha256("john.doe@example.com") not in rendered
    assert "203.0.113.7" not in rendered


def test_an_event_id_in_the_data_cannot_diverge_from_the_events() -> None:
    event = build_event("checkout", {"event_id": "other"}, event_id="evt-1", user=MINIMAL_USER)

    assert event.to_pintrk()["event_id"] == "evt-1"


# Immutability


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("event_id", "other"),
        ("event_time", 1),
        ("name", EventName("lead", "lead")),
        ("user_data", {}),
        ("custom_data", {}),
        ("action_source", "offline"),
        ("brand_new_attribute", 1),
    ],
)
def test_assigning_an_attribute_raises(attribute: str, value: Any) -> None:
    event = build_event("checkout", DATA, user=USER)

    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        setattr(event, attribute, value)
    assert getattr(event, attribute, None) != value


@pytest.mark.parametrize("mapping", ["user_data", "custom_data", "tag_data"])
def test_the_mappings_of_an_event_cannot_be_assigned_to(mapping: str) -> None:
    event = build_event("checkout", DATA, user=USER)

    with pytest.raises(TypeError):
        getattr(event, mapping)["injected"] = "x"  # type: ignore[index]


def test_mutating_the_payloads_does_not_change_the_next_payloads() -> None:
    event = build_event("checkout", DATA, user=USER)
    capi, pintrk = event.to_capi(), event.to_pintrk()
    expected_capi, expected_pintrk = json.dumps(capi), json.dumps(pintrk)

    capi["event_id"] = "other"
    capi["user_data"]["em"].append("0" * 64)
    capi["user_data"]["client_ip_address"] = "198.51.100.1"
    capi["custom_data"]["contents"][0]["quantity"] = 99
    capi["custom_data"]["content_ids"].clear()
    pintrk["line_items"][0]["product_price"] = 0
    pintrk["line_items"].append({"product_id": "x"})
    pintrk["event_id"] = "other"

    assert json.dumps(event.to_capi()) == expected_capi
    assert json.dumps(event.to_pintrk()) == expected_pintrk


def test_mutating_the_callers_data_after_building_does_not_change_the_event() -> None:
    data: dict[str, Any] = json.loads(json.dumps({**DATA, "value": "72.39"}))
    user = dict(USER)
    event = build_event("checkout", data, user=user)
    expected_capi, expected_pintrk = json.dumps(event.to_capi()), json.dumps(event.to_pintrk())

    data["line_items"][0]["product_quantity"] = 99
    data["line_items"].append({"product_id": "x"})
    data["value"] = "0"
    user["email"] = "someone@else.example"

    assert json.dumps(event.to_capi()) == expected_capi
    assert json.dumps(event.to_pintrk()) == expected_pintrk


def test_nested_values_reachable_from_an_event_cannot_change_its_payloads() -> None:
    # "Event: immutable" (contract.md) must hold for what the attributes expose, not only for
    # assignment: whoever holds the event could otherwise rewrite what Pinterest receives.
    event = build_event("checkout", DATA, user=USER)
    expected_capi, expected_pintrk = json.dumps(event.to_capi()), json.dumps(event.to_pintrk())

    with contextlib.suppress(TypeError, AttributeError):
        event.user_data["em"].append("0" * 64)
    with contextlib.suppress(TypeError, AttributeError):
        event.custom_data["contents"][0]["quantity"] = 99
    with contextlib.suppress(TypeError, AttributeError):
        event.tag_data["line_items"][0]["product_price"] = 0

    assert json.dumps(event.to_capi()) == expected_capi
    assert json.dumps(event.to_pintrk()) == expected_pintrk


def test_the_capi_payload_round_trips_through_json(
    validator: Draft202012Validator,
) -> None:
    event = build_event("checkout", DATA, user=USER)

    assert isinstance(event.user_data, Mapping)
    # Round-trips through JSON unchanged: nothing in the payload needs a custom encoder.
    assert json.loads(json.dumps(event.to_capi())) == event.to_capi()
    assert schema_errors(validator, [json.loads(json.dumps(event.to_capi()))]) == []


# Bounded input: every bad argument is an InvalidEvent naming it, never another error later


def test_data_nested_deeper_than_the_limit_is_refused_without_recursing_away() -> None:
    # A tag-only key carried it unchecked to _freeze, which recursed until RecursionError.
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]

    with pytest.raises(InvalidEvent, match="property"):
        build_event("checkout", {"property": deep}, user=MINIMAL_USER)


def test_freezing_stops_at_the_depth_limit() -> None:
    from dedupkit.event.limits import MAX_DEPTH
    from dedupkit.event.model import _freeze

    ok: Any = 1
    for _ in range(MAX_DEPTH):
        ok = [ok]
    _freeze(ok)

    with pytest.raises(InvalidEvent, match="nested"):
        _freeze([ok])


@pytest.mark.parametrize(
    ("data", "user", "field"),
    [
        ({"order_id": "A-\ud800"}, MINIMAL_USER, "order_id"),
        ({"line_items": [{"product_name": "\udfff"}]}, MINIMAL_USER, "product_name"),
        ({"promo_code": "\ud800"}, MINIMAL_USER, "promo_code"),
        ({}, {"external_id": 10**5000}, "user.external_id"),
        ({}, {"email": {"nested": "a@example.com"}}, "user.email"),
        ({}, {"email": ["a@example.com"] * 101}, "user.email"),
    ],
)
def test_unusable_text_in_data_or_user_is_an_invalid_event_naming_it(
    data: dict[str, Any], user: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(field)):
        build_event("checkout", data, user=user)


@pytest.mark.parametrize("email", ["john\ud800@example.com", ["a@example.com", "\ud800"]])
def test_pii_that_is_not_text_is_dropped_with_a_warning_and_the_event_kept(
    email: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user = {"email": email, "client_ip_address": "192.0.2.1", "client_user_agent": "UA"}
    event = build_event("checkout", user=user)
    assert event.user_data.get("em") in (None, (sha256_hex("a@example.com"),))
    assert "user.email" in caplog.text
    assert "\ud800" not in caplog.text


def test_an_unknown_user_field_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="emial"):
        build_event("checkout", user={"emial": "john@example.com", **MINIMAL_USER})


def test_an_unusable_clear_field_from_the_request_is_dropped_not_fatal() -> None:
    user = {**MINIMAL_USER, "client_user_agent": "\ud800" + "x" * 10, "click_id": "c" * 5000}

    event = build_event("checkout", user=user)

    assert "client_user_agent" not in event.to_capi()["user_data"]
    assert "click_id" not in event.to_capi()["user_data"]


def test_a_huge_order_id_is_refused_before_it_becomes_an_event_id() -> None:
    with pytest.raises(InvalidEvent, match="order_id"):
        build_event("checkout", {"order_id": 10**5000}, user=MINIMAL_USER)


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://shop.example/p?q=1", "https://shop.example/p?q=1"),
        ("https://shop.example/p?" + "q" * 3000, "https://shop.example/p"),
        ("http://[::1", None),
        ("javascript:alert(1)", None),
        ("https://shop.example/\ud800", None),
        ("", None),
    ],
)
def test_an_odd_page_url_is_trimmed_or_dropped_and_the_event_kept(
    url: str, sent: str | None, validator: Draft202012Validator
) -> None:
    event = build_event("checkout", event_source_url=url, user=MINIMAL_USER)

    assert event.to_capi().get("event_source_url") == sent
    validator.validate({"data": [event.to_capi()]})


@pytest.mark.parametrize(("field", "value"), [("language", "\ud800"), ("partner_name", 3.5e300)])
def test_optional_text_fields_are_bounded_text(field: str, value: Any) -> None:
    with pytest.raises(InvalidEvent, match=field):
        build_event("checkout", user=MINIMAL_USER, **{field: value})


def test_opt_out_must_be_a_boolean() -> None:
    with pytest.raises(InvalidEvent, match="opt_out"):
        build_event("checkout", user=MINIMAL_USER, opt_out="no")  # type: ignore[arg-type]
