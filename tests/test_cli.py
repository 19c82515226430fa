"""`flask dedupkit …`: health for monitoring, dead letters, replay, resume, send-test, worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dedupkit.outbox import Outbox, open_outbox
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


def invoke(app: Flask, *args: str, **kwargs: Any) -> Any:
    return app.test_cli_runner().invoke(args=["dedupkit", *args], **kwargs)


def kill(outbox: Outbox, *event_ids: str, reason: str, now: float | None = None) -> None:
    for event_id in event_ids:
        outbox.put(payload(event_id))
    claimed = outbox.claim(len(event_ids))
    outbox.dead([c.id for c in claimed], reason=reason, now=now)


def flask_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEDUPKIT_")}
    return {**base, "PYTHONPATH": str(ROOT), **env}


# -- status -------------------------------------------------------------------------------


def test_status_shows_counts_and_exits_0_when_healthy(app: Flask) -> None:
    outbox = get_state(app).outbox
    for i in range(2):
        outbox.put(payload(f"c-{i}"))
    outbox.record_skip("bot")
    result = invoke(app, "status")
    assert result.exit_code == 0, result.output
    lines = {line.split("  ")[0].strip(): line for line in result.output.splitlines()}
    assert lines["pending"].split()[-1] == "2"
    assert lines["mode"].split()[-1] == "live"
    assert "skipped (bot)  1" in result.output
    assert lines["health"].split()[-1] == "ok"


def test_status_exits_1_for_a_recent_dead_letter_and_says_where_to_look(app: Flask) -> None:
    kill(get_state(app).outbox, "d-1", reason="Invalid currency")
    result = invoke(app, "status")
    assert result.exit_code == 1
    assert "health      UNHEALTHY" in result.output
    assert (
        "1 dead letter(s) in the last 24 h: see `flask dedupkit dead --since 1d`" in result.output
    )


def test_status_json_reports_a_credentials_pause_with_the_fix(app: Flask) -> None:
    outbox = get_state(app).outbox
    outbox.set_pause_until(
        time.time() + 600, reason="Pinterest refused the conversion token", kind="credentials"
    )
    result = invoke(app, "status", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["healthy"] is False
    assert report["pause"]["kind"] == "credentials"
    [problem] = report["problems"]
    assert "DEDUPKIT_CONVERSION_TOKEN" in problem and "flask dedupkit resume" in problem
    assert report["test_mode"] is False


def test_status_exits_1_when_the_backlog_is_older_than_the_retry_window(app: Flask) -> None:
    get_state(app).outbox.put(payload("old"), now=time.time() - 3700)
    result = invoke(app, "status", "--json")
    assert result.exit_code == 1
    [problem] = json.loads(result.output)["problems"]
    assert "longer than DEDUPKIT_RETRY_WINDOW (3600 s)" in problem
    assert "flask dedupkit worker" in problem


def test_status_shows_test_mode(make_app: AppFactory) -> None:
    result = invoke(make_app(TEST_MODE=True), "status")
    assert "mode        test mode: Pinterest validates, records nothing" in result.output


def test_an_outbox_error_is_one_line_naming_the_setting(
    make_app: AppFactory, tmp_path: Path
) -> None:
    (tmp_path / "a-directory").mkdir()
    app = make_app(QUEUE_URL=f"sqlite:///{tmp_path}/a-directory")
    result = invoke(app, "status")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: could not")
    assert line.endswith("check DEDUPKIT_QUEUE_URL")


def test_a_configuration_error_while_loading_the_app_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.support.env_app", "dedupkit", "status"],
        env=flask_env(DEDUPKIT_AD_ACCOUNT_ID="act_549764982399", APP_INSTANCE_PATH=str(tmp_path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: DEDUPKIT_AD_ACCOUNT_ID must be the numeric ad account id")


# -- dead ---------------------------------------------------------------------------------


def test_dead_says_how_many_it_shows_out_of_how_many(app: Flask) -> None:
    kill(get_state(app).outbox, "d-0", "d-1", "d-2", reason="Invalid currency")
    listing = invoke(app, "dead", "--limit", "2")
    assert listing.exit_code == 0, listing.output
    header, *rows = listing.output.splitlines()
    assert header == "showing 2 of 3 dead letters; --limit 3 shows them all"
    assert len(rows) == 2 and all("Invalid currency" in row for row in rows)


def test_dead_filters_by_reason_and_since(app: Flask) -> None:
    outbox = get_state(app).outbox
    kill(outbox, "old", reason="Invalid currency", now=time.time() - 3 * 3600)
    kill(outbox, "new", reason="Invalid currency")
    kill(outbox, "late", reason="expired")
    since = invoke(app, "dead", "--since", "2h")
    assert since.output.startswith("showing 2 of 2 dead letters with since ")
    assert "old" not in since.output.split()
    by_reason = invoke(app, "dead", "--reason", "expired")
    assert by_reason.output.splitlines()[0] == "showing 1 of 1 dead letters with reason 'expired'"
    iso = invoke(
        app, "dead", "--since", time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    )
    assert iso.output.startswith("no dead letters with since ")
    bad = invoke(app, "dead", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "neither a duration (30m, 2h, 1d, 1w) nor an ISO date" in bad.output


def test_dead_replay_asks_first_unless_yes(app: Flask) -> None:
    outbox = get_state(app).outbox
    kill(outbox, "r-0", "r-1", reason="Invalid currency")
    declined = invoke(app, "dead", "--replay", input="n\n")
    assert declined.exit_code == 1
    assert "Queue 2 dead letter(s) again? [y/N]" in declined.output
    assert outbox.stats().dead == 2
    accepted = invoke(app, "dead", "--replay", input="y\n")
    assert "2 dead letters queued again" in accepted.output
    kill(outbox, "r-2", reason="Invalid currency")
    unasked = invoke(app, "dead", "--replay", "--yes")
    assert "?" not in unasked.output
    assert (outbox.stats().dead, outbox.stats().pending) == (0, 3)


def test_replay_leaves_expired_events_alone_unless_as_offline(app: Flask) -> None:
    outbox = get_state(app).outbox
    kill(outbox, "refused", reason="Invalid currency")
    kill(outbox, "late", reason="expired")
    plain = invoke(app, "dead", "--replay", "--yes")
    assert "1 expired dead letter(s) left alone: sent again they would only expire" in plain.output
    assert "--as-offline" in plain.output
    assert [c.payload["event_id"] for c in outbox.claim(10)] == ["refused"]

    offline = invoke(app, "dead", "--replay", "--as-offline", "--yes")
    assert offline.exit_code == 0, offline.output
    assert "those whose Pinterest tag fired will count twice" in offline.output
    assert "1 dead letters queued again as offline events" in offline.output
    [entry] = outbox.claim(10)
    assert (entry.payload["event_id"], entry.payload["action_source"]) == ("late", "offline")


# -- resume, send-test --------------------------------------------------------------------


def test_resume_clears_a_delivery_pause(app: Flask) -> None:
    outbox = get_state(app).outbox
    outbox.set_pause_until(time.time() + 600, reason="token refused", kind="credentials")
    result = invoke(app, "resume")
    assert result.exit_code == 0
    assert "delivery resumed; it was paused (credentials): token refused" in result.output
    assert "running senders see it within a second" in result.output
    assert outbox.pause() is None
    assert invoke(app, "resume").output.strip() == "delivery is not paused"


def test_send_test_uses_test_mode_and_records_nothing(app: Flask, fake: FakePinterest) -> None:
    result = invoke(app, "send-test")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:") and "test mode" in result.output
    assert len(fake.test_events) == 1
    assert fake.capi_events == []


@pytest.mark.parametrize(
    ("setting", "fix"),
    [
        ("CONVERSION_TOKEN", "fix DEDUPKIT_CONVERSION_TOKEN"),
        ("AD_ACCOUNT_ID", "fix DEDUPKIT_AD_ACCOUNT_ID"),
        ("API_BASE_URL", "fix DEDUPKIT_API_BASE_URL (http://127.0.0.1:9/v5)"),
    ],
)
def test_send_test_names_the_setting_to_fix(
    make_app: AppFactory, setting: str, fix: str, tmp_path: Path
) -> None:
    with FakePinterest(ad_account_ids=["549764982399"]) as fake:
        right = {
            "API_BASE_URL": fake.api_base_url,
            "AD_ACCOUNT_ID": fake.ad_account_id,
            "CONVERSION_TOKEN": fake.token,
        }
        wrong = {
            "CONVERSION_TOKEN": "pina_wrong_secret",
            "AD_ACCOUNT_ID": "1234",
            "API_BASE_URL": "http://127.0.0.1:9/v5",  # nothing listens on the discard port
        }
        result = invoke(make_app(**{**right, setting: wrong[setting]}), "send-test")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: Pinterest did not accept the test event (")
    assert fix in line
    assert "pina_wrong_secret" not in line


def test_send_test_without_credentials_names_them(tmp_path: Path) -> None:
    app = Flask("shop", instance_path=str(tmp_path))
    from dedupkit import DedupKit

    DedupKit(app, queue_url=f"sqlite:///{tmp_path}/o.sqlite3")
    result = invoke(app, "send-test")
    assert result.exit_code == 1
    assert "DEDUPKIT_AD_ACCOUNT_ID and DEDUPKIT_CONVERSION_TOKEN" in result.output


# -- worker -------------------------------------------------------------------------------


def run_worker(fake: FakePinterest, tmp_path: Path, *flags: str, expect: int) -> str:
    """A worker process delivering a prepared outbox until ``expect`` events reached the
    fake; returns its stderr after SIGTERM."""
    queue_url = f"sqlite:///{tmp_path}/worker.sqlite3"
    outbox = open_outbox(queue_url)
    for i in range(5):
        outbox.put(payload(f"w-{i}"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "tests.support.env_app", "dedupkit", "worker",
         *flags],
        env=flask_env(
            DEDUPKIT_AD_ACCOUNT_ID=fake.ad_account_id,
            DEDUPKIT_CONVERSION_TOKEN=fake.token,
            DEDUPKIT_API_BASE_URL=fake.api_base_url,
            DEDUPKIT_TAG_ID="2612345678901",
            DEDUPKIT_QUEUE_URL=queue_url,
            DEDUPKIT_FLUSH_INTERVAL="0.05",
            APP_INSTANCE_PATH=str(tmp_path),
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert fake.wait_for_requests(expect, timeout=20)
        assert fake.wait_for(lambda: outbox.stats().pending == 0, timeout=20)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    assert fake.token not in stderr
    return stderr


def test_worker_prints_a_line_per_batch_and_a_summary(fake: FakePinterest, tmp_path: Path) -> None:
    fake.poison("w-3")
    stderr = run_worker(fake, tmp_path, expect=1)
    lines = stderr.splitlines()
    assert "dedupkit worker: delivering from sqlite:///" in lines[0]
    [batch] = [line for line in lines if "INFO in dedupkit.sender: batch of" in line]
    assert "batch of 5: sent 4, retried 0, dead 1 (1: HTTP 400" in batch
    assert "The request was invalid." in batch  # Pinterest's reason, in its words
    assert lines[-1].startswith("dedupkit worker: stopped after ")
    assert lines[-1].endswith("The request was invalid.: 1), paused 0")
    assert "sent 4, retried 0, dead 1 (HTTP 400" in lines[-1]
    assert sorted(e["event_id"] for e in fake.capi_events) == ["w-0", "w-1", "w-2", "w-4"]


def test_worker_quiet_prints_only_the_summary(fake: FakePinterest, tmp_path: Path) -> None:
    stderr = run_worker(fake, tmp_path, "-q", expect=1)
    assert "batch of" not in stderr
    assert stderr.splitlines()[-1].endswith("sent 5, retried 0, dead 0, paused 0")
