"""Property-based fuzzing of everything that takes input from outside: thousands of generated
beacon bodies and ``track()`` arguments (deep nesting, huge numbers, lone surrogates, odd URLs,
wrong types, misspelled keys).

The properties: a bad input is an :class:`InvalidEvent` (a 4xx on the route), never another
exception or a 5xx; and whatever is accepted is an event Pinterest's official schema accepts and
the wire can encode.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedupkit.errors import InvalidEvent
from dedupkit.event.data import LINE_ITEM_FIELDS, TAG_FIELDS
from dedupkit.event.limits import check_capi_event
from dedupkit.event.model import build_event
from dedupkit.event.wire import encode_event
from dedupkit.intake.beacon import parse_beacon
from dedupkit.testing.schema import request_errors

from .conftest import CHROME_UA, AppFactory, kit_for, queued, shopper_request

# Hypothesis keeps no example database in the tree; runs stay within ~20 s together.
FUZZ = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
USER = {"client_ip_address": "203.0.113.7", "client_user_agent": CHROME_UA}


@dataclass(frozen=True)
class Raw:
    """JSON text put into a body as is: numbers Python would refuse to print, deep nesting."""

    text: str


# -- strategies ------------------------------------------------------------------------------

lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.one_of(
    st.text(max_size=20),
    st.text(st.one_of(st.characters(), lone_surrogates), max_size=8),
    st.sampled_from(
        [
            "",
            " ",
            "72.39",
            " 72.39 ",
            "1e1000000",
            "1e200000",
            "1e-999999",
            "-1",
            "1_000",
            "0x10",
            "NaN",
            "Infinity",
            "9" * 30,
            "9" * 5000,
            "0." + "0" * 50 + "1",
            "usd",
            "€",
            "\ud800",
            "A-1001",
        ]
    ),
)
numbers = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=2**63 - 2, max_value=2**63 + 2),
    st.floats(),
    st.integers(min_value=20, max_value=6000).map(lambda n: Raw("9" * n)),
    st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("1e1000000"), Raw("NaN"), Raw("Infinity")]),
)
keys = st.one_of(
    st.sampled_from(sorted(TAG_FIELDS | LINE_ITEM_FIELDS)),
    st.sampled_from(["valeu", "ordr_id", "curency", "colour", "line_item"]),
    st.text(max_size=8),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
deep = st.integers(min_value=1, max_value=3000).map(lambda n: Raw("[" * n + "]" * n))
line_item_values = st.one_of(scalars, json_values, deep)
line_items = st.lists(
    st.dictionaries(st.sampled_from(sorted(LINE_ITEM_FIELDS)) | keys, line_item_values, max_size=5),
    max_size=4,
)
event_data = st.dictionaries(
    keys,
    st.one_of(scalars, json_values, line_items, deep),
    max_size=6,
)
urls = st.one_of(
    st.sampled_from(
        [
            "https://shop.example/p/1",
            "http://[::1",
            "https://[fe80::1%25eth0]/",
            "javascript:alert(1)",
            "data:text/html,x",
            "//shop.example/p",
            "https://shop.example:99999/",
            "https://shop.example:x/",
            "https://shop.example/a b",
            "https://shop.example/\x00",
            "https://shop.example/\ud800",
            "https://shop.example/p?" + "q" * 3000,
            "https://shop.example/" + "p" * 3000,
            "",
        ]
    ),
    st.text(max_size=30).map(lambda s: "https://shop.example/" + s),
    scalars,
)
event_names = st.one_of(
    st.sampled_from(
        ["add_to_cart", "AddToCart", "page_visit", "search", "view_category", "checkout", "lead"]
    ),
    texts,
    numbers,
)
beacons = st.fixed_dictionaries(
    {"event_name": event_names, "event_id": st.one_of(st.uuids().map(str), texts, numbers)},
    optional={
        "event_source_url": urls,
        "event_time": st.one_of(st.integers(), st.floats(), texts),
        "data": st.one_of(event_data, json_values),
        "click_id": st.one_of(texts, numbers),
        "consent": st.one_of(st.integers(0, 2), texts),
    },
)


def dump(value: Any, ascii_only: bool = True) -> str:
    """JSON text of ``value``; :class:`Raw` parts verbatim, floats as Python prints them."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (f"{dump(str(k), ascii_only)}:{dump(v, ascii_only)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v, ascii_only) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A beacon body as bytes: mostly well-formed JSON with hostile contents, sometimes not."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(deep).text.encode()
    beacon = draw(beacons)
    if kind == 2:
        # Raw UTF-8 rather than escapes: a lone surrogate becomes bytes no decoder accepts.
        return dump(beacon, ascii_only=False).encode("utf-8", "surrogatepass")
    raw = dump(beacon).encode()
    if kind == 3 and raw:
        cut = draw(st.integers(0, len(raw)))
        return raw[:cut] + draw(st.binary(max_size=4)) + raw[cut:]
    return raw


