"""Tell crawlers, headless browsers and HTTP libraries from shoppers, by user agent.

Bots render pages but run no tag, so sending their events to the API would inflate CAPI
against the tag. The Pinterest in-app browser is a shopper, although generic bot lists have
flagged it (omrilotan/isbot#27).
"""

from __future__ import annotations

import re
from functools import lru_cache

from user_agents import parse

# What user-agents' list misses: automation and HTTP client libraries.
_NOT_A_BROWSER = re.compile(
    r"headlesschrome|phantomjs|puppeteer|playwright|selenium|webdriver|lighthouse"
    r"|python-requests|python-urllib|python-httpx|aiohttp|httpx|curl/|wget/|go-http-client"
    r"|java/|okhttp/|libwww|scrapy|node-fetch|axios/|undici|postman|insomnia|httpie"
    r"|pinterestbot|pinterest/0\.|facebookexternalhit|\bbot\b|crawler|spider",
    re.IGNORECASE,
)
_PINTEREST_APP = re.compile(r"\[Pinterest/(?:iOS|Android)\]", re.IGNORECASE)


@lru_cache(maxsize=4096)
def is_bot(user_agent: str | None) -> bool:
    """True for crawlers, headless browsers and HTTP libraries; False for real browsers.

    Cached: parsing an unseen user agent costs about a millisecond, and a shop sees the same
    few hundred strings over and over.
    """
    if not user_agent or not user_agent.strip():
        return True
    if _PINTEREST_APP.search(user_agent):
        return False
    if _NOT_A_BROWSER.search(user_agent):
        return True
    return bool(parse(user_agent).is_bot)
