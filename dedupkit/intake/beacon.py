"""The bounded parser of a browser beacon's body.

Anyone can post to the beacon route, so its body is parsed with every bound checked before the
work it would cost: nesting is measured on the raw text before ``json.loads`` (which recurses,
and raises ``RecursionError`` on 100,000 ``[``), numbers by their digit count before Python
converts them (over 4,300 digits ``int()`` refuses, and long before that it is slow), and every
string is checked for lone surrogates (``"\\ud800"`` decodes to one) that would fail later, at
the outbox write. Every refusal is an :class:`~dedupkit.errors.InvalidEvent` whose message fits a
400 answer and never repeats the input.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import InvalidEvent
from ..event.limits import MAX_ARRAY_ITEMS, MAX_DEPTH, MAX_STRING_LENGTH, is_clean_text

#: Largest beacon body accepted; the route answers 413 above it before calling
#: :func:`parse_beacon` (the browser's keepalive limit is 64 KB for all requests).
MAX_BODY_BYTES = 16 * 1024
#: Most characters of a number: int64 has 19 digits, a float's repr at most 24 characters.
MAX_NUMBER_LENGTH = 32

# A JSON string (escapes included) or a bracket. An unterminated string runs to the end of the
# text: were it to fail instead, the search would retry at every later quote, quadratic time.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def parse_beacon(raw: bytes) -> dict[str, Any]:
    """The beacon's JSON object, every part of it within bounds.

    :raises InvalidEvent: for a body that is not UTF-8 JSON, not an object, nested deeper than
        :data:`MAX_DEPTH`, with a number over :data:`MAX_NUMBER_LENGTH` characters or not
        finite, a string over :data:`~dedupkit.event.limits.MAX_STRING_LENGTH` characters or holding
        a lone surrogate, an array over :data:`~dedupkit.event.limits.MAX_ARRAY_ITEMS` items, or a
        key given twice. A string ``event_source_url`` is left to the event's URL cleaning.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidEvent(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")  # strict: encoded surrogates are refused here too
    except UnicodeDecodeError:
        raise InvalidEvent("body must be JSON in UTF-8") from None
    _check_depth(text)
    try:
        body = json.loads(
            text,
            parse_int=_integer,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except InvalidEvent:
        raise
    except (ValueError, RecursionError):  # RecursionError: only if the depth scan were wrong
        raise InvalidEvent(
            "body must be a JSON object (sent as text/plain or application/json)"
        ) from None
    if not isinstance(body, dict):
        raise InvalidEvent("body must be a JSON object")
    for key, value in body.items():
        _check_text(key)
        # The page URL is optional: an over-long or odd one is trimmed or dropped when the event
        # is built (dedupkit.event.page_url), never a reason to refuse the beacon.
        if not (key == "event_source_url" and type(value) is str):
            _check_values(value, 1)
    return body


def _check_depth(text: str) -> None:
    # Brackets inside strings do not count. The count has to be right for valid JSON only:
    # json.loads refuses anything else afterwards.
    depth = 0
    for match in _TOKEN.finditer(text):
        first = text[match.start()]
        if first == "[" or first == "{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidEvent(f"body must not be nested more than {MAX_DEPTH} levels deep")
        elif first != '"':
            depth -= 1


def _integer(digits: str) -> int:
    if len(digits) > MAX_NUMBER_LENGTH:
        raise InvalidEvent(f"numbers in the body must be at most {MAX_NUMBER_LENGTH} characters")
    return int(digits)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_LENGTH:
        raise InvalidEvent(f"numbers in the body must be at most {MAX_NUMBER_LENGTH} characters")
    number = float(literal)
    if not math.isfinite(number):  # 1e400
        raise InvalidEvent("numbers in the body must be finite")
    return number


def _constant(name: str) -> float:
    raise InvalidEvent(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InvalidEvent("body must not give a key twice")
    return result


def _check_values(value: Any, depth: int) -> None:
    # Recursion is bounded: _check_depth measured the nesting before parsing.
    if type(value) is str:
        _check_text(value)
    elif type(value) is dict:
        for key, item in value.items():
            _check_text(key)
            _check_values(item, depth + 1)
    elif type(value) is list:
        if len(value) > MAX_ARRAY_ITEMS:
            raise InvalidEvent(f"arrays in the body must hold at most {MAX_ARRAY_ITEMS} items")
        for item in value:
            _check_values(item, depth + 1)


def _check_text(value: str) -> None:
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidEvent(f"strings in the body must be at most {MAX_STRING_LENGTH} characters")
    if not is_clean_text(value):
        raise InvalidEvent("strings in the body must be valid Unicode (no lone surrogates)")
