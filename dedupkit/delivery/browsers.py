"""Where the tag is lost: a visitor's browser, operating system and device type, as one label.

The ledger shows the share of conversions only the server sent per browser family, operating
system and device type. The user agent is parsed with the ``user-agents`` package (its
``ua-parser`` rules) off the request path, when the sender acknowledges a delivered event,
and only the short label is stored beside the entry, e.g. ``"Safari · iOS · mobile"``: never
more of the user agent than the payload already holds. Parsing costs about a millisecond, and
shoppers share few user agents, so labels are cached per user agent (a bounded LRU).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import user_agents

from ..outbox.base import Claimed

logger = logging.getLogger("dedupkit.sender")

#: Distinct user agents whose label is remembered.
CACHE_SIZE = 2048
#: Longest user agent parsed (Pinterest's ``client_user_agent`` is cut at 1,000 characters
#: by the intake); longer text is labelled from its start.
MAX_USER_AGENT_LENGTH = 1000
#: Joins the three parts of a label.
SEPARATOR = " \N{MIDDLE DOT} "
UNKNOWN = "unknown"
#: Device types, as the ledger names them.
MOBILE, TABLET, DESKTOP, IN_APP, BOT, OTHER = (
    "mobile",
    "tablet",
    "desktop",
    "in-app",
    "bot",
    "other",
)
#: ua-parser browser families that are an app's own web view: its in-app browser.
IN_APP_FAMILIES = frozenset(
    {
        "Pinterest",
        "Facebook",
        "Instagram",
        "Snapchat",
        "TikTok",
        "LINE",
        "WeChat",
        "Twitter",
        "LinkedIn",
        "Chrome Mobile WebView",
        "Mobile Safari UI/WKWebView",
    }
)
#: ua-parser's names for a browser's phone build, folded into the browser's own name: the
#: device type already says "mobile".
_FAMILIES = {
    "Mobile Safari": "Safari",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Samsung Internet": "Samsung Internet",
    "Opera Mobile": "Opera",
}


class Device(NamedTuple):
    """A label's three parts."""

    browser: str
    os: str
    type: str


def device_label(user_agent: str) -> str:
    """``"Safari · iOS · mobile"``: a user agent's browser family, OS family and device
    type; ``"unknown · unknown · other"`` for one the rules do not know."""
    return _label(user_agent[:MAX_USER_AGENT_LENGTH])


@lru_cache(maxsize=CACHE_SIZE)
def _label(user_agent: str) -> str:
    parsed = user_agents.parse(user_agent)
    family = parsed.browser.family
    browser = _FAMILIES.get(family, family)
    if family in IN_APP_FAMILIES or "; wv)" in user_agent:
        kind = IN_APP
    elif parsed.is_bot:
        kind = BOT
    elif parsed.is_tablet:
        kind = TABLET
    elif parsed.is_mobile:
        kind = MOBILE
    elif parsed.is_pc:
        kind = DESKTOP
    else:
        kind = OTHER
    parts = (_known(browser), _known(parsed.os.family), kind)
    return SEPARATOR.join(part.replace(SEPARATOR.strip(), "-") for part in parts)


def device_of(label: str | None) -> Device:
    """The parts of a stored label (``unknown`` ones for no label, or a malformed one)."""
    parts = (label or "").split(SEPARATOR)
    if len(parts) != 3 or not all(parts):
        return Device(UNKNOWN, UNKNOWN, UNKNOWN)
    return Device(*parts)


def label_of_payload(payload: Mapping[str, Any]) -> str | None:
    """The label of a CAPI payload's ``user_data.client_user_agent``; ``None`` without one."""
    user = payload.get("user_data")
    agent = user.get("client_user_agent") if isinstance(user, Mapping) else None
    if not isinstance(agent, str) or not agent:
        return None
    return device_label(agent)


def _known(family: str) -> str:
    return UNKNOWN if not family or family == "Other" else family


def device_labels(claimed: Iterable[Claimed]) -> dict[str, str]:
    """The device label of each claimed entry with a user agent, by claim id: what the
    sender passes to :meth:`~dedupkit.outbox.base.Outbox.ack`. A payload that does not
    decode has no label (the sender sent its text as it was), and a parser that fails only
    loses the label: the ack that keeps the event from being sent twice must happen."""
    labels: dict[str, str] = {}
    for entry in claimed:
        try:
            payload = entry.payload
            label = label_of_payload(payload) if isinstance(payload, Mapping) else None
        except ValueError:
            continue
        except Exception:
            logger.exception("could not label the user agent of %s", entry.id)
            continue
        if label is not None:
            labels[entry.id] = label
    return labels
