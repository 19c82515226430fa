"""The fake Pinterest can refuse its tag to the visitors a blocker would stop."""

from __future__ import annotations

import httpx
import pytest

from dedupkit.testing import FakePinterest
from dedupkit.testing.blockers import (
    AD_BLOCKER,
    AD_BLOCKER_MARKER,
    BRAVE_SHIELDS,
    FIREFOX_STRICT,
    SAFARI_PROTECTION,
    typical_blockers,
)

from .support.agents import (
    ANDROID_PINTEREST_APP_UA,
    CHROME_UA,
    FIREFOX_DESKTOP_UA,
    IPAD_SAFARI_UA,
    IPHONE_PINTEREST_APP_UA,
    IPHONE_SAFARI_UA,
)

CHROME_ON_IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1"
)
MAC_SAFARI_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


@pytest.mark.parametrize(
    ("user_agent", "blocker"),
    [
        (CHROME_UA, None),
        (CHROME_ON_IPHONE_UA, None),
        (IPHONE_PINTEREST_APP_UA, None),
        (ANDROID_PINTEREST_APP_UA, None),
        (FIREFOX_DESKTOP_UA, FIREFOX_STRICT),
        (IPHONE_SAFARI_UA, SAFARI_PROTECTION),
        (IPAD_SAFARI_UA, SAFARI_PROTECTION),
        (MAC_SAFARI_UA, SAFARI_PROTECTION),
        (CHROME_UA + " Brave", BRAVE_SHIELDS),
        (f"{CHROME_UA} {AD_BLOCKER_MARKER}", AD_BLOCKER),
    ],
)
def test_typical_blockers_stop_firefox_safari_brave_and_ad_blockers(
    user_agent: str, blocker: str | None
) -> None:
    assert typical_blockers(user_agent) == blocker


def test_a_blocked_visitor_gets_no_core_js_and_is_counted(fake: FakePinterest) -> None:
    def get(user_agent: str) -> httpx.Response:
        return httpx.get(fake.pintrk_src, headers={"User-Agent": user_agent})

    assert get(FIREFOX_DESKTOP_UA).status_code == 200  # no rule: nobody is blocked
    fake.block_tag(typical_blockers)
    blocked = get(FIREFOX_DESKTOP_UA)
    assert blocked.status_code == 403
    assert blocked.headers["X-Fake-Blocked-By"] == FIREFOX_STRICT
    assert get(CHROME_UA).status_code == 200
    assert fake.tag_blocked == {FIREFOX_STRICT: 1}
    assert fake.state()["counts"]["tag_blocked"] == 1
    fake.block_tag(None)
    assert get(FIREFOX_DESKTOP_UA).status_code == 200
    fake.reset()
    assert fake.tag_blocked == {}
