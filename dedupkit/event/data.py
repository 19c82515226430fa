"""Translate the tag's event-data vocabulary into CAPI ``custom_data`` (pinterest.md §8.4).

Callers describe an event once, in the words of ``pintrk`` (``value``, ``order_quantity``,
``line_items[…]``); the browser gets that as is and Pinterest's API gets the translation,
so both channels describe the same conversion. Event data is all or nothing: a key outside the
vocabulary is refused (naming the closest known key), never sent to one channel only.

Numbers are parsed with bounds *before* any conversion: ``"1e1000000"`` as a quantity would
otherwise be expanded digit by digit while holding the GIL, and a 28-byte value would become a
10-million-character string.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import InvalidEvent
from .limits import INT64_MAX, MAX_ARRAY_ITEMS, MAX_STRING_LENGTH

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
        # The tag's own field for the dedup id; the event's id always wins over it.
        "event_id",
    }
)
#: Keys of one ``line_items`` entry (pinterest.md §8.3, ``LineItem``).
LINE_ITEM_FIELDS = frozenset(
    {
        "product_id",
        "product_name",
        "product_category",
        "product_brand",
        "product_price",
        "product_quantity",
        "product_variant",
        "product_variant_id",
    }
)
#: Largest money amount (value, item price, predicted LTV) accepted, in currency units.
MAX_AMOUNT = Decimal(10) ** 12
#: Most digits after the decimal point of a money amount given as text or Decimal.
MAX_DECIMALS = 8
#: Longest number given as text; a money amount or quantity never needs more.
MAX_NUMBER_LENGTH = 40
#: Most line items of one event.
MAX_LINE_ITEMS = MAX_ARRAY_ITEMS

_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
# Plain decimal notation with an optional short exponent: no "NaN", "Infinity", "1_000".
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?$")
_AMOUNT_STEP = Decimal(1).scaleb(-MAX_DECIMALS)
#: Integers this large are never turned into text (Python refuses past 4,300 digits anyway).
_MAX_INTEGER_TEXT = 10**64


def check_keys(data: Mapping[str, Any], known: Iterable[str] = TAG_FIELDS, where: str = "") -> None:
    """Refuse a key outside the tag vocabulary, naming it and the closest known key.

    :raises InvalidEvent: e.g. ``unknown event data key 'valeu' (did you mean 'value'?)``.
    """
    known = frozenset(known)
    for key in data:
        if key in known:
            continue
        label = key[:64] if isinstance(key, str) else type(key).__name__
        close = difflib.get_close_matches(label, sorted(known), n=1) if isinstance(key, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidEvent(
            f"unknown event data key {label!r}{' in ' + where if where else ''}{hint}: "
            "event data uses the Pinterest tag's vocabulary and is sent whole or not at all"
        )


def decimal_string(value: object, field: str) -> str:
    """A money amount as the decimal string Pinterest wants (``"72.39"``, never ``7.239e1``).

    At most :data:`MAX_AMOUNT` in size and :data:`MAX_DECIMALS` decimals; a float's binary
    noise (``72.38999999999999``) is rounded away.

    :raises InvalidEvent: naming ``field`` when ``value`` is not such a number.
    """
    number = _bounded_decimal(value, field, MAX_AMOUNT)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_DECIMALS:
        if not isinstance(value, float):
            raise InvalidEvent(f"{field} must have at most {MAX_DECIMALS} decimals")
        number = number.quantize(_AMOUNT_STEP).normalize()
    # Bounded above, so this is at most 13 digits before the point and MAX_DECIMALS after.
    return format(number, "f")


def whole_number(value: object, field: str) -> int:
    """A quantity: a whole number from 0 to int64's maximum (the schema's ``format: int64``).

    :raises InvalidEvent: naming ``field``.
    """
    if type(value) is int:
        # Compared as int: never turned into text or Decimal, whatever its size.
        if not 0 <= value <= INT64_MAX:
            raise InvalidEvent(f"{field} must be a whole number from 0 to {INT64_MAX}")
        return value
    number = _bounded_decimal(value, field, Decimal(INT64_MAX), kind="a whole number")
    if number < 0 or number != number.to_integral_value():
        raise InvalidEvent(f"{field} must be a whole number from 0 to {INT64_MAX}")
    return int(number)


def text(value: object, field: str, limit: int = MAX_STRING_LENGTH) -> str:
    """A string field (order id, product name, …) as text; numbers are accepted as ids.

    :raises InvalidEvent: naming ``field`` for other types, over-long text or a lone surrogate.
    """
    if type(value) is str:
        result = value
    elif type(value) is int:
        if not -_MAX_INTEGER_TEXT < value < _MAX_INTEGER_TEXT:
            raise InvalidEvent(f"{field} must be text or a number of at most 64 digits")
        result = str(value)
    elif isinstance(value, (float, Decimal)) and not isinstance(value, bool):
        result = _bounded_text(value, field)
    else:
        raise InvalidEvent(f"{field} must be text, got {type(value).__name__}")
    if len(result) > limit:
        raise InvalidEvent(f"{field} must be at most {limit} characters, got {len(result)}")
    if not result.isascii():
        try:
            result.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(f"{field} holds a lone surrogate, which is not text") from None
    return result


def to_custom_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """CAPI ``custom_data`` for tag-vocabulary ``data``; tag-only keys are left out.

    :raises InvalidEvent: naming the field, for an unknown key or a value of the wrong type.
    """
    check_keys(data)
    out: dict[str, Any] = {}
    if data.get("value") is not None:
        out["value"] = decimal_string(data["value"], "value")
    if data.get("currency") is not None:
        currency = text(data["currency"], "currency", 16).strip()
        if not _CURRENCY.match(currency):
            raise InvalidEvent(f"currency must be a 3-letter ISO 4217 code, got {currency!r}")
        out["currency"] = currency.upper()
    if data.get("order_id") not in (None, ""):
        out["order_id"] = text(data["order_id"], "order_id")
    if data.get("search_query") not in (None, ""):
        out["search_string"] = text(data["search_query"], "search_query")
    for key in ("content_name", "content_category", "content_brand", "opt_out_type"):
        if data.get(key) not in (None, ""):
            out[key] = text(data[key], key)
    for key in ("promo_code", "property", "video_title", "lead_type", "page_name"):
        # Tag-only, but checked all the same: the tag receives them.
        if data.get(key) is not None:
            text(data[key], key)
    if data.get("event_id") is not None:
        text(data["event_id"], "event_id")
    if data.get("predicted_ltv") is not None:
        out["predicted_ltv"] = decimal_string(data["predicted_ltv"], "predicted_ltv")

    line_items = data.get("line_items")
    if line_items:
        contents = [_content(item, i) for i, item in enumerate(_sequence(line_items))]
        out["contents"] = contents
        out["content_ids"] = [c["id"] for c in contents if "id" in c]
        quantities = [c["quantity"] for c in contents if "quantity" in c]
        if quantities:
            total = sum(quantities)
            if total > INT64_MAX:
                raise InvalidEvent(f"line_items quantities must add up to at most {INT64_MAX}")
            out["num_items"] = total
    if data.get("order_quantity") is not None:
        # An explicit order quantity wins over the sum of the line items.
        out["num_items"] = whole_number(data["order_quantity"], "order_quantity")
    return out


def _bounded_decimal(
    value: object, field: str, largest: Decimal, kind: str = "a number"
) -> Decimal:
    """``value`` as a finite Decimal no larger than ``largest`` in size, checked before any
    conversion that could cost time or memory in proportion to the number's magnitude."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise InvalidEvent(f"{field} must be {kind}, got {type(value).__name__}")
    too_large = f"{field} must be {kind} of at most {largest:f} in size"
    if isinstance(value, int):
        if abs(value) > largest:  # int vs Decimal compares without building either's text
            raise InvalidEvent(too_large)
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"{field} must be a finite number, got {value!r}")
        if abs(value) > largest:
            raise InvalidEvent(too_large)
        # repr() first: Decimal(0.1) would carry the float's binary noise into the string.
        return Decimal(repr(value))
    if isinstance(value, str):
        candidate = value.strip()
        if len(candidate) > MAX_NUMBER_LENGTH or not _NUMBER.match(candidate):
            raise InvalidEvent(
                f"{field} must be {kind} in plain notation, got {value[:40]!r}"
                + _separator_hint(candidate)
            )
        try:
            number = Decimal(candidate)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid numbers
            raise InvalidEvent(f"{field} must be {kind}, got {value[:40]!r}") from None
    else:
        number = value
    if not number.is_finite():
        raise InvalidEvent(f"{field} must be a finite number, got {number!r}")
    # copy_abs() and the comparison use no context (abs() would overflow on 1e1000000) and
    # compare exponents first: no expansion happens here.
    if number.copy_abs() > largest:
        raise InvalidEvent(too_large)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -(MAX_DECIMALS + 32):
        # Decimal("1e-999999") is tiny but would print a million zeros.
        raise InvalidEvent(f"{field} must have at most {MAX_DECIMALS} decimals")
    return number


