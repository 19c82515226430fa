"""What the server recovered: the figures at the top of the ledger, and where the tag is lost.

Over the last day and the last week: how many conversions Pinterest counted once (delivered,
not in test mode), how many of them only the server sent (*server only*: the tag was blocked,
absent or silent), what share of checkouts and how much of their revenue that is, the shares
paired / server only / tag only, and the events the server skipped (bots, no consent, ...).
The server-only share is also broken down by the visitor's browser family, operating system and
device type, from the label :mod:`dedupkit.delivery.browsers` stored at the ack.

Figures come from the entries :func:`dedupkit.ledger.coverage.summarize` already judged and the
remembered skips: bounded reads, no payload decoded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..delivery.browsers import device_of
from ..outbox.base import LedgerEntry, Skip
from ..vocabulary import EventState, SkipReason
from .verdicts import Verdict

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
CHECKOUT = "checkout"
#: Skip reasons that are no shopper's conversion: left out of the *tag only* share.
NOT_SHOPPERS = frozenset({SkipReason.BOT.value})
#: Rows per breakdown (browser, OS, device type); the rest are summed as "others".
BREAKDOWN_ROWS = 6
#: The breakdowns, and how the page names them.
DIMENSIONS = {"browser": "browser", "os": "operating system", "type": "device type"}
#: Currency signs written before the amount; other currencies follow it as their code.
_SIGNS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$"}


def recovered(
    judged: Sequence[tuple[LedgerEntry, Verdict]],
    skips: Sequence[Skip],
    *,
    now: float,
    since: float,
    window: str,
) -> dict[str, Any]:
    """The value figures of one window: the entries and skips at or after ``since``."""
    inside = [(e, v) for e, v in judged if stored_at(e) >= since]
    verdicts = Counter(v for _, v in inside)
    paired, server_only = verdicts[Verdict.PAIRED], verdicts[Verdict.SERVER_ONLY]
    skipped = Counter(s.reason for s in skips if s.at >= since)
    tag_only = sum(n for reason, n in skipped.items() if reason not in NOT_SHOPPERS)
    checkouts = [(e, v) for e, v in inside if e.event_name == CHECKOUT]
    counted_checkouts = [e for e, v in checkouts if v in (Verdict.PAIRED, Verdict.SERVER_ONLY)]
    recovered_checkouts = [e for e, v in checkouts if v is Verdict.SERVER_ONLY]
    shared = paired + server_only + tag_only
    figures: dict[str, Any] = {
        "window": window,
        "since": since,
        "counted": paired + server_only,
        "paired": paired,
        "server_only": server_only,
        "tag_only": tag_only,
        "shares": {
            "paired": _share(paired, shared),
            "server_only": _share(server_only, shared),
            "tag_only": _share(tag_only, shared),
        },
        "checkouts": len(counted_checkouts),
        "recovered_checkouts": len(recovered_checkouts),
        "recovered_checkout_share": _share(len(recovered_checkouts), len(counted_checkouts)),
        "revenue": _revenue(counted_checkouts),
        "recovered_revenue": _revenue(recovered_checkouts),
        "test": verdicts[Verdict.TEST],
        "test_server_only": sum(1 for e, v in inside if v is Verdict.TEST and e.tag is not True),
        "pending": verdicts[Verdict.PENDING],
        "failed": verdicts[Verdict.FAILED],
        "skipped": dict(sorted(skipped.items())),
    }
    figures["sentence"] = sentence(figures)
    return figures


def sentence(figures: Mapping[str, Any]) -> str:
    """The headline of one window, e.g. "Last day: Pinterest counted 12 conversions once;
    the server recovered 4 that the tag lost (33% of checkouts, $120.00 of revenue)."."""
    when = "Last day" if figures["window"] == "day" else "Last week"
    counted, recovered_count = figures["counted"], figures["server_only"]
    if not counted:
        if figures["test"]:
            return (
                f"{when}: {_n(figures['test'], 'event')} sent in test mode, which Pinterest "
                f"checks and does not count; the tag missed {figures['test_server_only']} "
                "of them."
            )
        return f"{when}: Pinterest has counted no conversion from this shop yet."
    text = f"{when}: Pinterest counted {_n(counted, 'conversion')} once; "
    if not recovered_count:
        return text + "the tag fired for every one of them, so the server recovered none."
    money = money_text(figures["recovered_revenue"])
    detail = [f"{percent(figures['recovered_checkout_share'])} of checkouts"]
    if money:
        detail.append(f"{money} of revenue")
    return text + (
        f"the server recovered {recovered_count} that the tag lost ({', '.join(detail)})."
    )


def breakdown(judged: Iterable[tuple[LedgerEntry, Verdict]]) -> dict[str, list[dict[str, Any]]]:
    """Server-only share of delivered events by browser, OS and device type, most server-only
    first; test deliveries count too (where the tag is lost does not depend on the mode)."""
    totals: dict[str, Counter[str]] = {name: Counter() for name in DIMENSIONS}
    lost: dict[str, Counter[str]] = {name: Counter() for name in DIMENSIONS}
    for entry, verdict in judged:
        if entry.state is not EventState.DELIVERED:
            continue
        missed = verdict is Verdict.SERVER_ONLY or (
            verdict is Verdict.TEST and entry.tag is not True
        )
        device = device_of(entry.device)._asdict()
        for name in DIMENSIONS:
            totals[name][device[name]] += 1
            if missed:
                lost[name][device[name]] += 1
    return {name: _rows(totals[name], lost[name]) for name in DIMENSIONS}


def _rows(totals: Counter[str], lost: Counter[str]) -> list[dict[str, Any]]:
    ranked = sorted(totals, key=lambda k: (-lost[k], -totals[k], k))
    rows = [_row(k, totals[k], lost[k]) for k in ranked[:BREAKDOWN_ROWS]]
    rest = ranked[BREAKDOWN_ROWS:]
    if rest:
        rows.append(_row("others", sum(totals[k] for k in rest), sum(lost[k] for k in rest)))
    return rows


def _row(name: str, events: int, lost: int) -> dict[str, Any]:
    return {"name": name, "events": events, "server_only": lost, "share": _share(lost, events)}


def skipped_sentence(skipped: Mapping[str, int]) -> str | None:
    """Why events were not sent, e.g. "3 events skipped: bot (2), no consent (1)."."""
    total = sum(skipped.values())
    if not total:
        return None
    parts = [
        f"{SkipReason.label_of(reason)} ({count})"
        for reason, count in sorted(skipped.items(), key=lambda kv: -kv[1])
    ]
    return f"{_n(total, 'event')} skipped: {', '.join(parts)}."


def money_text(amounts: Mapping[str, float]) -> str:
    """``$120.00``, ``€9.50 + 12.00 SEK``: currencies are never added together."""
    parts = []
    for currency, total in sorted(amounts.items()):
        sign = _SIGNS.get(currency)
        parts.append(f"{sign}{total:,.2f}" if sign else f"{total:,.2f} {currency}")
    return " + ".join(parts)


def percent(share: float | None) -> str:
    return "\N{EN DASH}" if share is None else f"{share * 100:.0f}%"


def _revenue(entries: Iterable[LedgerEntry]) -> dict[str, float]:
    totals: defaultdict[str, float] = defaultdict(float)
    for entry in entries:
        if entry.value:
            totals[entry.currency or "?"] += entry.value
    return {currency: round(total, 2) for currency, total in sorted(totals.items())}


def _share(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 4)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def stored_at(entry: LedgerEntry) -> float:
    """When the entry entered the outbox: what the windows are cut by."""
    return entry.created_at if entry.created_at is not None else entry.updated_at
