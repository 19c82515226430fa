"""Prometheus metrics at ``{prefix}/metrics``, computed from the shared outbox at scrape time.

Nothing is counted in process memory: every worker and host answers a scrape with the same
figures, read from the outbox they share (a custom collector), so several gunicorn workers
need no multiprocess directory. Counters are the outbox's monotonic totals
(:attr:`~dedupkit.outbox.base.OutboxStats.totals` and the skip counts): pruning delivered
entries or replaying dead letters never lowers one, so ``rate()`` and ``increase()`` see no
reset. What the outbox holds now (pending, dead letters) is a gauge. Needs ``prometheus_client``
(``pip install 'flask-dedupkit[metrics]'``);
without it dedupkit still imports and the endpoint answers 501 naming the extra.

``DEDUPKIT_METRICS`` guards the endpoint like ``DEDUPKIT_DEBUG_UI``: a flag, or
``(request) -> bool``; 404 while it denies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, jsonify

from ..errors import OutboxError
from ..outbox.base import LAG_BUCKETS, TOTALS, Outbox
from ..state import get_state
from ..vocabulary import EventState, SkipReason
from .page import debug_ui_allowed, scrub

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger("dedupkit")

MISSING_EXTRA = (
    "dedupkit metrics need prometheus_client: pip install 'flask-dedupkit[metrics]' "
    "(or pip install prometheus_client)"
)


class OutboxCollector:
    """A ``prometheus_client`` collector reading one outbox on every scrape."""

    def __init__(self, outbox: Outbox, *, clock: Any = time.time) -> None:
        self.outbox = outbox
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        now = self.clock()
        stats = self.outbox.stats(now=now)
        pause = self.outbox.pause(now=now)
        yield GaugeMetricFamily(
            "dedupkit_outbox_pending",
            "Events in the outbox not delivered yet (waiting or being sent).",
            value=stats.pending + stats.in_flight,
        )
        yield GaugeMetricFamily(
            "dedupkit_outbox_dead_letters",
            "Dead letters the outbox holds now (replayed ones leave it).",
            value=stats.dead,
        )
        held = GaugeMetricFamily(
            "dedupkit_outbox_events",
            "Events the outbox holds now, by state (delivered ones until pruned).",
            labels=["state"],
        )
        for state, count in (
            (EventState.PENDING, stats.pending),
            (EventState.SENDING, stats.in_flight),
            (EventState.DELIVERED, stats.delivered),
            (EventState.DEAD, stats.dead),
        ):
            held.add_metric([state.metric], count)
        yield held
        yield GaugeMetricFamily(
            "dedupkit_outbox_oldest_pending_seconds",
            "Age of the oldest event not delivered yet (0 when none).",
            value=stats.oldest_pending_age or 0.0,
        )
        events = CounterMetricFamily(
            "dedupkit_events",
            "Events by outcome, ever: queued, delivered, dead (dead-lettered), replayed, "
            "duplicate.",
            labels=["outcome"],
        )
        for outcome in TOTALS:
            events.add_metric([outcome], stats.totals.get(outcome, 0))
        yield events
        skipped = CounterMetricFamily(
            "dedupkit_skipped",
            "Events deliberately not sent to the API, by reason, ever.",
            labels=["reason"],
        )
        lost = CounterMetricFamily(
            "dedupkit_lost",
            "Events lost by a failure (memory fallback full, unreadable spill line), ever.",
            labels=["reason"],
        )
        for reason in SkipReason:
            family = lost if reason.is_loss else skipped
            family.add_metric([reason.metric], stats.skipped.get(reason.value, 0))
        known = {reason.value for reason in SkipReason}
        for name, count in sorted(stats.skipped.items()):
            if name not in known:  # recorded by another version: still counted
                skipped.add_metric([name], count)
        yield skipped
        yield lost
        yield GaugeMetricFamily(
            "dedupkit_delivery_paused",
            "1 while delivery to Pinterest is paused (Retry-After, credentials), else 0.",
            value=0 if pause is None else 1,
        )
        yield HistogramMetricFamily(
            "dedupkit_delivery_lag_seconds",
            "Seconds from an event's time to its delivery; Pinterest dedups within 3600.",
            buckets=lag_buckets(stats.lag_counts),
            sum_value=stats.lag_sum,
        )


def lag_buckets(counts: Any) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from the outbox's per-bucket lag counts."""
    bounds = [*(repr(b) for b in LAG_BUCKETS), "+Inf"]
    values = list(counts) or [0] * len(bounds)
    total, out = 0, []
    for bound, count in zip(bounds, values, strict=True):
        total += int(count)
        out.append((bound, float(total)))
    return out


def metrics() -> Response:
    """The Prometheus text of the app's outbox; 404 unless ``DEDUPKIT_METRICS`` allows it."""
    state = get_state()
    # Read defensively: the setting is new, and older Settings objects do not have it.
    if not debug_ui_allowed(state.settings.metrics):
        abort(404)
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError:
        response = jsonify(error=MISSING_EXTRA)
        response.status_code = 501
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OutboxCollector(state.outbox))
    try:
        body = generate_latest(registry)
    except OutboxError as exc:
        logger.warning("the metrics endpoint could not read the outbox: %s", exc)
        abort(503, scrub(str(exc), state))
    response = Response(body, content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def register(blueprint: Blueprint) -> None:
    """Add ``GET /metrics`` (endpoint ``dedupkit.metrics``) to dedupkit's blueprint."""
    blueprint.add_url_rule("/metrics", "metrics", metrics)
