"""The page URL sent as ``event_source_url``: bounded, http(s) only, free of PII.

An odd page URL is an optional field gone wrong, not a reason to lose the conversion: it is
trimmed (fragment, then query) or dropped, and the event is sent without it.

Pages put PII in URLs more often than anyone plans (``/confirm?email=jane%40example.com``, a
password-reset token, a newsletter link with the reader's name), and the URL goes to Pinterest
and into the outbox. So before an URL is kept: the fragment is dropped; query parameters whose
names say PII (:data:`PII_WORDS`) are removed; any parameter or path segment holding an e-mail
address or a phone number written as one (``+1 415 555 0134``, ``(415) 555-0134``), also
percent-encoded, is removed or replaced by :data:`REDACTED`. Bare digit runs stay: they are
order and product ids far more often than phone numbers.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

#: Longest URL kept; Pinterest's documentation and the tag cut page URLs at this length.
MAX_URL_LENGTH = 2048
#: Longer input is not even parsed.
MAX_INPUT_LENGTH = 16 * 1024
#: What a path segment holding PII becomes.
REDACTED = "redacted"

#: Words that, as a whole word of a parameter name (``customer_email``, ``user[first_name]``,
#: ``e-mail``), say its value is PII or a secret.
PII_WORDS = frozenset(
    {
        "email",
        "mail",
        "phone",
        "tel",
        "telephone",
        "mobile",
        "cell",
        "name",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "address",
        "addr",
        "street",
        "zip",
        "zipcode",
        "postcode",
        "postal",
        "dob",
        "birthday",
        "birthdate",
        "birth",
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "ssn",
    }
)
#: Parts that say PII even inside a longer word (``useremail``, ``resetToken``).
_PII_PARTS = ("email", "phone", "password", "passwd", "token", "firstname", "lastname", "birth")
#: Parameters kept whatever their name says: attribution, not identity.
_ALWAYS_KEPT = frozenset({"epik", "gclid", "fbclid", "msclkid"})

_EMAIL = re.compile(r"[^\s@/?&=#:;,]+@[^\s@/?&=#:;,]+\.[A-Za-z]{2,}")
# A phone number as people write one: "+" and 7-15 digits, or digit groups with separators of
# the usual national forms (9 to 15 digits in all). A lone run of digits is not one: order and
# product ids look alike.
_PHONE = re.compile(
    r"\+\d(?:[\s.()-]?\d){6,14}\b"
    r"|\(\d{2,4}\)\s?\d{3,4}[\s.-]?\d{3,4}\b"
    r"|\b\d{2,4}[\s.-]\d{3,4}[\s.-]\d{3,5}\b"
)
_WORD = re.compile(r"[a-z0-9]+")
#: Decode at most this many times: ``%2540`` is ``%40`` once decoded, ``@`` twice.
_DECODE_ROUNDS = 3


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
    if "@" in parts.netloc:  # user:password@host
        return None
    path = scrub_path(parts.path) or "/"
    query = scrub_query(parts.query)
    cleaned = urlunsplit((scheme, parts.netloc, path, query, ""))
    if len(cleaned) > MAX_URL_LENGTH:
        cleaned = urlunsplit((scheme, parts.netloc, path, "", ""))
    return cleaned if len(cleaned) <= MAX_URL_LENGTH else None


def scrub_query(query: str) -> str:
    """``query`` without the parameters that name or hold PII; the rest byte for byte."""
    if not query:
        return ""
    kept = []
    for pair in query.split("&"):
        raw_name, _, raw_value = pair.partition("=")
        name = _decoded(raw_name, plus=True)
        if name.lower() in _ALWAYS_KEPT or not _is_pii(name, _decoded(raw_value, plus=True)):
            kept.append(pair)
    return "&".join(kept)


def _is_pii(name: str, value: str) -> bool:
    return pii_name(name) or holds_pii(name) or holds_pii(value)


def scrub_path(path: str) -> str:
    """``path`` with each segment that holds an e-mail or phone number replaced."""
    return "/".join(REDACTED if holds_pii(_decoded(s)) else s for s in path.split("/"))


def pii_name(name: str) -> bool:
    """Whether a parameter name says its value is PII or a secret."""
    lowered = name.lower()
    if any(part in lowered for part in _PII_PARTS):
        return True
    # "e-mail", "first_name", "user[name]": words split on anything not a letter or digit.
    words = _WORD.findall(lowered)
    return any(word in PII_WORDS for word in words) or "".join(words) in PII_WORDS


def holds_pii(text: str) -> bool:
    """Whether ``text`` (already decoded) holds an e-mail address or a phone number."""
    if not text:
        return False
    if _EMAIL.search(text):
        return True
    return any(
        m.group().startswith("+") or 9 <= sum(c.isdigit() for c in m.group()) <= 15
        for m in _PHONE.finditer(text)
    )


def _decoded(text: str, *, plus: bool = False) -> str:
    """``text`` percent-decoded until it stops changing; ``+`` is a space in a query only,
    and only in the first round (a decoded ``%2B`` is a real plus)."""
    if plus:
        text = unquote_plus(text)
    for _ in range(_DECODE_ROUNDS):
        if "%" not in text:
            break
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text
