"""Request bodies: event dicts are encoded, event JSON texts from the outbox go out unchanged."""

from __future__ import annotations

import json
from typing import Any

import httpx

from dedupkit.delivery.client import CapiClient, Outcome, encode_batch

EVENTS: list[dict[str, Any]] = [
    {
        "event_name": "checkout",
        "event_id": f"o-{i}",
        "event_time": 1_750_000_000,
        "action_source": "web",
        "custom_data": {"content_name": "Crème brûlée ✓ 寿司", "value": "10.00"},
    }
    for i in range(3)
]


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def recording_client(bodies: list[bytes]) -> CapiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        count = len(json.loads(request.content)["data"])
        return httpx.Response(200, json={"events": [{"status": "processed"}] * count})

    return CapiClient(
        ad_account_id="549764982399", token="t", transport=httpx.MockTransport(handler)
    )


def test_dicts_are_encoded_compact_with_non_ascii_kept() -> None:
    body = encode_batch(EVENTS)
    assert body == compact({"data": EVENTS}).encode()
    assert "寿司".encode() in body


def test_texts_are_inserted_unchanged_among_dicts() -> None:
    # Spacing and escapes no encoder of ours would produce: proof that the text is not re-encoded.
    odd = '{"event_id": "odd",  "custom_data":{"content_name":"\\u00e9"}}'
    body = encode_batch([compact(EVENTS[0]), odd, EVENTS[2]])
    assert body == f'{{"data":[{compact(EVENTS[0])},{odd},{compact(EVENTS[2])}]}}'.encode()
    assert json.loads(body)["data"][1] == {"event_id": "odd", "custom_data": {"content_name": "é"}}


def test_texts_of_the_dicts_give_the_bytes_of_the_dicts() -> None:
    assert encode_batch([compact(e) for e in EVENTS]) == encode_batch(EVENTS)


def test_send_puts_texts_on_the_wire_byte_for_byte() -> None:
    bodies: list[bytes] = []
    texts = [compact(e) for e in EVENTS]
    with recording_client(bodies) as client:
        result = client.send(texts)
    assert [r.outcome for r in result.results] == [Outcome.DELIVERED] * 3
    [body] = bodies
    assert body == ('{"data":[' + ",".join(texts) + "]}").encode()


def test_send_of_dicts_is_unchanged() -> None:
    bodies: list[bytes] = []
    with recording_client(bodies) as client:
        assert client.send(EVENTS).delivered == 3
    assert bodies == [compact({"data": EVENTS}).encode()]
