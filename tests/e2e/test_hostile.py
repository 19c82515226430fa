"""What an attacker or an unlucky operator does to a real server: nothing stalls, nothing mixes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask

from dedupkit import DedupKit
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from ..conftest import CHROME_UA
from ..support.live_server import LiveServer
from ..support.polling import wait_until
from ..support.redis_server import RedisServer

NORMAL = {
    "event_name": "add_to_cart",
    "event_id": "normal",
    "event_source_url": "https://shop.example/p/1",
    "data": {"value": 3, "currency": "USD"},
}
# 185 bytes that once expanded a 1,000,000-digit integer while holding the GIL (~23 s).
HOSTILE = {
    "event_name": "add_to_cart",
    "event_id": "hostile",
    "data": {"line_items": [{"product_id": "x", "product_quantity": "1e1000000"}]},
}


def test_an_exponent_beacon_is_refused_at_once_and_delays_no_one(make_app: Any) -> None:
    app = make_app()
    answers: dict[str, tuple[int, float]] = {}
    with LiveServer(app) as server, httpx.Client(headers={"User-Agent": CHROME_UA}) as client:
        url = f"{server.url}/dedupkit/events"

        def post(name: str, body: dict[str, Any]) -> None:
            started = time.monotonic()
            response = client.post(url, content=json.dumps(body), timeout=30)
            answers[name] = (response.status_code, time.monotonic() - started)

        threads = [
            threading.Thread(target=post, args=("hostile", HOSTILE)),
            threading.Thread(target=post, args=("normal", NORMAL)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers["hostile"][0] == 400
    assert answers["normal"][0] == 202
    assert answers["hostile"][1] < 1.0
    assert answers["normal"][1] < 1.0
    assert [p.payload["event_id"] for p in get_state(app).outbox.claim(10)] == ["normal"]


def shop(tmp_path: Path, fake: FakePinterest, redis_url: str) -> tuple[Flask, DedupKit]:
    app = Flask(f"shop-{fake.ad_account_id}", instance_path=str(tmp_path / fake.ad_account_id))
    app.config.update(
        DEDUPKIT_AD_ACCOUNT_ID=fake.ad_account_id,
        DEDUPKIT_CONVERSION_TOKEN=fake.token,
        DEDUPKIT_API_BASE_URL=fake.api_base_url,
        DEDUPKIT_QUEUE_URL=redis_url,  # the same database, no namespace configured
        DEDUPKIT_FLUSH_INTERVAL=0.05,
    )
    return app, DedupKit(app)


@pytest.mark.redis
def test_two_shops_on_one_redis_each_send_only_their_own_events(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with (
        FakePinterest(ad_account_id="111111", ad_account_ids={"111111"}, token="a" * 20) as one,
        FakePinterest(ad_account_id="222222", ad_account_ids={"222222"}, token="b" * 20) as two,
    ):
        shops = [shop(tmp_path, one, redis_server.url), shop(tmp_path, two, redis_server.url)]
        try:
            for app, kit in shops:
                with app.test_request_context(
                    "/thanks",
                    headers={"User-Agent": CHROME_UA},
                    environ_base={"REMOTE_ADDR": "198.51.100.7"},
                ):
                    # The same order id in both shops: neither may swallow the other's.
                    kit.track("checkout", order_id="1001", value=10, currency="USD")
            assert one.wait_for_capi_events(1)
            assert two.wait_for_capi_events(1)
            for app, _ in shops:
                outbox = get_state(app).outbox
                # Pinterest has it; the ack follows a moment later.
                assert wait_until(lambda box=outbox: box.stats().delivered == 1)  # type: ignore[misc]
                stats = outbox.stats()
                assert (stats.dead, stats.pending, stats.in_flight) == (0, 0, 0)
        finally:
            for app, _ in shops:
                get_state(app).background.stop()
        assert [e["event_id"] for e in one.capi_events] == ["checkout-1001"]
        assert [e["event_id"] for e in two.capi_events] == ["checkout-1001"]
        assert all(r.status == 200 for r in [*one.requests, *two.requests])
