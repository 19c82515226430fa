"""check_capi_event: what Pinterest's schema would refuse is refused when the event is queued."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dedupkit.errors import InvalidEvent
from dedupkit.event import limits
from dedupkit.event.limits import INT64_MAX, check_capi_event
from dedupkit.event.model import build_event
from dedupkit.event.wire import encode_event
from dedupkit.spec import load_request_schema

USER = {"email": "john@example.com", "client_ip_address": "203.0.113.7", "client_user_agent": "UA"}
DATA = {
    "value": "72.39",
    "currency": "USD",
    "order_id": "A-1001",
    "line_items": [
        {"product_id": "sku-1", "product_price": "24.13", "product_quantity": 3},
        {"product_id": "sku-2", "product_price": "0", "product_quantity": 1},
    ],
}


def payload() -> dict[str, Any]:
    return build_event(
        "checkout", DATA, user=USER, event_source_url="https://shop.example/t"
    ).to_capi()


def official_errors(event: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(load_request_schema(), format_checker=None)
    return [error.message for error in validator.iter_errors({"data": [event]})]


def test_the_schema_is_fully_understood() -> None:
    # A keyword the compiler does not know (say a "pattern" added upstream) would go unchecked.
    assert not limits.UNCHECKED_KEYWORDS


def test_a_built_event_passes() -> None:
    event = payload()

    check_capi_event(event)
    assert official_errors(event) == []


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        target = event
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def change(event: dict[str, Any]) -> None:
        target = event
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return change


#: (a change Pinterest's schema refuses, the field the message must name).
SCHEMA_REFUSES: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_drop(("event_id",)), "event_id"),
    (_drop(("user_data",)), "user_data"),
    (_set(("event_time",), "1733011200"), "event_time"),
    (_set(("event_time",), True), "event_time"),
    (_set(("custom_data", "value"), 72.39), "custom_data.value"),
    (_set(("custom_data", "valeu"), "1"), "custom_data.valeu"),
    (_set(("custom_data", "contents", 1, "quantity"), "1"), "custom_data.contents[1].quantity"),
    (_set(("custom_data", "contents", 1, "item_brand_id"), "b" * 65), "item_brand_id"),
    (_set(("custom_data", "contents", 0, "colour"), "red"), "custom_data.contents[0].colour"),
    (_set(("custom_data", "content_ids"), "sku-1"), "custom_data.content_ids"),
    (_set(("user_data", "em"), "not-a-list"), "user_data.em"),
    (_set(("user_data",), {"ph": ["a" * 64]}), "user_data"),
    (_set(("opt_out",), "yes"), "opt_out"),
    (_set(("unknown_field",), 1), "unknown_field"),
    (_set(("device_info",), {"os_family": "amiga"}), "device_info.os_family"),
    (_set(("device_info",), {"battery_level": 101}), "device_info.battery_level"),
    (_set(("device_info",), {"languages": ["en"] * 101}), "device_info.languages"),
    (_set(("app_info",), {"app_store": "s" * 101}), "app_info.app_store"),
]


@pytest.mark.parametrize(("change", "field"), SCHEMA_REFUSES)
def test_what_the_official_schema_refuses_is_refused_naming_the_field(
    change: Callable[[dict[str, Any]], None], field: str
) -> None:
    event = payload()
    change(event)
    assert official_errors(event), "the case must be one the official schema refuses"

    with pytest.raises(InvalidEvent, match=re.escape(field)):
        check_capi_event(event)


#: What the schema lets through but Pinterest or the wire would not take.
OWN_LIMITS: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_set(("custom_data", "contents", 0, "quantity"), INT64_MAX + 1), "contents[0].quantity"),
    (_set(("custom_data", "num_items"), -1), "custom_data.num_items"),
    (_set(("custom_data", "value"), "1e1000000"), "custom_data.value"),
    (_set(("custom_data", "value"), "1" * 10_000_000), "custom_data.value"),
    (_set(("custom_data", "currency"), "usd"), "custom_data.currency"),
    (_set(("action_source",), "email"), "action_source"),
    (_set(("event_id",), ""), "event_id"),
    (_set(("event_source_url",), "https://s.example/" + "p" * 2048), "event_source_url"),
    (_set(("user_data", "client_user_agent"), "\ud800"), "user_data.client_user_agent"),
    (_set(("custom_data", "order_id"), "x" * 5000), "custom_data.order_id"),
    (_set(("custom_data", "content_ids"), ["a"] * 1001), "custom_data.content_ids"),
    (_set(("user_data", "foo"), {"nested": 1}), "user_data.foo"),
    (_set(("event_time",), float("nan")), "event_time"),
]


@pytest.mark.parametrize(("change", "field"), OWN_LIMITS)
def test_what_pinterest_or_the_wire_would_not_take_is_refused(
    change: Callable[[dict[str, Any]], None], field: str
) -> None:
    event = payload()
    change(event)

    with pytest.raises(InvalidEvent, match=re.escape(field)):
        check_capi_event(event)


def test_the_message_never_repeats_the_value() -> None:
    event = payload()
    event["user_data"]["client_user_agent"] = "secret-agent " * 400

    with pytest.raises(InvalidEvent) as info:
        check_capi_event(event)

    assert "secret-agent" not in str(info.value)


def test_an_event_with_too_much_text_overall_is_refused() -> None:
    event = payload()
    event["custom_data"]["contents"] = [{"id": f"{i:04}" + "x" * 4000} for i in range(20)]

    with pytest.raises(InvalidEvent, match="characters of text"):
        check_capi_event(event)


@pytest.mark.parametrize(
    "user_data",
    [
        {"em": ["a" * 64]},
        {"hashed_maids": ["a" * 64]},
        {"client_ip_address": "203.0.113.7", "client_user_agent": "UA"},
    ],
)
def test_each_identity_pinterest_accepts_passes(user_data: dict[str, Any]) -> None:
    event = payload()
    event["user_data"] = user_data

    check_capi_event(event)


def test_the_checked_event_is_not_changed() -> None:
    event = payload()
    before = copy.deepcopy(event)

    check_capi_event(event)

    assert event == before
    encode_event(event).encode("utf-8")
