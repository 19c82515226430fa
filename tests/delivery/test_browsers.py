"""Device labels: a user agent's browser, OS and device type, parsed by ``user-agents``."""

from __future__ import annotations

import json

import pytest

from dedupkit.delivery.browsers import (
    CACHE_SIZE,
    Device,
    _label,
    device_label,
    device_labels,
    device_of,
    label_of_payload,
)
from dedupkit.outbox.base import Claimed

from ..support.agents import (
    ANDROID_PINTEREST_APP_UA,
    CHROME_UA,
    FIREFOX_DESKTOP_UA,
    IPAD_SAFARI_UA,
    IPHONE_PINTEREST_APP_UA,
    IPHONE_SAFARI_UA,
)


@pytest.mark.parametrize(
    ("user_agent", "label"),
    [
        (CHROME_UA, "Chrome · Windows · desktop"),
        (IPHONE_SAFARI_UA, "Safari · iOS · mobile"),
        (IPAD_SAFARI_UA, "Safari · iOS · tablet"),
        (FIREFOX_DESKTOP_UA, "Firefox · Windows · desktop"),
        (IPHONE_PINTEREST_APP_UA, "Pinterest · iOS · in-app"),
        (ANDROID_PINTEREST_APP_UA, "Pinterest · Android · in-app"),
        ("curl/8.5.0", "curl · unknown · other"),
        ("", "unknown · unknown · other"),
    ],
)
def test_a_user_agent_gets_browser_os_and_device_type(user_agent: str, label: str) -> None:
    assert device_label(user_agent) == label


def test_a_label_splits_back_into_its_parts_and_nonsense_is_unknown() -> None:
    assert device_of("Safari · iOS · mobile") == Device("Safari", "iOS", "mobile")
    assert device_of(None) == device_of("Safari") == Device("unknown", "unknown", "unknown")


def test_the_cache_is_bounded_and_long_agents_are_cut() -> None:
    _label.cache_clear()
    for n in range(CACHE_SIZE + 50):
        device_label(f"Mozilla/5.0 agent-{n}")
    assert _label.cache_info().currsize == CACHE_SIZE
    assert device_label(CHROME_UA + "x" * 100_000) == device_label(CHROME_UA + "x" * 2000)


def test_labels_come_from_the_payload_and_a_broken_payload_has_none() -> None:
    good = Claimed("1:1", json.dumps({"user_data": {"client_user_agent": IPHONE_SAFARI_UA}}))
    none = Claimed("2:1", '{"user_data": {"em": ["ab"]}}')
    broken = Claimed("3:1", "{not json")
    assert device_labels([good, none, broken]) == {"1:1": "Safari · iOS · mobile"}
    assert label_of_payload({"user_data": "nope"}) is None


def test_a_failing_parser_loses_only_the_label(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(user_agent: str) -> object:
        raise RuntimeError("rules broke")

    _label.cache_clear()
    monkeypatch.setattr("user_agents.parse", broken)
    claimed = Claimed("1:1", json.dumps({"user_data": {"client_user_agent": "Odd/1.0"}}))
    assert device_labels([claimed]) == {}
    assert "could not label the user agent of 1:1" in caplog.text
    _label.cache_clear()
