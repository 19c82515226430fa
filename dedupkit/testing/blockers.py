"""Who blocks the Pinterest tag: rules for :meth:`FakePinterest.block_tag`.

A rule takes a visitor's user agent and returns the name of what blocks the tag for them,
or ``None``. The fake then refuses ``/ct/core.js`` to that visitor, as a content blocker
would: the page's tag never loads, and only the Conversions API can count the conversion.
:func:`typical_blockers` stands for the shoppers who most often lose the tag, so that the
demo's ledger shows where it is lost.
"""

from __future__ import annotations

import re

#: Firefox's strict Enhanced Tracking Protection blocks ct.pinterest.com (Disconnect's list).
FIREFOX_STRICT = "Firefox strict tracking protection"
#: Safari's Advanced Tracking and Fingerprinting Protection (private browsing, and for all
#: browsing when turned on) blocks known trackers' scripts.
SAFARI_PROTECTION = "Safari advanced tracking protection"
#: Brave Shields block trackers by default.
BRAVE_SHIELDS = "Brave Shields"
#: A content blocker extension or app (uBlock Origin, AdGuard, ...).
AD_BLOCKER = "ad blocker"

_FIREFOX = re.compile(r"\b(Firefox|FxiOS)/")
_BRAVE = re.compile(r"\bBrave\b")
# Safari itself, not Chrome, Firefox or Edge on iOS (which carry "Safari" too), nor an app.
_SAFARI = re.compile(r"Version/[\d.]+ (Mobile/\w+ )?Safari/")
_OTHER_ON_IOS = re.compile(r"\b(CriOS|FxiOS|EdgiOS|OPiOS)/")
#: A marker a test or a demo visitor adds to the user agent to stand for an ad blocker.
AD_BLOCKER_MARKER = "dedupkit-demo-adblock"


def typical_blockers(user_agent: str) -> str | None:
    """What blocks the tag for ``user_agent``: Firefox (strict mode), Safari (advanced
    tracking protection), Brave, and visitors marked with :data:`AD_BLOCKER_MARKER`."""
    if AD_BLOCKER_MARKER in user_agent:
        return AD_BLOCKER
    if _BRAVE.search(user_agent):
        return BRAVE_SHIELDS
    if _FIREFOX.search(user_agent):
        return FIREFOX_STRICT
    if _SAFARI.search(user_agent) and not _OTHER_ON_IOS.search(user_agent):
        return SAFARI_PROTECTION
    return None
