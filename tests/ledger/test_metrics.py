"""Prometheus metrics at ``{prefix}/metrics``: parsed with prometheus_client's own parser,
equal to what the shared outbox holds, the same from every worker and host."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from dedupkit.ledger import metrics
from dedupkit.outbox.base import LAG_BUCKETS
from dedupkit.state import get_state

from ..conftest import AppFactory
from ..support.payloads import capi_event
from ..support.redis_server import RedisServer


def scrape(app: Flask, path: str = "/dedupkit/metrics") -> dict[str, Any]:
    response = app.test_client().get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            key = sample.name
            if sample.labels:
                key += "{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
            samples[key] = sample.value
    return samples


def fill(app: Flask) -> None:
    """3 delivered (lags 2 s, 2 s, 2 h), 1 dead, 1 pending, 2 duplicates, skips, a pause."""
    outbox = get_state(app).outbox
    now = time.time()
    for n, age in enumerate([2, 2, 7000, 5, 5]):
        outbox.put(capi_event(f"e{n}", event_time=now - age), now=now - 1)
    outbox.put(capi_event("e0"))
    outbox.put(capi_event("e1"))
    claimed = {c.payload["event_id"]: c.id for c in outbox.claim(4, now=now)}
    outbox.ack([claimed["e0"], claimed["e1"], claimed["e2"]])
    outbox.dead([claimed["e3"]], reason="Invalid em")
    outbox.record_skip("bot")
    outbox.record_skip("no_consent", event_name="checkout", event_id="x")
    outbox.record_skip("no_consent")
    outbox.set_pause_until(now + 60, reason="HTTP 429", kind="rate_limit")


def test_the_text_parses_and_equals_the_outbox(make_app: AppFactory) -> None:
    app = make_app(METRICS=True)
    fill(app)
    samples = scrape(app)
    stats = get_state(app).outbox.stats()
    assert samples["dedupkit_outbox_pending"] == stats.pending + stats.in_flight == 1
    assert 0 < samples["dedupkit_outbox_oldest_pending_seconds"] < 60
    assert samples["dedupkit_events_total{outcome=queued}"] == 5
    assert samples["dedupkit_events_total{outcome=delivered}"] == stats.delivered == 3
    assert samples["dedupkit_events_total{outcome=dead}"] == stats.dead == 1
    assert samples["dedupkit_outbox_dead_letters"] == 1
    assert samples["dedupkit_outbox_events{state=sending}"] == 0
    assert samples["dedupkit_skipped_total{reason=bot}"] == 1
    assert samples["dedupkit_skipped_total{reason=no_consent}"] == 2
    assert samples["dedupkit_skipped_total{reason=no_identity}"] == 0
    assert samples["dedupkit_skipped_total{reason=gpc_opt_out}"] == 0
    assert samples["dedupkit_lost_total{reason=lost_memory_full}"] == 0
    assert samples["dedupkit_events_total{outcome=duplicate}"] == stats.duplicates == 2
    assert samples["dedupkit_delivery_paused"] == 1
    # The histogram is cumulative: two lags of about 2 s, one of about 2 h.
    assert samples["dedupkit_delivery_lag_seconds_bucket{le=1.0}"] == 0
    assert samples["dedupkit_delivery_lag_seconds_bucket{le=5.0}"] == 2
    assert samples["dedupkit_delivery_lag_seconds_bucket{le=3600.0}"] == 2
    assert samples["dedupkit_delivery_lag_seconds_bucket{le=7200.0}"] == 3
    assert samples["dedupkit_delivery_lag_seconds_bucket{le=+Inf}"] == 3
    assert samples["dedupkit_delivery_lag_seconds_count"] == 3
    assert 7000 < samples["dedupkit_delivery_lag_seconds_sum"] < 7020


def test_lag_buckets_are_cumulative_with_an_inf_bucket() -> None:
    counts = [1] + [0] * (len(LAG_BUCKETS) - 1) + [2]
    pairs = metrics.lag_buckets(counts)
    assert pairs[0] == ("1.0", 1.0) and pairs[-1] == ("+Inf", 3.0)
    assert metrics.lag_buckets([])[-1] == ("+Inf", 0.0)


def test_several_hosts_on_one_redis_answer_alike(
    make_app: AppFactory, redis_server: RedisServer
) -> None:
    namespace = f"m-{uuid.uuid4().hex}"
    settings = {"QUEUE_URL": redis_server.url, "QUEUE_NAMESPACE": namespace, "METRICS": True}
    one, two = make_app(**settings), make_app(**settings)
    fill(one)
    get_state(two).outbox.record_skip("no_identity")
    first, second = scrape(one), scrape(two)
    for sample in ("dedupkit_outbox_oldest_pending_seconds",):
        first.pop(sample), second.pop(sample)
    assert first == second
    assert first["dedupkit_skipped_total{reason=no_identity}"] == 1
    assert first["dedupkit_events_total{outcome=delivered}"] == 3


def test_closed_by_default_and_guarded_like_the_ledger(make_app: AppFactory) -> None:
    app = make_app()
    assert app.test_client().get("/dedupkit/metrics").status_code == 404
    guarded = make_app(METRICS=lambda request: request.headers.get("X-Scraper") == "yes")
    client = guarded.test_client()
    assert client.get("/dedupkit/metrics").status_code == 404
    assert client.get("/dedupkit/metrics", headers={"X-Scraper": "yes"}).status_code == 200


def test_without_prometheus_client_the_endpoint_names_the_extra(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(METRICS=True)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    response = app.test_client().get("/dedupkit/metrics")
    assert response.status_code == 501
    assert "flask-dedupkit[metrics]" in response.get_json()["error"]


def test_dedupkit_imports_without_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import dedupkit, dedupkit.ledger.metrics, dedupkit.ledger.page\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
