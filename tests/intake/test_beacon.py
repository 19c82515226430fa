"""parse_beacon: a beacon body is parsed with every bound checked before it costs anything."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from dedupkit.errors import InvalidEvent
from dedupkit.event.limits import MAX_DEPTH
from dedupkit.intake.beacon import MAX_BODY_BYTES, parse_beacon

BEACON: dict[str, Any] = {
    "event_name": "add_to_cart",
    "event_id": "4f1d2c3b-0000-4000-8000-000000000001",
    "event_time": 1733011200,
    "event_source_url": "https://shop.example/p/1",
    "data": {
        "value": 24.13,
        "currency": "USD",
        "line_items": [{"product_id": "SKU-1", "product_price": "24.13", "product_quantity": 1}],
    },
}


def nested(depth: int) -> bytes:
    return b'{"data":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_a_beacon_parses_to_its_object() -> None:
    assert parse_beacon(json.dumps(BEACON).encode()) == BEACON


def test_non_ascii_text_and_escaped_pairs_are_text() -> None:
    body = parse_beacon('{"a": "Crème ✓", "b": "\\ud83d\\ude00"}'.encode())

    assert body == {"a": "Crème ✓", "b": "😀"}


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 50 + '\\"{{{'
    assert parse_beacon(json.dumps({"a": text}).encode()) == {"a": text}


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse_beacon(nested(MAX_DEPTH))


#: (body, what the 400's message must say).
REFUSED: list[tuple[bytes, str]] = [
    (b"\xff\xfe", "UTF-8"),
    (b'{"a": "\xed\xa0\x80"}', "UTF-8"),  # an encoded surrogate is not UTF-8
    (b'{"a": "\\ud800"}', "surrogate"),
    (b'{"a": ["x", "\\udfff"]}', "surrogate"),
    (b'{"\\ud800": 1}', "surrogate"),
    (b'{"data": {"line_items": [{"product_name": "\\udc00"}]}}', "surrogate"),
    (nested(MAX_DEPTH + 1), "nested"),
    (b"[" * MAX_BODY_BYTES, "nested"),
    (b'{"a":' * 2000 + b"1" + b"}" * 2000, "nested"),
    (b'{"a": ' + b"9" * 5000 + b"}", "numbers"),
    (b'{"a": 1' + b"0" * 40 + b"}", "numbers"),
    (b'{"a": 1e400}', "finite"),
    (b'{"a": -Infinity}', "Infinity"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": "' + b"x" * 5000 + b'"}', "strings"),
    (b'{"a": [' + b"0," * 1000 + b"0]}", "arrays"),
    (b'{"event_id": "a", "event_id": "b"}', "twice"),
    (b"[]", "object"),
    (b'"text"', "object"),
    (b"42", "object"),
    (b"", "JSON"),
    (b"{", "JSON"),
    (b'{"a": "unterminated', "JSON"),
    (b'"\\' * 8000, "JSON"),
    (b"{}" + b" " * (MAX_BODY_BYTES - 1), "bytes"),
]


@pytest.mark.parametrize(("body", "reason"), REFUSED)
def test_a_bad_body_is_refused_in_milliseconds_with_a_reason(body: bytes, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidEvent, match=re.escape(reason)) as info:
        parse_beacon(body)

    # Quadratic scans and recursion took seconds on such bodies; the bound is generous.
    assert time.perf_counter() - started < 0.1
    assert len(str(info.value)) < 200  # fit for a JSON 400 answer, nothing echoed


def test_the_message_never_repeats_the_input() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_beacon(b'{"email": "john@example.com' + b"x" * 5000 + b'"}')

    assert "john" not in str(info.value)


def test_an_over_long_page_url_is_left_for_the_event_to_trim() -> None:
    url = "https://shop.example/p?" + "q" * 6000

    assert parse_beacon(json.dumps({"event_source_url": url}).encode())["event_source_url"] == url


def test_worst_case_bodies_of_the_size_limit_stay_fast() -> None:
    # Unterminated strings after escaped quotes made a string-stripping regex quadratic (2 s).
    bodies = [b'"\\' * (MAX_BODY_BYTES // 2), b'["' + b'\\"' * 8000, b"[]" * 8000]
    started = time.perf_counter()
    for body in bodies:
        with pytest.raises(InvalidEvent):
            parse_beacon(body)

    assert time.perf_counter() - started < 0.2
