"""The one place secrets are taken out of text before it is logged, stored or shown.

Every message built from something outside dedupkit (an API answer, a Redis error, a queue URL)
passes through here: the conversion token (raw, URL- or JSON-escaped), any ``Bearer`` value,
any ``Authorization`` value, anything shaped like a Pinterest token, and a URL's password.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

#: The longest message kept (after redaction).
MAX_MESSAGE = 300
#: What replaces a secret in a message.
REDACTED = "[redacted]"

# A bearer value, and an Authorization header's whole value whatever its scheme.
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"'<>,;&]+")
_AUTHORIZATION = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\]|bearer\b)[^\s\"'<>,;&][^\r\n\"'<>,;&]*"
)
# Pinterest's token shape, whoever it belongs to.
_PINTEREST_TOKEN = re.compile(r"\bpina_[A-Za-z0-9_.=+/-]+")
# Secrets shorter than this are not searched for literally: they would garble every message.
_MIN_SECRET = 8
_SPACE = re.compile(r"\s+")


def redact(text: str, secrets: Iterable[str] = (), *, limit: int = MAX_MESSAGE) -> str:
    """``text`` without ``secrets``, ``Bearer`` values, ``Authorization`` values or
    Pinterest-shaped tokens, its whitespace collapsed, cut to ``limit`` characters."""
    for secret in secrets:
        if len(secret) < _MIN_SECRET:
            continue
        for form in {secret, urllib.parse.quote(secret, safe=""), secret.replace("/", "\\/")}:
            text = text.replace(form, REDACTED)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)
    text = _PINTEREST_TOKEN.sub(REDACTED, text)
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def redacted_url(url: str) -> str:
    """``url`` fit for logs: a Redis or database URL may carry a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
