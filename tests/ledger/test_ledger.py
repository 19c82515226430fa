"""Verdicts, tag evidence, coverage and the chart behind the dedup ledger, and the page they
make (``{prefix}/debug``)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask

from dedupkit.errors import InvalidEvent
from dedupkit.intake.evidence import record_evidence
from dedupkit.ledger.chart import verdict_chart
from dedupkit.ledger.coverage import summarize
from dedupkit.ledger.verdicts import Verdict, advice_for, judge, judge_skip
from dedupkit.outbox import SQLiteOutbox
from dedupkit.outbox.base import LedgerEntry, Skip
from dedupkit.state import get_state
from dedupkit.vocabulary import EventState, SkipReason

from ..conftest import AppFactory
from ..support.payloads import capi_event

NOW = 1_750_000_000.0


def entry(**kw: Any) -> LedgerEntry:
    fields: dict[str, Any] = {
        "event_name": "checkout",
        "event_id": "o-1",
        "state": EventState.DELIVERED,
        "attempts": 1,
        "event_time": NOW - 60,
        "updated_at": NOW - 50,
        "last_error": None,
        "has_click_id": False,
        "created_at": NOW - 60,
    }
    fields.update(kw)
    return LedgerEntry(**fields)


# -- verdicts ------------------------------------------------------------------------------


def test_a_delivered_event_is_paired_only_with_evidence_that_the_tag_fired() -> None:
    assert judge(entry(tag=True), now=NOW).verdict is Verdict.PAIRED
    blocked = judge(entry(tag=False), now=NOW)
    assert (blocked.verdict, blocked.detail) == (Verdict.SERVER_ONLY, blocked.detail)
    assert "blocked" in blocked.detail
    unknown = judge(entry(tag=None), now=NOW)
    assert unknown.verdict is Verdict.SERVER_ONLY and "no tag evidence" in unknown.detail


def test_test_mode_is_read_per_entry_and_the_setting_only_stands_in() -> None:
    assert judge(entry(test=True, tag=True), now=NOW).verdict is Verdict.TEST
    assert judge(entry(test=False, tag=True), now=NOW, test_mode=True).verdict is Verdict.PAIRED
    assert judge(entry(test=None), now=NOW, test_mode=True).verdict is Verdict.TEST


def test_pending_says_the_time_left_before_the_dedup_deadline() -> None:
    pending = judge(entry(state=EventState.PENDING, event_time=NOW - 600), now=NOW)
    assert pending.verdict is Verdict.PENDING
    assert pending.time_left == 3000
    assert "50 min left" in pending.detail
    late = judge(entry(state=EventState.SENDING, event_time=NOW - 4000), now=NOW)
    assert late.time_left is not None and late.time_left < 0
    assert "past the one-hour dedup deadline" in late.detail


def test_failed_carries_pinterests_message_and_what_to_do() -> None:
    message = "Pinterest refused the conversion token: check DEDUPKIT_CONVERSION_TOKEN"
    failed = judge(entry(state=EventState.DEAD, last_error=message), now=NOW)
    assert (failed.verdict, failed.detail) == (Verdict.FAILED, message)
    assert failed.advice is not None and "renew it in Ads Manager" in failed.advice
    assert "--as-offline" in advice_for("expired")
    assert "DEDUPKIT_AD_ACCOUNT_ID" in advice_for("Pinterest does not know ad account 1")
    assert "replay" in advice_for("something new")


def test_a_skipped_event_is_tag_only_with_its_reason() -> None:
    judged = judge_skip(Skip(NOW, "no_consent", "checkout", "o-1"))
    assert judged.verdict is Verdict.TAG_ONLY and "no consent" in judged.detail
    assert SkipReason.BOT.label in judge_skip(Skip(NOW, "bot", None, None)).detail


# -- evidence ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"evidence": 1, "event_name": "checkout", "event_id": "o-1", "tag": 2},
        {"evidence": 1, "event_name": "checkout", "event_id": "o-1"},
        {"evidence": 1, "event_name": "checkout", "event_id": "o-1", "tag": 1.0},
        {"evidence": 1, "event_name": "checkout", "event_id": "", "tag": 1},
        {"evidence": 1, "event_name": "checkout", "event_id": "x" * 257, "tag": 1},
        {"evidence": 1, "event_name": "checkout", "event_id": "a\nb", "tag": 1},
        {"evidence": 1, "event_name": ["checkout"], "event_id": "o-1", "tag": 1},
        {"evidence": 1, "event_name": "no_such_event", "event_id": "o-1", "tag": 1},
        {"evidence": 1, "event_name": "checkout", "event_id": "o-1", "tag": 1, "em": "x"},
        {"evidence": 2, "event_name": "checkout", "event_id": "o-1", "tag": 1},
    ],
)
def test_junk_evidence_is_refused_and_nothing_stored(app: Flask, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent):
        record_evidence(get_state(app), body)
    get_state(app).outbox.put(capi_event("o-1"))
    assert [e.tag for e in get_state(app).outbox.recent()] == [None]


def test_evidence_is_stored_under_the_capi_name_before_the_entry_exists(app: Flask) -> None:
    state = get_state(app)
    record_evidence(state, {"evidence": 1, "event_name": "AddToCart", "event_id": "c1", "tag": 1})
    for event_id, name in (("c1", "add_to_cart"), ("p2", "page_visit")):
        state.outbox.put(capi_event(event_id, name=name))
    state.outbox.put(capi_event("p1", name="page_visit"), tag=False)
    assert {e.event_id: e.tag for e in state.outbox.recent()} == {
        "c1": True,
        "p1": False,
        "p2": None,
    }


# -- coverage ------------------------------------------------------------------------------

EM, IP_UA, CLICK = ("em",), ("client_ip_address", "client_user_agent"), ("click_id",)


def test_coverage_shares_revenue_lag_and_headline() -> None:
    entries = [
        entry(event_id="c1", user_fields=EM + IP_UA + CLICK, value=20.0, currency="USD"),
        entry(event_id="c2", user_fields=EM + IP_UA, value=5.5, currency="USD"),
        entry(event_id="c3", user_fields=IP_UA, value=7.0, currency="EUR", updated_at=NOW),
        entry(event_id="t1", user_fields=CLICK, value=99.0, currency="USD", test=True),
        entry(
            event_id="d1",
            state=EventState.DEAD,
            last_error="Pinterest refused the conversion token: check DEDUPKIT_CONVERSION_TOKEN",
        ),
        entry(
            event_name="page_visit",
            event_id="v1",
            user_fields=IP_UA,
            created_at=NOW - 7200,
            event_time=NOW - 7200,
            updated_at=NOW - 7190,
        ),
    ]
    summary = summarize(entries, now=NOW)
    day, hour = summary["windows"]["day"], summary["windows"]["hour"]
    assert (day["events"], hour["events"]) == (6, 5)
    checkout = hour["by_event"]["checkout"]
    assert checkout["events"] == 5
    assert (checkout["click_id"], checkout["email"], checkout["ip_ua"]) == (0.4, 0.4, 0.6)
    assert checkout["external_id"] == 0
    # Test events are not revenue; currencies are not added together.
    assert hour["revenue"] == {"EUR": 7.0, "USD": 25.5}
    # Lags 10, 10, 10 (c1, c2, t1) and 60 (c3): nearest-rank p50 and p95.
    assert (hour["lag_p50"], hour["lag_p95"]) == (10.0, 60.0)
    assert day["verdicts"]["failed"] == 1 and day["verdicts"]["test"] == 1
    assert summary["matching"] == (
        "40% of checkouts carry the click id; 1 conversion failed: token expired or revoked — "
        "renew it in Ads Manager and set DEDUPKIT_CONVERSION_TOKEN; 1 sent in test mode, not "
        "recorded by Pinterest."
    )
    assert sum(sum(h.values()) for h in summary["timeline"]) == 6
    assert summary["timeline"][-1] == {"server only": 3, "test": 1, "failed": 1}


def test_coverage_of_nothing_says_so() -> None:
    summary = summarize([], now=NOW)
    assert summary["matching"] == "No events in the last day."
    assert summary["headline"] == (
        "Last day: Pinterest has counted no conversion from this shop yet."
    )
    assert summary["windows"]["hour"]["lag_p50"] is None


def test_a_cut_scan_says_which_windows_it_covers_only_in_part() -> None:
    entries = [entry(event_id=f"e{n}", created_at=NOW - 100 - n) for n in range(3)]
    windows = summarize(entries, now=NOW, sampled=True)["windows"]
    assert windows["hour"]["sampled"] and windows["day"]["sampled"]
    old = [*entries, entry(event_id="old", created_at=NOW - 5000)]
    windows = summarize(old, now=NOW, sampled=True)["windows"]
    assert not windows["hour"]["sampled"] and windows["day"]["sampled"]


def test_sqlite_reads_the_last_day_through_the_created_index(tmp_path: Any) -> None:
    from dedupkit.outbox.sqlite import _SINCE

    box = SQLiteOutbox(tmp_path / "o.sqlite3")
    box.put(capi_event("x"))
    plan = box._conn().execute("EXPLAIN QUERY PLAN " + _SINCE, (0.0, 10)).fetchall()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX outbox_created" in detail
    assert "TEMP B-TREE" not in detail
    box.close()


def test_the_chart_is_inline_svg_with_escaped_labels() -> None:
    svg = str(verdict_chart([{"paired": 3, "failed": 1}, {}, {"server only": 2}]))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org", "")
    assert svg.count("<rect") == 3
    assert "<title>3 paired</title>" in svg and ">4</text>" in svg  # the tallest column


# -- the page ------------------------------------------------------------------------------


def ledger_page(app: Flask, query: str = "") -> Any:
    return app.test_client().get(f"/dedupkit/debug{query}")


def deliver_all(app: Flask, *, test: bool | None = None) -> None:
    outbox = get_state(app).outbox
    outbox.ack([c.id for c in outbox.claim(100)], test=test)


def test_the_page_shows_a_verdict_per_event_and_the_skips(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    state = get_state(app)
    now = time.time()
    for event_id in ("paired", "blocked", "waiting"):
        state.outbox.put(capi_event(event_id, event_time=now - 60))
    record_evidence(
        state, {"evidence": 1, "event_name": "checkout", "event_id": "paired", "tag": 1}
    )
    record_evidence(
        state, {"evidence": 1, "event_name": "checkout", "event_id": "blocked", "tag": 0}
    )
    claimed = [c for c in state.outbox.claim(10) if c.payload["event_id"] != "waiting"]
    state.outbox.ack([c.id for c in claimed])
    state.outbox.record_skip("bot", event_name="checkout", event_id="by-a-bot")

    data = ledger_page(app, "?format=json").get_json()
    verdicts = {e["event_id"]: (e["verdict"], e["attempts"]) for e in data["entries"]}
    assert verdicts == {
        "paired": ("paired", 1),
        "blocked": ("server only", 1),
        "waiting": ("pending", 0),
    }
    [skip] = data["skips"]
    assert (skip["event_id"], skip["verdict"]) == ("by-a-bot", "tag only")
    assert SkipReason.BOT.label in skip["detail"]
    assert data["coverage"]["windows"]["hour"]["events"] == 3
    assert data["coverage"]["matching"].startswith("0% of checkouts carry the click id")
    assert data["headline"] == (
        "Last day: Pinterest counted 2 conversions once; the server recovered 1 that the tag "
        "lost (50% of checkouts, $10.00 of revenue)."
    )

    response = ledger_page(app)
    html = response.get_data(as_text=True)
    assert 'data-event-id="paired" data-verdict="paired"' in html
    assert 'data-event-id="blocked" data-verdict="server only"' in html
    assert "<svg" in html and "<script" not in html
    assert 'href="/">' in html  # back to the site
    assert "test-mode" not in html
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_test_mode_shows_its_banner_and_the_test_verdict(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True, TEST_MODE=True)
    get_state(app).outbox.put(capi_event("t1"))
    deliver_all(app, test=True)
    html = ledger_page(app).get_data(as_text=True)
    assert 'id="test-mode"' in html and "?test=true" in html
    data = ledger_page(app, "?format=json").get_json()
    assert data["test_mode"] is True
    assert [e["verdict"] for e in data["entries"]] == ["test"]


def test_evidence_and_skips_from_the_browser_are_escaped(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    state = get_state(app)
    nasty = '"><img src=x onerror=alert(1)>'
    record_evidence(state, {"evidence": 1, "event_name": "checkout", "event_id": nasty, "tag": 1})
    state.outbox.put(capi_event(nasty))
    state.outbox.record_skip("no_consent", event_name="checkout", event_id=nasty + "2")
    html = ledger_page(app).get_data(as_text=True)
    assert "<img" not in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


# -- what the server recovered -------------------------------------------------------------


def recovery_entries() -> list[LedgerEntry]:
    iphone, chrome = "Safari · iOS · mobile", "Chrome · Windows · desktop"
    day_old = {"created_at": NOW - 3 * 86400, "event_time": NOW - 3 * 86400}
    return [
        entry(event_id="c1", tag=True, value=20.0, currency="USD", device=chrome),
        entry(event_id="c2", tag=False, value=30.0, currency="USD", device=iphone),
        entry(event_id="c3", tag=None, value=9.5, currency="EUR", device=iphone),
        entry(event_name="add_to_cart", event_id="a1", tag=True, value=5.0, device=chrome),
        entry(event_name="add_to_cart", event_id="a2", tag=False, device=iphone),
        entry(event_id="t1", tag=False, test=True, value=99.0, currency="USD", device=chrome),
        entry(event_id="p1", state=EventState.PENDING, tag=False),
        entry(event_id="d1", state=EventState.DEAD, last_error="expired"),
        # Older than a day: the week only.
        entry(event_id="w1", tag=False, value=40.0, currency="USD", device=iphone, **day_old),
        entry(event_id="w2", tag=True, value=10.0, currency="USD", device=chrome, **day_old),
    ]


def recovery_skips() -> list[Skip]:
    return [
        Skip(NOW - 10, "no_consent", "checkout", "s1"),
        Skip(NOW - 20, "bot", None, None),
        Skip(NOW - 30, "bot", None, None),
        Skip(NOW - 2 * 86400, "no_identity", "lead", "s2"),
    ]


def test_the_headline_is_what_pinterest_counted_once_and_what_the_server_recovered() -> None:
    summary = summarize(recovery_entries(), now=NOW, skips=recovery_skips())
    day, week = summary["value"]["day"], summary["value"]["week"]
    # Counted once: delivered for real (not pending, dead or test). Recovered: server only.
    assert (day["counted"], day["paired"], day["server_only"], day["tag_only"]) == (5, 2, 3, 1)
    assert (day["checkouts"], day["recovered_checkouts"]) == (3, 2)
    assert day["recovered_revenue"] == {"EUR": 9.5, "USD": 30.0}
    assert day["revenue"] == {"EUR": 9.5, "USD": 50.0}
    # Bots are no shopper's conversion: counted as skipped, not as tag only.
    assert day["skipped"] == {"bot": 2, "no_consent": 1}
    assert day["shares"] == {"paired": 0.3333, "server_only": 0.5, "tag_only": 0.1667}
    assert (day["test"], day["pending"], day["failed"]) == (1, 1, 1)
    assert (
        summary["headline"]
        == day["sentence"]
        == (
            "Last day: Pinterest counted 5 conversions once; the server recovered 3 that the tag "
            "lost (67% of checkouts, €9.50 + $30.00 of revenue)."
        )
    )
    assert (week["counted"], week["server_only"], week["tag_only"]) == (7, 4, 2)
    assert week["recovered_revenue"] == {"EUR": 9.5, "USD": 70.0}
    assert week["sentence"].startswith("Last week: Pinterest counted 7 conversions once; the")
    # The chart's last hour shows the consent skip as tag only, not the bots.
    assert summary["timeline"][-1]["tag only"] == 1


def test_where_the_tag_is_lost_by_browser_os_and_device_type() -> None:
    devices = summarize(recovery_entries(), now=NOW)["devices"]
    assert devices["browser"] == [
        {"name": "Safari", "events": 4, "server_only": 4, "share": 1.0},
        # The test delivery counts: where the tag is lost does not depend on the mode.
        {"name": "Chrome", "events": 4, "server_only": 1, "share": 0.25},
    ]
    assert [(r["name"], r["share"]) for r in devices["type"]] == [
        ("mobile", 1.0),
        ("desktop", 0.25),
    ]
    assert [r["name"] for r in devices["os"]] == ["iOS", "Windows"]


def test_a_tag_that_always_fired_recovered_nothing_and_says_so() -> None:
    entries = [entry(event_id="c1", tag=True, value=5.0, currency="USD")]
    assert summarize(entries, now=NOW)["headline"] == (
        "Last day: Pinterest counted 1 conversion once; the tag fired for every one of them, "
        "so the server recovered none."
    )


def test_in_test_mode_the_headline_says_nothing_was_counted() -> None:
    entries = [entry(event_id="c1", tag=False, test=True), entry(event_id="c2", tag=True)]
    assert summarize(entries, now=NOW, test_mode=True)["headline"] == (
        "Last day: 2 events sent in test mode, which Pinterest checks and does not count; the "
        "tag missed 1 of them."
    )


def test_breakdown_rows_are_bounded_with_the_rest_as_others() -> None:
    entries = [
        entry(event_id=f"e{n}", tag=False, device=f"Browser{n} · OS · desktop") for n in range(9)
    ]
    rows = summarize(entries, now=NOW)["devices"]["browser"]
    assert len(rows) == 7 and rows[-1] == {
        "name": "others",
        "events": 3,
        "server_only": 3,
        "share": 1.0,
    }
