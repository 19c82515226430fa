"""Configuration mistakes a new user makes, each caught at init_app naming the fix."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dedupkit import ConfigurationError, DedupKit
from dedupkit.settings import load
from dedupkit.state import get_state

ROOT = Path(__file__).resolve().parent.parent
GOOD = {
    "DEDUPKIT_AD_ACCOUNT_ID": "549764982399",
    "DEDUPKIT_CONVERSION_TOKEN": "pina_AbCdEf0123456789",
    "DEDUPKIT_TAG_ID": "2612345678901",
}


def problem(**config: Any) -> str:
    """The message of the ConfigurationError that ``config`` (on top of GOOD) raises."""
    with pytest.raises(ConfigurationError) as caught:
        load({**GOOD, **{f"DEDUPKIT_{k}": v for k, v in config.items()}}, environ={})
    return str(caught.value)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("typo", "fix"),
    [("TESTMODE", "TEST_MODE"), ("REQUIRE_CONCENT", "REQUIRE_CONSENT"), ("TAGID", "TAG_ID")],
)
def test_a_misspelt_key_is_an_error_naming_the_closest_key(typo: str, fix: str) -> None:
    message = problem(**{typo: "1"})
    assert f"unknown setting DEDUPKIT_{typo}; did you mean DEDUPKIT_{fix}?" in message


def test_a_misspelt_environment_variable_is_a_warning_naming_the_closest_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load(GOOD, environ={"DEDUPKIT_TESTMODE": "1", "DEDUPKIT_TEST_MODE": "1"})
    [warning] = warnings_of(caplog)
    assert "DEDUPKIT_TESTMODE is no dedupkit setting" in warning
    assert "did you mean DEDUPKIT_TEST_MODE?" in warning


@pytest.mark.parametrize(
    "token", ["pina_…", "pina_YOUR_TOKEN", "<your token>", "${PINTEREST_TOKEN}", "changeme"]
)
def test_a_placeholder_token_is_an_error_saying_where_the_real_one_is(token: str) -> None:
    message = problem(CONVERSION_TOKEN=token)
    assert "DEDUPKIT_CONVERSION_TOKEN is a placeholder" in message
    assert "Ads Manager" in message


@pytest.mark.parametrize("token", ["pina_abc\u2026def0", "pina_abc def0123", "pina_abc\u00a0def"])
def test_a_token_with_a_non_ascii_or_space_character_is_an_error(token: str) -> None:
    message = problem(CONVERSION_TOKEN=token)
    assert "DEDUPKIT_CONVERSION_TOKEN" in message
    assert token not in message  # never echoed: it may be most of a real secret
    assert "printable ASCII" in message or "placeholder" in message


@pytest.mark.parametrize(("key", "value"), [("AD_ACCOUNT_ID", "act_5497"), ("TAG_ID", "26-12")])
def test_an_id_that_is_not_digits_only_is_an_error(key: str, value: str) -> None:
    message = problem(**{key: value})
    assert f"DEDUPKIT_{key} must be the numeric" in message
    assert "digits only" in message


def test_a_redis_queue_without_the_extra_fails_at_init_app_not_at_track(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    app = Flask("shop", instance_path=str(tmp_path))
    app.config.update(GOOD, DEDUPKIT_QUEUE_URL="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError) as caught:
        DedupKit(app)
    assert "pip install 'flask-dedupkit[redis]'" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("mysql://db/x", "unknown scheme 'mysql'"),
        ("outbox.sqlite3", "no scheme"),
        ("sqlite://host/outbox.sqlite3", "sqlite:////absolute/path"),
    ],
)
def test_a_queue_url_dedupkit_cannot_open_is_an_error_showing_the_right_form(
    url: str, fix: str
) -> None:
    message = problem(QUEUE_URL=url)
    assert fix in message
    assert "sqlite:///" in message


def test_a_missing_tag_id_warns_once_that_the_tag_channel_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load({k: v for k, v in GOOD.items() if k != "DEDUPKIT_TAG_ID"}, environ={})
    [warning] = warnings_of(caplog)
    assert "DEDUPKIT_TAG_ID is not set" in warning
    assert "no Pinterest base code" in warning


def test_missing_credentials_warn_once_and_send_nothing(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = Flask("shop", instance_path=str(tmp_path))
    app.config["DEDUPKIT_QUEUE_URL"] = f"sqlite:///{tmp_path}/outbox.sqlite3"
    kit = DedupKit(app)
    [warning] = warnings_of(caplog)
    assert "DEDUPKIT_AD_ACCOUNT_ID and DEDUPKIT_CONVERSION_TOKEN" in warning
    assert "DEDUPKIT_ENABLED = False" in warning
    with app.app_context():
        kit.track("checkout", order_id="A-1", value=10, currency="USD")
        assert not get_state(app).enabled
        assert get_state(app).outbox.stats().pending == 0


def test_missing_credentials_with_enabled_on_are_a_start_up_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load({"DEDUPKIT_ENABLED": True, "DEDUPKIT_TAG_ID": "1"}, environ={})
    message = str(caught.value)
    assert "DEDUPKIT_AD_ACCOUNT_ID and DEDUPKIT_CONVERSION_TOKEN must be set" in message
    assert "DEDUPKIT_ENABLED = False" in message


def test_app_config_beats_the_environment_and_says_so_when_they_differ(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"DEDUPKIT_CONVERSION_TOKEN": "pina_FromTheEnvironment0", "DEDUPKIT_TEST_MODE": "1"}
    settings = load({**GOOD, "DEDUPKIT_TEST_MODE": True}, environ=environ)
    assert settings.conversion_token == GOOD["DEDUPKIT_CONVERSION_TOKEN"]
    [warning] = warnings_of(caplog)  # TEST_MODE: the same value spelt differently
    assert "DEDUPKIT_CONVERSION_TOKEN is set in both app.config and the environment" in warning
    assert "app.config wins" in warning
    assert "pina_" not in warning
    # ... and a keyword of DedupKit(...) beats both; the environment fills what is unset.
    settings = load({"DEDUPKIT_AD_ACCOUNT_ID": "1"}, environ=environ, overrides={"tag_id": "7"})
    assert (settings.tag_id, settings.conversion_token) == ("7", "pina_FromTheEnvironment0")


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"MAX_RETRY_AFTER": "0"}, "positive"),
        ({"MAX_RETRY_AFTER": "86400"}, "DEDUPKIT_MAX_RETRY_AFTER must be between 1 and 3600"),
        (
            {"MAX_RETRY_AFTER": "900", "RETRY_WINDOW": "600"},
            "DEDUPKIT_MAX_RETRY_AFTER must be between 1 and 600",
        ),
        ({"HTTP_TIMEOUT": "60"}, "DEDUPKIT_HTTP_TIMEOUT must be at most 15 s"),
    ],
)
def test_delivery_waits_are_bounded(config: dict[str, str], words: str) -> None:
    assert words in problem(**config)


def test_the_retry_after_cap_reaches_the_sender(tmp_path: Path) -> None:
    settings = load({**GOOD, "DEDUPKIT_MAX_RETRY_AFTER": "120"}, environ={})
    assert settings.max_retry_after == 120.0
    assert load(GOOD, environ={}).max_retry_after == 300.0
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(GOOD, DEDUPKIT_MAX_RETRY_AFTER=120, DEDUPKIT_BACKGROUND_SENDER=False)
    DedupKit(app)
    sender = get_state(app).make_sender()
    assert sender.gate.max_retry_after == 120.0
    sender.client.close()  # type: ignore[attr-defined]


def test_flask_routes_runs_without_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEDUPKIT_")}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.support.env_app", "routes"],
        env={
            **env,
            "PYTHONPATH": str(ROOT),
            "DEDUPKIT_QUEUE_URL": f"sqlite:///{tmp_path}/outbox.sqlite3",
            "APP_INSTANCE_PATH": str(tmp_path),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "/dedupkit/events" in result.stdout
    [warning] = [line for line in result.stderr.splitlines() if "dedupkit" in line]
    assert (
        "dedupkit sends nothing: DEDUPKIT_AD_ACCOUNT_ID and DEDUPKIT_CONVERSION_TOKEN are not set"
        in warning
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        ({"DEDUPKIT_AD_ACCOUNT_ID": "549764982399"}, "DEDUPKIT_CONVERSION_TOKEN is not set"),
        ({"DEDUPKIT_CONVERSION_TOKEN": "pina_real_token_1"}, "DEDUPKIT_AD_ACCOUNT_ID is not set"),
    ],
)
def test_the_no_credentials_warning_names_the_setting_that_is_missing(
    caplog: pytest.LogCaptureFixture, config: dict[str, str], missing: str
) -> None:
    load({"DEDUPKIT_TAG_ID": "1", **config}, environ={})
    [warning] = [w for w in warnings_of(caplog) if "sends nothing" in w]
    assert f"dedupkit sends nothing: {missing}" in warning


@pytest.mark.parametrize("metrics", [True, "1", lambda request: True])
def test_metrics_without_prometheus_client_are_a_start_up_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, metrics: Any
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError) as caught:
        load({"DEDUPKIT_METRICS": metrics}, environ={})
    assert "pip install 'flask-dedupkit[metrics]'" in str(caught.value)
    load({"DEDUPKIT_METRICS": False}, environ={})  # off: nothing to import