def assert_sendable(payload: dict[str, Any]) -> None:
    """What Pinterest's official schema accepts and the wire can encode."""
    assert request_errors({"data": [payload]}) == []
    encode_event(payload).encode("utf-8")


# -- the parts: parse_beacon, build_event, check_capi_event ----------------------------------


@settings(FUZZ, max_examples=1200)
@given(raw=bodies())
def test_a_body_is_refused_as_invalid_or_becomes_a_sendable_event(raw: bytes) -> None:
    try:
        body = parse_beacon(raw)
        data = body.get("data")
        event = build_event(
            body.get("event_name"),  # type: ignore[arg-type]
            data,
            event_id=body.get("event_id"),
            event_time=body.get("event_time"),
            event_source_url=body.get("event_source_url"),
            user=USER,
        )
        payload = event.to_capi()
        check_capi_event(payload)
    except InvalidEvent:
        return
    assert_sendable(payload)
    json.dumps(event.to_pintrk())  # rendered into a <script> for the tag


@settings(FUZZ, max_examples=800)
@given(
    name=event_names,
    data=event_data,
    url=urls,
    user_extra=st.dictionaries(
        st.sampled_from(
            ["email", "phone", "external_id", "click_id", "client_user_agent", "emial"]
        ),
        st.one_of(scalars, st.lists(scalars, max_size=3)),
        max_size=3,
    ),
)
def test_build_event_raises_only_invalid_event(
    name: Any, data: dict[str, Any], url: Any, user_extra: dict[str, Any]
) -> None:
    # Python values, not JSON: huge ints, floats and surrogates reach build_event directly.
    unwrapped = json.loads(json.dumps(data, default=lambda raw: None))
    for candidate in (data, unwrapped):
        try:
            event = build_event(name, candidate, event_source_url=url, user={**USER, **user_extra})
            payload = event.to_capi()
            check_capi_event(payload)
        except InvalidEvent:
            continue
        assert_sendable(payload)


# -- end to end: the route and kit.track() (need the intake to use parse_beacon) -------------


@pytest.fixture
def fuzz_app(make_app: AppFactory) -> Iterator[Flask]:
    yield make_app(ALLOWED_ORIGINS="*")


@settings(FUZZ, max_examples=400)
@given(raw=bodies())
def test_the_events_route_never_answers_5xx_and_queues_only_sendable_events(
    fuzz_app: Flask, raw: bytes
) -> None:
    client = fuzz_app.test_client()
    response = client.post(
        "/dedupkit/events",
        data=raw,
        content_type="text/plain",
        headers={"User-Agent": CHROME_UA},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
        base_url="https://shop.example",
    )

    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert "error" in response.get_json()
    for payload in queued(fuzz_app):
        assert_sendable(payload)


@settings(FUZZ, max_examples=400)
@given(name=event_names, data=event_data, url=urls)
def test_track_raises_only_invalid_event_and_queues_only_sendable_events(
    fuzz_app: Flask, name: Any, data: dict[str, Any], url: Any
) -> None:
    kit = kit_for(fuzz_app)
    # Keys that are track()'s own parameters cannot be event data.
    data = {
        str(k): v
        for k, v in data.items()
        if k not in ("name", "event_id", "event_time", "event_source_url", "user")
    }
    unwrapped = json.loads(json.dumps(data, default=lambda raw: None))
    with shopper_request(fuzz_app, "/checkout"), contextlib.suppress(InvalidEvent):
        kit.track(name, event_source_url=url, **unwrapped)
    for payload in queued(fuzz_app):
        assert_sendable(payload)
