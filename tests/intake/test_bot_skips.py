"""A skipped bot is never silent: a warning, the event's outcome, an escape hatch."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from flask import Flask

from dedupkit.errors import ConfigurationError
from dedupkit.event.model import Event
from dedupkit.intake.record import IntakeOutcome
from dedupkit.state import get_state
from dedupkit.vocabulary import SkipReason

from ..conftest import AppFactory, kit_for, queued, shopper_request
from ..support.agents import CHROME_UA

CURL = "curl/8.5.0"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Warnings are once per process: each test starts from none given.
    monkeypatch.setattr("dedupkit.intake.record._WARNED_FAMILIES", set())


def track_as(app: Flask, user_agent: str, order_id: str) -> Event:
    with shopper_request(app, "/", headers={"User-Agent": user_agent}):
        return kit_for(app).track("checkout", order_id=order_id, value=5, currency="USD")


def test_track_says_a_bots_event_was_skipped_and_why(app: Flask) -> None:
    event = track_as(app, CURL, "B-1")

    assert event.outcome == "skipped" and event.outcome is IntakeOutcome.SKIPPED
    assert event.skipped == "bot" and event.skipped is SkipReason.BOT
    assert f"{event.outcome}: {event.skipped}" == "skipped: bot"
    assert queued(app) == []


def test_track_says_a_shoppers_event_was_queued(app: Flask) -> None:
    event = track_as(app, CHROME_UA, "S-1")

    assert event.outcome == "queued"
    assert event.skipped is None
    again = track_as(app, CHROME_UA, "S-1")
    assert again.outcome == "duplicate"
    # Events equal but for their outcome are equal: what the tag renders does not depend on it.
    assert dataclasses.replace(event, outcome="duplicate") == event


def test_the_first_bot_skip_of_each_family_warns_once_naming_the_setting(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dedupkit"):
        track_as(app, CURL, "B-1")
        track_as(app, "curl/8.11.1", "B-2")  # same family, another version
        track_as(app, "python-requests/2.32.3", "B-3")

    warnings = [r.getMessage() for r in caplog.records if "looks like a bot" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "'curl/8.5.0'" in warnings[0] and "python-requests/2.32.3" in warnings[1]
    assert all("DEDUPKIT_BOT_FILTER" in w and "DEDUPKIT_BOT_ALLOW" in w for w in warnings)
    assert "checkout checkout-B-1" in warnings[0]


def test_bot_warnings_stop_at_a_bound_however_many_families(
    app: Flask, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dedupkit.intake.record.MAX_WARNED_FAMILIES", 3)
    with caplog.at_level(logging.WARNING, logger="dedupkit"):
        for n, name in enumerate("abcdef"):
            track_as(app, f"{name}tool-crawler/1.0", f"B-{n}")

    assert sum("looks like a bot" in r.getMessage() for r in caplog.records) == 3
    assert get_state(app).outbox.stats().skipped == {"bot": 6}


def test_a_logged_user_agent_cannot_forge_log_lines(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="dedupkit"),
        shopper_request(
            app,
            "/",
            headers={},
            environ_base={"HTTP_USER_AGENT": "curl/8\nFAKE LINE", "REMOTE_ADDR": "198.51.100.7"},
        ),
    ):
        kit_for(app).track("checkout", order_id="B-9")

    [warning] = [r.getMessage() for r in caplog.records if "looks like a bot" in r.getMessage()]
    assert "\n" not in warning


def test_bot_allow_lets_a_shopper_the_filter_takes_for_a_bot_through(
    make_app: AppFactory,
) -> None:
    app = make_app(BOT_ALLOW=["^ShopKiosk/\\d"])

    assert track_as(app, "ShopKiosk/2.1", "K-1").outcome == "queued"
    assert track_as(app, "shopkiosk/2.1 (lower case)", "K-2").outcome == "queued"
    assert track_as(app, CURL, "B-1").skipped == "bot"
    assert len(queued(app)) == 2


def test_bot_allow_from_the_environment_is_one_regex(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEDUPKIT_BOT_ALLOW", "ShopKiosk/|curl/8\\.5")
    app = make_app()

    assert track_as(app, CURL, "B-1").outcome == "queued"
    assert track_as(app, "curl/7.0", "B-2").skipped == "bot"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["ShopKiosk/(2"], "not a valid regular expression"),
        ("[unclosed", "not a valid regular expression"),
        (["x" * 201], "longer than 200"),
        ([str(n) for n in range(51)], "at most 50"),
        ([3], "list of regexes"),
        (42, "list of regexes"),
    ],
)
def test_a_bad_bot_allow_stops_the_start_naming_the_key(
    make_app: AppFactory, value: object, says: str
) -> None:
    with pytest.raises(ConfigurationError, match="DEDUPKIT_BOT_ALLOW") as raised:
        make_app(BOT_ALLOW=value)
    assert says in str(raised.value)


def test_bot_filter_off_sends_bots_without_a_warning(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(BOT_FILTER=False)
    with caplog.at_level(logging.WARNING, logger="dedupkit"):
        assert track_as(app, CURL, "B-1").outcome == "queued"
    assert not any("looks like a bot" in r.getMessage() for r in caplog.records)
