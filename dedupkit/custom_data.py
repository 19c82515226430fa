"""Translate the tag's event-data vocabulary into CAPI ``custom_data`` (pinterest.md §8.4).

Callers describe an event once, in the words of ``pintrk`` (``value``, ``order_quantity``,
``line_items[…]``); the browser gets that as is and Pinterest's API gets the translation,
so both channels describe the same conversion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import InvalidEvent

#: Tag event-data keys (pinterest.md §8.3) that have a CAPI counterpart or are tag-only.
TAG_FIELDS = frozenset(
    {
        "value",
        "currency",
        "order_id",
        "order_quantity",
        "search_query",
        "line_items",
        "promo_code",
        "property",
        "video_title",
        "lead_type",
        "page_name",
        "content_name",
        "content_category",
        "content_brand",
        "predicted_ltv",
        "opt_out_type",
    }
)
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


def decimal_string(value: object, field: str) -> str:
    """A number as the decimal string Pinterest wants (``"72.39"``, never ``7.239e1``).

    :raises InvalidEvent: naming ``field`` when ``value`` is not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise InvalidEvent(f"{field} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvent(f"{field} must be a finite number, got {value!r}")
    try:
        # str() first: Decimal(0.1) would carry the float's binary noise into the string.
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidEvent(f"{field} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidEvent(f"{field} must be a finite number, got {value!r}")
    return format(number, "f")


def whole_number(value: object, field: str) -> int:
    """A non-negative integer quantity. :raises InvalidEvent: naming ``field``."""
    if isinstance(value, bool):
        raise InvalidEvent(f"{field} must be a whole number, got {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidEvent(f"{field} must be a whole number, got {value!r}") from None
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        raise InvalidEvent(f"{field} must be a whole number >= 0, got {value!r}")
    return int(number)


def to_custom_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """CAPI ``custom_data`` for tag-vocabulary ``data``; keys CAPI has no room for are left out.

    :raises InvalidEvent: naming the field, for a value of the wrong type.
    """
    out: dict[str, Any] = {}
    if data.get("value") is not None:
        out["value"] = decimal_string(data["value"], "value")
    if data.get("currency") is not None:
        currency = str(data["currency"]).strip()
        if not _CURRENCY.match(currency):
            raise InvalidEvent(f"currency must be a 3-letter ISO 4217 code, got {currency!r}")
        out["currency"] = currency.upper()
    if data.get("order_id") not in (None, ""):
        out["order_id"] = str(data["order_id"])
    if data.get("search_query") not in (None, ""):
        out["search_string"] = str(data["search_query"])
    for key in ("content_name", "content_category", "content_brand", "opt_out_type"):
        if data.get(key) not in (None, ""):
            out[key] = str(data[key])
    if data.get("predicted_ltv") is not None:
        out["predicted_ltv"] = decimal_string(data["predicted_ltv"], "predicted_ltv")

    line_items = data.get("line_items")
    if line_items:
        contents = [_content(item, i) for i, item in enumerate(_sequence(line_items))]
        out["contents"] = contents
        out["content_ids"] = [c["id"] for c in contents if "id" in c]
        quantities = [c["quantity"] for c in contents if "quantity" in c]
        if quantities:
            out["num_items"] = sum(quantities)
    if data.get("order_quantity") is not None:
        # An explicit order quantity wins over the sum of the line items.
        out["num_items"] = whole_number(data["order_quantity"], "order_quantity")
    return out


def _sequence(value: object) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    raise InvalidEvent(f"line_items must be a list, got {type(value).__name__}")


def _content(item: object, index: int) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidEvent(f"line_items[{index}] must be an object, got {type(item).__name__}")
    field = f"line_items[{index}]"
    content: dict[str, Any] = {}
    if item.get("product_id") not in (None, ""):
        content["id"] = str(item["product_id"])
    if item.get("product_price") is not None:
        content["item_price"] = decimal_string(item["product_price"], f"{field}.product_price")
    if item.get("product_quantity") is not None:
        content["quantity"] = whole_number(item["product_quantity"], f"{field}.product_quantity")
    for tag_key, capi_key in (
        ("product_name", "item_name"),
        ("product_category", "item_category"),
        ("product_brand", "item_brand"),
    ):
        if item.get(tag_key) not in (None, ""):
            content[capi_key] = str(item[tag_key])
    return content
