"""Normalise and SHA-256 the visitor's PII the way Pinterest matches it (pinterest.md §2.2).

Raw PII enters :func:`hash_user_data` and never leaves it: what comes out is 64-hex digests
plus the fields Pinterest wants in clear (IP, user agent, click id, partner id). A value that
cannot be normalised is dropped with a warning that names the field, never the value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import phonenumbers

logger = logging.getLogger("dedupkit")

_HEX64 = re.compile(r"^[A-Fa-f0-9]{64}$")
# Deliberately loose: one @, no spaces, a dot in the domain. Pinterest matches on the exact
# address, so "fixing" typos would only create hashes that match nobody.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_US_ZIP = re.compile(r"^(\d{5})(?:-\d{4})?$")

_GENDERS = {
    "f": "f",
    "female": "f",
    "woman": "f",
    "m": "m",
    "male": "m",
    "man": "m",
    "n": "n",
    "nonbinary": "n",
    "non-binary": "n",
    "non binary": "n",
}

#: Raw field names accepted in ``user=…`` → the CAPI ``user_data`` key they hash into.
#: The CAPI keys themselves are accepted too, so callers may pass either vocabulary.
FIELD_ALIASES: Mapping[str, str] = {
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "gender": "ge",
    "date_of_birth": "db",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "external_id": "external_id",
    "maid": "hashed_maids",
    "maids": "hashed_maids",
}
#: Fields Pinterest wants in clear text: never hashed.
CLEAR_FIELDS = ("client_ip_address", "client_user_agent", "click_id", "partner_id")


def sha256_hex(value: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``value``."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def normalize_email(value: str) -> str | None:
    value = value.strip().lower()
    return value if _EMAIL.match(value) else None


def phone_normalizer(default_region: str | None) -> Callable[[str], str | None]:
    """Digits with the country code, as E.164 without the ``+``.

    A number written with ``+`` or ``00`` carries its country. One without it is read as a
    national number of ``default_region`` (``DEDUPKIT_PHONE_REGION``, e.g. ``"US"``); with no
    region configured such a number is dropped, because guessing a country hashes to an
    identity that matches nobody.
    """

    def normalize(value: str) -> str | None:
        text = value.strip()
        if text.startswith("00"):
            text = "+" + text[2:]
        try:
            number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]

    return normalize


def normalize_name(value: str) -> str | None:
    value = unicodedata.normalize("NFC", value).strip().lower()
    return value or None


def normalize_gender(value: str) -> str | None:
    return _GENDERS.get(value.strip().lower())


def normalize_date_of_birth(value: object) -> str | None:
    """``YYYYMMDD``: the format Pinterest's own server-side tag and Segment use."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    digits = re.sub(r"\D", "", str(value))
    try:
        return dt.datetime.strptime(digits, "%Y%m%d").strftime("%Y%m%d")
    except ValueError:
        return None


def normalize_city(value: str) -> str | None:
    # "lowercase, no spaces and no punctuation": keep letters and digits of any script.
    value = "".join(ch for ch in unicodedata.normalize("NFC", value).lower() if ch.isalnum())
    return value or None


def normalize_code2(value: str) -> str | None:
    """Two-letter state or country codes, lowercase."""
    value = value.strip().lower()
    return value if len(value) == 2 and value.isalpha() and value.isascii() else None


def normalize_zip(value: str) -> str | None:
    """US ZIP (and ZIP+4) → its five digits; other postcodes → lowercase letters and digits.

    Pinterest says "digits only", which would wreck UK or Canadian postcodes; keeping their
    letters is what its own server-side tag does for non-US values.
    """
    value = value.strip()
    us = _US_ZIP.match(value)
    if us:
        return us.group(1)
    value = "".join(ch for ch in value.lower() if ch.isalnum())
    return value or None


def normalize_identifier(value: str) -> str | None:
    # Advertiser ids may be case-sensitive: trim only.
    value = value.strip()
    return value or None


def normalize_maid(value: str) -> str | None:
    value = value.strip().lower()
    return value or None


class UserDataHasher:
    """Turns raw visitor data into CAPI ``user_data``.

    :param phone_region: the region a phone number without country code belongs to.
    """

    def __init__(self, *, phone_region: str | None = None) -> None:
        self._normalizers: dict[str, Callable[[Any], str | None]] = {
            "em": normalize_email,
            "ph": phone_normalizer(phone_region),
            "fn": normalize_name,
            "ln": normalize_name,
            "ge": normalize_gender,
            "db": normalize_date_of_birth,
            "ct": normalize_city,
            "st": normalize_code2,
            "zp": normalize_zip,
            "country": normalize_code2,
            "external_id": normalize_identifier,
            "hashed_maids": normalize_maid,
        }

    def hash(self, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Normalise and hash ``raw``; pass 64-hex values and clear fields through.

        :raises ValueError: for a key that is neither a known PII field nor a clear field,
            so a typo such as ``"emial"`` cannot silently lose the match.
        """
        out: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            if value is None or value == "" or value == []:
                continue
            if key in CLEAR_FIELDS:
                out[key] = str(value)
                continue
            field = FIELD_ALIASES.get(key, key)
            normalize = self._normalizers.get(field)
            if normalize is None:
                raise ValueError(
                    f"unknown user field {key!r}: use one of "
                    f"{', '.join(sorted({*FIELD_ALIASES, *CLEAR_FIELDS}))}"
                )
            hashes = [h for h in (self._hash_one(field, v, normalize) for v in _values(value)) if h]
            if hashes:
                existing = out.setdefault(field, [])
                existing.extend(h for h in hashes if h not in existing)
        return out

    @staticmethod
    def _hash_one(field: str, value: Any, normalize: Callable[[Any], str | None]) -> str | None:
        if isinstance(value, str) and _HEX64.match(value.strip()):
            return value.strip().lower()  # already hashed by the caller
        normalized = normalize(value if field == "db" else str(value))
        if normalized is None:
            logger.warning("dropped an unusable %s value from user data", field)
            return None
        return sha256_hex(normalized)


def _values(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def has_required_identity(user_data: Mapping[str, Any]) -> bool:
    """Pinterest's rule: ``em``, or ``hashed_maids``, or both client IP and user agent."""
    return bool(
        user_data.get("em")
        or user_data.get("hashed_maids")
        or (user_data.get("client_ip_address") and user_data.get("client_user_agent"))
    )