def _separator_hint(candidate: str) -> str:
    """How to write a number typed the European way (``12,50``, ``1.234,50``, ``1,234.50``)."""
    if "," not in candidate or len(candidate) > MAX_NUMBER_LENGTH:
        return ""
    dotted = candidate.replace(".", "").replace(",", ".")
    # 12,5 and 12,50 are decimals; 1,234 is more likely a thousands separator.
    if re.search(r",[0-9]{1,2}$", candidate) and _NUMBER.match(dotted):
        return f": use a dot for the decimals ({dotted!r})"
    plain = candidate.replace(",", "")
    if _NUMBER.match(plain):
        return f": leave out the thousands separators ({plain!r})"
    return ""


def _bounded_text(value: float | Decimal, field: str) -> str:
    number = _bounded_decimal(value, field, Decimal(_MAX_INTEGER_TEXT))
    return format(number, "f")


def _sequence(value: object) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LINE_ITEMS:
            raise InvalidEvent(f"line_items must hold at most {MAX_LINE_ITEMS} items")
        return value
    raise InvalidEvent(f"line_items must be a list, got {type(value).__name__}")


def _content(item: object, index: int) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidEvent(f"line_items[{index}] must be an object, got {type(item).__name__}")
    field = f"line_items[{index}]"
    check_keys(item, LINE_ITEM_FIELDS, field)
    content: dict[str, Any] = {}
    if item.get("product_id") not in (None, ""):
        content["id"] = text(item["product_id"], f"{field}.product_id")
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
            content[capi_key] = text(item[tag_key], f"{field}.{tag_key}")
    for tag_key in ("product_variant", "product_variant_id"):
        if item.get(tag_key) is not None:
            text(item[tag_key], f"{field}.{tag_key}")
    return content
