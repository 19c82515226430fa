"""The page URL sent as ``event_source_url``: bounded, http(s) only, trimmed rather than lost.

An odd page URL is an optional field gone wrong, not a reason to lose the conversion: it is
trimmed (fragment, then query) or dropped, and the event is sent without it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: Longest URL kept; Pinterest's documentation and the tag cut page URLs at this length.
MAX_URL_LENGTH = 2048
#: Longer input is not even parsed.
MAX_INPUT_LENGTH = 16 * 1024


def clean_page_url(url: object) -> str | None:
    """``url`` fit for ``event_source_url``, or ``None`` when nothing usable is left."""
    if not isinstance(url, str) or not url or len(url) > MAX_INPUT_LENGTH:
        return None
    if not url.isprintable() or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
    except ValueError:  # e.g. "Invalid IPv6 URL"
        return None
    if scheme not in ("http", "https") or not host:
        return None
    cleaned = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
    if len(cleaned) > MAX_URL_LENGTH:
        cleaned = urlunsplit((scheme, parts.netloc, parts.path or "/", "", ""))
    return cleaned if len(cleaned) <= MAX_URL_LENGTH else None
