"""Tag event data → CAPI custom_data, as Pinterest's own template translates it (§8.4)."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import pytest

from dedupkit.errors import InvalidEvent
from dedupkit.event.data import to_custom_data
from dedupkit.event.limits import INT64_MAX
from dedupkit.event.model import build_event

USER = {"email": "john@example.com"}

#: (number as the caller gives it, the decimal string Pinterest parses).
NUMBERS: list[tuple[Any, str]] = [
    ("72.39", "72.39"),
    (" 72.39 ", "72.39"),
    (72.39, "72.39"),
    (10, "10"),
    (0, "0"),
    (Decimal("1.50"), "1.50"),
    (Decimal("1E+3"), "1000"),
    (0.1, "0.1"),
    (1e-7, "0.0000001"),
    (1e12, "1000000000000.0"),
    (10**12, "1000000000000"),
    ("999999999999.99999999", "999999999999.99999999"),
    ("2.5e2", "250"),
    ("-5", "-5"),
    # A float's binary noise is rounded away, the decimal the caller meant is kept.
    (0.1 + 0.2, "0.3"),
    (1e-300, "0"),
]

#: (tag event data, the field the error must name).
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"value": "abc"}, "value"),
    ({"value": ""}, "value"),
    ({"value": True}, "value"),
    ({"value": False}, "value"),
    ({"value": float("nan")}, "value"),
    ({"value": float("inf")}, "value"),
    ({"value": float("-inf")}, "value"),
    ({"value": "NaN"}, "value"),
    ({"value": "Infinity"}, "value"),
    ({"value": Decimal("NaN")}, "value"),
    ({"value": [10]}, "value"),
    ({"value": {"amount": 10}}, "value"),
    ({"predicted_ltv": "lots"}, "predicted_ltv"),
    ({"currency": "US"}, "currency"),
    ({"currency": "dollars"}, "currency"),
    ({"currency": "€"}, "currency"),
    ({"currency": "U$D"}, "currency"),
    ({"currency": 840}, "currency"),
    ({"order_quantity": "many"}, "order_quantity"),
    ({"order_quantity": 1.5}, "order_quantity"),
    ({"order_quantity": -1}, "order_quantity"),
    ({"order_quantity": True}, "order_quantity"),
    ({"order_quantity": 2**63}, "order_quantity"),
    ({"order_quantity": "9223372036854775808"}, "order_quantity"),
    ({"order_quantity": 1e19}, "order_quantity"),
    ({"order_quantity": "1e1000000"}, "order_quantity"),
    ({"order_quantity": Decimal("1e1000000")}, "order_quantity"),
    ({"value": "1e1000000"}, "value"),
    ({"value": "1e999"}, "value"),
    ({"value": "9" * 41}, "value"),
    ({"value": 10**12 + 1}, "value"),
    ({"value": 10**5000}, "value"),
    ({"value": 1e13}, "value"),
    ({"value": "1_000"}, "value"),
    ({"value": "0.000000001"}, "value"),
    ({"value": Decimal("1e-999999")}, "value"),
    ({"currency": "\ud800SD"}, "currency"),
    ({"order_id": 10**5000}, "order_id"),
    ({"order_id": {"id": 1}}, "order_id"),
    ({"order_id": "\udfff"}, "order_id"),
    ({"search_query": "x" * 5000}, "search_query"),
    ({"promo_code": ["a"]}, "promo_code"),
    ({"line_items": [{}] * 1001}, "line_items"),
    ({"line_items": [{"product_quantity": 2**62}, {"product_quantity": 2**62}]}, "line_items"),
    ({"line_items": [{"product_name": {"deep": [1]}}]}, "line_items[0].product_name"),
    ({"line_items": [{"product_id": "\ud800"}]}, "line_items[0].product_id"),
    ({"line_items": "sku-1"}, "line_items"),
    ({"line_items": {"product_id": "sku-1"}}, "line_items"),
    ({"line_items": ["sku-1"]}, "line_items[0]"),
    (
        {"line_items": [{"product_price": "10"}, {"product_price": "ten"}]},
        "line_items[1].product_price",
    ),
    (
        {"line_items": [{"product_price": 1}, {"product_price": True}]},
        "line_items[1].product_price",
    ),
    ({"line_items": [{"product_price": float("nan")}]}, "line_items[0].product_price"),
    ({"line_items": [{"product_price": float("inf")}]}, "line_items[0].product_price"),
    ({"line_items": [{"product_quantity": "two"}]}, "line_items[0].product_quantity"),
    ({"line_items": [{"product_quantity": 1.5}]}, "line_items[0].product_quantity"),
    ({"line_items": [{"product_quantity": -2}]}, "line_items[0].product_quantity"),
    ({"line_items": [{"product_quantity": True}]}, "line_items[0].product_quantity"),
    ({"line_items": [{}, {"product_quantity": 2**63}]}, "line_items[1].product_quantity"),
    ({"line_items": [{}, {"product_quantity": "1e1000000"}]}, "line_items[1].product_quantity"),
    ({"line_items": [{"product_price": "1e12345"}]}, "line_items[0].product_price"),
    (
        {"line_items": [{}, {}, {"product_quantity": float("nan")}]},
        "line_items[2].product_quantity",
    ),
]

#: Tag event-data keys with no CAPI counterpart (§8.3).
TAG_ONLY: dict[str, Any] = {
    "promo_code": "WINTER10",
    "property": "Athleta",
    "video_title": "How to lace boots",
    "lead_type": "Newsletter",
    "page_name": "Thank you",
}


@pytest.mark.parametrize(("number", "expected"), NUMBERS)
def test_value_becomes_a_plain_decimal_string(number: Any, expected: str) -> None:
    value = to_custom_data({"value": number})["value"]

    assert value == expected
    assert "e" not in value.lower()


@pytest.mark.parametrize(("number", "expected"), NUMBERS)
def test_item_price_and_predicted_ltv_become_plain_decimal_strings(
    number: Any, expected: str
) -> None:
    out = to_custom_data({"predicted_ltv": number, "line_items": [{"product_price": number}]})

    assert out["predicted_ltv"] == expected
    assert out["contents"] == [{"item_price": expected}]


@pytest.mark.parametrize(
    ("currency", "expected"), [("usd", "USD"), (" eur ", "EUR"), ("GBP", "GBP")]
)
def test_currency_is_uppercased(currency: str, expected: str) -> None:
    assert to_custom_data({"currency": currency}) == {"currency": expected}


@pytest.mark.parametrize(("order_id", "expected"), [("A-1001", "A-1001"), (1001, "1001")])
def test_order_id_becomes_a_string(order_id: Any, expected: str) -> None:
    assert to_custom_data({"order_id": order_id}) == {"order_id": expected}


def test_search_query_becomes_search_string() -> None:
    assert to_custom_data({"search_query": "red boots"}) == {"search_string": "red boots"}


def test_the_documented_example_translates_to_the_documented_custom_data() -> None:
    # pinterest.md §6.
    data = {
        "value": 72.39,
        "currency": "usd",
        "order_id": "A-1001",
        "line_items": [{"product_id": "sku-1", "product_price": 24.13, "product_quantity": 3}],
    }

    assert to_custom_data(data) == {
        "currency": "USD",
        "value": "72.39",
        "order_id": "A-1001",
        "content_ids": ["sku-1"],
        "num_items": 3,
        "contents": [{"id": "sku-1", "item_price": "24.13", "quantity": 3}],
    }


def test_line_items_become_contents_content_ids_and_num_items() -> None:
    data = {
        "line_items": [
            {
                "product_id": "SKU-1",
                "product_name": "Trail boot",
                "product_category": "Shoes > Boots",
                "product_brand": "Acme",
                "product_price": Decimal("89.90"),
                "product_quantity": 2,
                "product_variant": "42 EU",
            },
            {"product_id": 4711, "product_price": "5", "product_quantity": "3"},
        ]
    }

    out = to_custom_data(data)

    assert out == {
        "contents": [
            {
                "id": "SKU-1",
                "item_name": "Trail boot",
                "item_category": "Shoes > Boots",
                "item_brand": "Acme",
                "item_price": "89.90",
                "quantity": 2,
            },
            {"id": "4711", "item_price": "5", "quantity": 3},
        ],
        "content_ids": ["SKU-1", "4711"],
        "num_items": 5,
    }
    assert all(type(content["quantity"]) is int for content in out["contents"])


@pytest.mark.parametrize(("order_quantity", "expected"), [(7, 7), ("7", 7), (0, 0)])
def test_order_quantity_wins_over_the_sum_of_quantities(order_quantity: Any, expected: int) -> None:
    data = {"order_quantity": order_quantity, "line_items": [{"product_quantity": 2}]}

    assert to_custom_data(data)["num_items"] == expected


def test_order_quantity_alone_gives_num_items() -> None:
    assert to_custom_data({"order_quantity": 4}) == {"num_items": 4}


def test_line_items_without_quantities_give_no_num_items() -> None:
    out = to_custom_data({"line_items": [{"product_id": "a"}, {"product_id": "b"}]})

    assert out == {"contents": [{"id": "a"}, {"id": "b"}], "content_ids": ["a", "b"]}


@pytest.mark.parametrize("data", [{}, {"line_items": []}, {"value": None, "order_id": ""}])
def test_nothing_to_translate_gives_empty_custom_data(data: dict[str, Any]) -> None:
    assert to_custom_data(data) == {}


@pytest.mark.parametrize(
    "key", ["content_name", "content_category", "content_brand", "opt_out_type"]
)
def test_capi_content_fields_pass_through_as_strings(key: str) -> None:
    assert to_custom_data({key: "LDP"}) == {key: "LDP"}


@pytest.mark.parametrize(("key", "value"), TAG_ONLY.items())
def test_tag_only_keys_stay_out_of_custom_data_but_reach_pintrk(key: str, value: Any) -> None:
    event = build_event("lead", {"value": 1, key: value}, user=USER)

    assert event.to_capi()["custom_data"] == {"value": "1"}
    assert event.to_pintrk()[key] == value


@pytest.mark.parametrize(("data", "field"), INVALID)
def test_an_unusable_value_raises_invalid_event_naming_the_field(
    data: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(field)) as info:
        to_custom_data(data)

    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("data", "field"), INVALID)
def test_build_event_refuses_unusable_event_data(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(field)):
        build_event("checkout", data, user=USER)


def test_the_largest_int64_quantity_is_accepted() -> None:
    out = to_custom_data({"line_items": [{"product_quantity": str(INT64_MAX)}]})

    assert out["num_items"] == INT64_MAX == 2**63 - 1


@pytest.mark.parametrize(
    "data",
    [
        {"line_items": [{"product_quantity": "1e1000000"}]},
        {"order_quantity": "1e200000"},
        {"value": "1e1000000"},
        {"value": "1" + "0" * 4400},
        {"value": 10**4400},
        {"order_id": 10**4400},
    ],
)
def test_a_huge_number_is_refused_in_milliseconds(data: dict[str, Any]) -> None:
    # int(Decimal("1e1000000")) took ~23 s holding the GIL; a digit string over 4,300 digits
    # made int() raise ValueError instead of InvalidEvent.
    started = time.perf_counter()
    with pytest.raises(InvalidEvent):
        to_custom_data(data)

    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("data", "unknown", "suggestion"),
    [
        ({"valeu": 10}, "valeu", "value"),
        ({"value": 10, "ordr_id": "Z"}, "ordr_id", "order_id"),
        ({"curency": "USD"}, "curency", "currency"),
        (
            {"line_items": [{"product_id": "a"}, {"product_qty": 2}]},
            "product_qty",
            "product_quantity",
        ),
        ({"line_items": [{"prodcut_price": 2}]}, "prodcut_price", "product_price"),
    ],
)
def test_an_unknown_key_is_refused_naming_it_and_the_closest_known_key(
    data: dict[str, Any], unknown: str, suggestion: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        build_event("checkout", data, user=USER)

    assert repr(unknown) in str(info.value)
    assert f"did you mean {suggestion!r}" in str(info.value)


def test_an_unknown_line_item_key_names_its_line_item() -> None:
    with pytest.raises(InvalidEvent, match=re.escape("line_items[1]")):
        to_custom_data({"line_items": [{"product_id": "a"}, {"product_qty": 2}]})


def test_a_key_without_a_close_match_gets_no_suggestion() -> None:
    with pytest.raises(InvalidEvent) as info:
        to_custom_data({"zzzzzzzz": 1})

    assert "'zzzzzzzz'" in str(info.value) and "did you mean" not in str(info.value)


def test_both_channels_carry_the_same_value_currency_and_order_id() -> None:
    event = build_event("checkout", {"value": 10, "currency": "USD", "order_id": "Z"}, user=USER)

    tag, capi = event.to_pintrk(), event.to_capi()["custom_data"]

    assert Decimal(str(tag["value"])) == Decimal(capi["value"])
    assert (tag["currency"], tag["order_id"]) == (capi["currency"], capi["order_id"])


@pytest.mark.parametrize("key", ["product_variant", "product_variant_id"])
def test_tag_only_line_item_keys_are_accepted(key: str) -> None:
    data = {"line_items": [{"product_id": "a", key: "42 EU"}]}

    assert to_custom_data(data) == {"contents": [{"id": "a"}], "content_ids": ["a"]}


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("12,50", "use a dot for the decimals ('12.50')"),
        ("12,5", "use a dot for the decimals ('12.5')"),
        ("1.234,50", "use a dot for the decimals ('1234.50')"),
        ("1,234.50", "leave out the thousands separators ('1234.50')"),
        ("1,234", "leave out the thousands separators ('1234')"),
    ],
)
def test_a_decimal_comma_says_how_to_write_the_number(value: str, hint: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        to_custom_data({"value": value})
    assert hint in str(caught.value)


def test_other_malformed_numbers_get_no_separator_hint() -> None:
    with pytest.raises(InvalidEvent) as caught:
        to_custom_data({"value": "twelve"})
    assert "dot" not in str(caught.value) and "separator" not in str(caught.value)
