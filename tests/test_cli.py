"""`flask dedupkit …`: status, dead letters, send-test and the worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from .conftest import AppFactory
from .support.payloads import capi_event as payload

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(make_app: AppFactory, fake: FakePinterest) -> Flask:
    return make_app(
        API_BASE_URL=fake.api_base_url,
        AD_ACCOUNT_ID=fake.ad_account_id,
        CONVERSION_TOKEN=fake.token,
    )


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["dedupkit", *args])


def test_status_shows_counts_skips_and_last_errors(app: Flask) -> None:
    outbox = get_state(app).outbox
    for i in range(3):
        outbox.put(payload(f"c-{i}"))
    [first, *_] = outbox.claim(1)
    outbox.dead([first.id], reason="Invalid event_timestamp parameter")
    outbox.record_skip("bot")
    outbox.record_skip("bot")
    result = invoke(app, "status")
    assert result.exit_code == 0, result.output
    lines = {line.split("  ")[0].strip(): line for line in result.output.splitlines()}
    assert lines["pending"].split()[-1] == "2"
    assert lines["dead"].split()[-1] == "1"
    assert "skipped (bot)  2" in result.output
    assert "oldest pending" in result.output


def test_dead_lists_ids_and_pinterest_message_then_replays(app: Flask) -> None:
    outbox = get_state(app).outbox
    for i in range(3):
        outbox.put(payload(f"d-{i}"))
    claimed = outbox.claim(10)
    outbox.dead([c.id for c in claimed], reason="Invalid currency")
    listing = invoke(app, "dead")
    assert listing.exit_code == 0
    assert {"d-0", "d-1", "d-2"} <= set(listing.output.split())
    assert listing.output.count("Invalid currency") == 3

    replay = invoke(app, "dead", "--replay")
    assert replay.exit_code == 0, replay.output
    assert "3 dead letters queued again" in replay.output
    stats = outbox.stats()
    assert (stats.dead, stats.pending) == (0, 3)
    assert invoke(app, "dead").output.strip() == "no dead letters"


def test_send_test_uses_test_mode_and_records_nothing(app: Flask, fake: FakePinterest) -> None:
    result = invoke(app, "send-test")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")
    assert len(fake.test_events) == 1
    assert fake.capi_events == []


def test_send_test_reports_bad_credentials_without_the_token(
    make_app: AppFactory, fake: FakePinterest
) -> None:
    app = make_app(
        API_BASE_URL=fake.api_base_url,
        AD_ACCOUNT_ID=fake.ad_account_id,
        CONVERSION_TOKEN="pina_wrong_secret",
    )
    result = invoke(app, "send-test")
    assert result.exit_code != 0
    assert "Authentication failed" in result.output
    assert "pina_wrong_secret" not in result.output


def test_worker_process_delivers_and_stops_on_sigterm(tmp_path: Path, fake: FakePinterest) -> None:
    queue_url = f"sqlite:///{tmp_path}/worker.sqlite3"
    env = {
        **os.environ,
        "DEDUPKIT_AD_ACCOUNT_ID": fake.ad_account_id,
        "DEDUPKIT_CONVERSION_TOKEN": fake.token,
        "DEDUPKIT_API_BASE_URL": fake.api_base_url,
        "DEDUPKIT_QUEUE_URL": queue_url,
        "DEDUPKIT_FLUSH_INTERVAL": "0.05",
        "PYTHONPATH": str(ROOT),
    }
    from dedupkit.outbox import open_outbox

    outbox = open_outbox(queue_url)
    for i in range(5):
        outbox.put(payload(f"w-{i}"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "tests.support.env_app", "dedupkit", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert fake.wait_for_capi_events(5, timeout=20)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert "stopped" in output
    assert fake.token not in output
    assert sorted(e["event_id"] for e in fake.capi_events) == [f"w-{i}" for i in range(5)]
    assert outbox.stats().delivered == 5
