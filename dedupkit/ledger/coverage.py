"""Coverage at a glance: what the server recovered over the last day and week
(:mod:`dedupkit.ledger.recovery`), and how well the events of the last hour and day can be matched.

Computed from :meth:`~dedupkit.outbox.base.Outbox.entries_since`, which reads at most
:data:`SCAN_LIMIT` entries through an index (SQLite) or the ``born`` set (Redis), and only
their stored summaries, never a payload: the cost is bounded whatever the traffic. Past the
limit the figures are those of the newest entries, and say so (``sampled``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..outbox.base import LedgerEntry, Skip
from ..vocabulary import EventState
from .recovery import DAY, HOUR, NOT_SHOPPERS, WEEK, breakdown, recovered, stored_at
from .verdicts import DEDUP_WINDOW, Verdict, advice_for, judge

#: Entries read at most per summary.
SCAN_LIMIT = 20_000
#: The identity signals Pinterest matches on, and the ``user_data`` keys that make each.
SIGNALS: dict[str, tuple[str, ...]] = {
    "click_id": ("click_id",),
    "email": ("em",),
    "ip_ua": ("client_ip_address", "client_user_agent"),
    "external_id": ("external_id",),
}
#: How each signal is named on the page.
SIGNAL_NAMES = {
    "click_id": "click id",
    "email": "hashed e-mail",
    "ip_ua": "IP + user agent",
    "external_id": "external id",
}
CHECKOUT = "checkout"


def summarize(
    entries: Sequence[LedgerEntry],
    *,
    now: float,
    test_mode: bool = False,
    sampled: bool = False,
    skips: Sequence[Skip] = (),
) -> dict[str, Any]:
    """The coverage summary of ``entries`` (newest first, as ``entries_since`` gives them,
    reaching back a week) and of the remembered ``skips``, as JSON-ready values: what was
    recovered over the last day and week, where the tag is lost, coverage per window, the
    headline, and hourly verdicts for the chart."""
    judged = [(entry, judge(entry, now=now, test_mode=test_mode).verdict) for entry in entries]
    hour = [(e, v) for e, v in judged if stored_at(e) >= now - HOUR]
    day = [(e, v) for e, v in judged if stored_at(e) >= now - DAY]
    windows = {"hour": _window(hour, now), "day": _window(day, now)}
    # Every window is cut alike when the scan stopped at the limit.
    oldest = stored_at(entries[-1]) if entries else now
    for name, window in windows.items():
        span = HOUR if name == "hour" else DAY
        window["sampled"] = sampled and oldest > now - span
    value = {
        name: recovered(judged, skips, now=now, since=now - span, window=name)
        for name, span in (("day", DAY), ("week", WEEK))
    }
    for name, span in (("day", DAY), ("week", WEEK)):
        value[name]["sampled"] = sampled and oldest > now - span
    return {
        "value": value,
        "devices": breakdown(judged),
        "windows": windows,
        "headline": value["day"]["sentence"],
        "matching": headline(windows["day"], day),
        "timeline": timeline(judged, now, skips=skips),
        "signals": SIGNAL_NAMES,
    }


def _window(judged: Sequence[tuple[LedgerEntry, Verdict]], now: float) -> dict[str, Any]:
    by_event: dict[str, Counter[str]] = defaultdict(Counter)
    for entry, _ in judged:
        counts = by_event[entry.event_name]
        counts["events"] += 1
        present = set(entry.user_fields)
        for signal, keys in SIGNALS.items():
            if present.issuperset(keys):
                counts[signal] += 1
    revenue: defaultdict[str, float] = defaultdict(float)
    lags: list[float] = []
    for entry, verdict in judged:
        if entry.state is not EventState.DELIVERED:
            continue
        if verdict is not Verdict.TEST and entry.event_name == CHECKOUT and entry.value:
            revenue[entry.currency or "?"] += entry.value
        lags.append(max(0.0, entry.updated_at - _born(entry)))
    lags.sort()
    verdicts = Counter(verdict.value for _, verdict in judged)
    return {
        "events": len(judged),
        "verdicts": {
            v.value: verdicts.get(v.value, 0) for v in Verdict if v is not Verdict.TAG_ONLY
        },
        "by_event": {
            name: {
                "events": counts["events"],
                **{s: round(counts[s] / counts["events"], 4) for s in SIGNALS},
            }
            for name, counts in sorted(by_event.items())
        },
        "revenue": {cur: round(total, 2) for cur, total in sorted(revenue.items())},
        "lag_p50": _percentile(lags, 0.50),
        "lag_p95": _percentile(lags, 0.95),
        "late": sum(1 for lag in lags if lag > DEDUP_WINDOW),
    }


def headline(day: dict[str, Any], judged: Sequence[tuple[LedgerEntry, Verdict]]) -> str:
    """How well the last day's events can be matched, and what failed: one sentence a
    merchant can act on."""
    if not day["events"]:
        return "No events in the last day."
    by_event = day["by_event"]
    name = CHECKOUT if CHECKOUT in by_event else max(by_event, key=lambda n: by_event[n]["events"])
    noun = "checkouts" if name == CHECKOUT else f"{name.replace('_', ' ')} events"
    parts = [f"{_percent(by_event[name]['click_id'])} of {noun} carry the click id"]
    failed = Counter(e.last_error or "refused" for e, v in judged if v is Verdict.FAILED)
    if failed:
        count = sum(failed.values())
        reason, _ = failed.most_common(1)[0]
        what = "conversion" if count == 1 else "conversions"
        parts.append(f"{count} {what} failed: {advice_for(reason)}")
    else:
        parts.append("none failed")
    if day["late"]:
        parts.append(f"{day['late']} delivered after the one-hour dedup deadline")
    tested = day["verdicts"].get(Verdict.TEST.value, 0)
    if tested:
        parts.append(f"{tested} sent in test mode, not recorded by Pinterest")
    return "; ".join(parts) + "."


def timeline(
    judged: Iterable[tuple[LedgerEntry, Verdict]],
    now: float,
    hours: int = 24,
    *,
    skips: Iterable[Skip] = (),
) -> list[dict[str, int]]:
    """Verdict counts per hour over the last ``hours``, oldest first, for the chart; the
    shoppers' events the server skipped are *tag only*."""
    buckets: list[Counter[str]] = [Counter() for _ in range(hours)]

    def add(at: float, verdict: Verdict) -> None:
        age = now - at
        if 0 <= age < hours * HOUR:
            buckets[hours - 1 - int(age // HOUR)][verdict.value] += 1

    for entry, verdict in judged:
        add(stored_at(entry), verdict)
    for skip in skips:
        if skip.reason not in NOT_SHOPPERS:
            add(skip.at, Verdict.TAG_ONLY)
    return [dict(bucket) for bucket in buckets]


def _born(entry: LedgerEntry) -> float:
    """When the event happened: what its lag and deadline count from."""
    if entry.event_time is not None:
        return entry.event_time
    return entry.created_at if entry.created_at is not None else entry.updated_at


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile, ``None`` of nothing."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


def _percent(share: float) -> str:
    return f"{share * 100:.0f}%"


#: Checkouts a day must hold before their missing tag evidence is worth a question.
MISSING_TAG_MIN_CHECKOUTS = 3
MISSING_TAG_HINT = "no page reported a tag: is {{ dedupkit.head() }} in your base template?"


def with_missing_tag_hint(headline: str, entries: Iterable[LedgerEntry]) -> str:
    """``headline``, asking about ``{{ dedupkit.head() }}`` when the day's checkouts reached
    the API but no event at all carries tag evidence: then no page ran the snippet.

    A blocked tag is evidence too (the snippet said so): only a silence this complete points at
    a base template without ``head()``. Webhook-tracked checkouts have none on their own, so
    the question waits for the page's other events (add to cart, page visits) to be silent too.
    """
    checkouts = 0
    for entry in entries:
        if entry.tag is not None:
            return headline
        checkouts += entry.event_name == CHECKOUT
    if checkouts < MISSING_TAG_MIN_CHECKOUTS:
        return headline
    return f"{headline.rstrip('.')}; {MISSING_TAG_HINT}"
