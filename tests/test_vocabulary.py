"""One vocabulary: every skip reason and state has one label and one metric name, and the
intake, the ledger, the CLI and the metrics all speak it."""

from __future__ import annotations

import json

from flask import Flask

from dedupkit.ledger import page as ledger
from dedupkit.ledger import verdicts
from dedupkit.outbox.base import Skip
from dedupkit.state import get_state
from dedupkit.vocabulary import EventState, SkipReason

from .conftest import AppFactory


def test_members_have_labels_and_metric_names() -> None:
    assert {r.value for r in SkipReason} >= {
        "bot",
        "no_consent",
        "gpc_opt_out",
        "no_identity",
        "lost_memory_full",
    }
    for member in [*SkipReason, *EventState]:
        assert member.label and member.metric == member.value
    assert [s.value for s in EventState] == ["pending", "sending", "delivered", "dead"]
    assert [r for r in SkipReason if r.is_loss] == [
        SkipReason.LOST_MEMORY_FULL,
        SkipReason.LOST_UNREADABLE,
    ]


def test_the_ledger_cli_and_metrics_show_every_reason_in_the_same_words(
    make_app: AppFactory,
) -> None:
    app: Flask = make_app(METRICS=True, DEBUG_UI=True)
    outbox = get_state(app).outbox
    for reason in SkipReason:
        outbox.record_skip(reason.value)
    data = ledger.ledger(get_state(app))
    assert set(data["skipped"]) == {r.value for r in SkipReason}
    assert data["skip_labels"] == {r.value: r.label for r in SkipReason}
    assert data["state_labels"] == {s.value: s.label for s in EventState}
    for reason in SkipReason:
        assert reason.label in verdicts.judge_skip(Skip(0.0, reason.value, None, None)).detail
    status = app.test_cli_runner().invoke(args=["dedupkit", "status", "--json"])
    report = json.loads(status.output)
    assert {s.value for s in EventState} <= set(report)
    text = app.test_cli_runner().invoke(args=["dedupkit", "status"]).output
    for reason in SkipReason:
        assert f"skipped ({reason.label})  1" in text
    for state in EventState:
        assert state.label in text
    scraped = app.test_client().get("/dedupkit/metrics").get_data(as_text=True)
    for reason in SkipReason:
        assert f'reason="{reason.metric}"' in scraped
    for state in EventState:
        assert f'state="{state.metric}"' in scraped
