"""Normalise and SHA-256 the visitor's PII the way Pinterest matches it (pinterest.md §2.2).

Raw PII enters :meth:`UserDataHasher.hash` and never leaves it: what comes out is 64-hex digests
plus the fields Pinterest wants in clear (IP, user agent, click id, partner id). A value that
cannot be normalised (malformed, over-long, not valid Unicode) is dropped with a warning that
names the field, never the value; a value of the wrong type or an unknown field raises
:class:`~dedupkit.errors.InvalidEvent`.

Every tracked checkout goes through here, so the common cases take a fast path: a phone number
already written with its country code, or a national number of a region without trunk prefix
handling to do, is checked against libphonenumber's metadata without a full parse (~3 µs
instead of ~15 µs). Anything else takes libphonenumber's full parse; a test holds the two to the
same answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import phonenumbers

from ..errors import InvalidEvent

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
#: Most values one field may list (several emails of one customer, say).
MAX_VALUES = 100
#: Longest raw value normalised; longer ones are dropped before any work on them.
MAX_LENGTH = 1024
#: Clear fields are sent as they are: a user agent of 4 KB is already absurd.
MAX_CLEAR_LENGTH = 4096
_ALL_KEYS = ", ".join(sorted({*FIELD_ALIASES, *CLEAR_FIELDS}))


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
    region = default_region.upper() if default_region else None
    # 0 for no or an unknown region: national numbers then go to the full parse, which drops them.
    region_code = phonenumbers.country_code_for_region(region) if region else 0

    def normalize(value: str) -> str | None:
        text = value.strip()
        if text.startswith("00"):
            text = "+" + text[2:]
        fast = _e164_fast(text, region, region_code)
        if fast is not None:
            return fast
        try:
            number = phonenumbers.parse(text, None if text.startswith("+") else region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]

    return normalize


# Separators people type in phone numbers; the fast path accepts only these and ASCII digits.
_PHONE_SEPARATORS = str.maketrans("", "", " -.()")


class _Rules(NamedTuple):
    """What decides whether a number may skip libphonenumber's full parse."""

    national_prefix: re.Pattern[str] | None  # a trunk prefix (or carrier code) to strip
    international_prefix: re.Pattern[str] | None  # the region's dialling-out prefix
    lengths: frozenset[int]  # national number lengths is_possible_number() accepts


# One entry per (region, calling code) seen: metadata, never customers' numbers.
_RULES: dict[tuple[str, int], _Rules] = {}


def _rules(region: str, country_code: int) -> _Rules:
    rules = _RULES.get((region, country_code))
    if rules is None:
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
        national = meta.national_prefix_for_parsing if meta is not None else None
        international = meta.international_prefix if meta is not None else None
        # is_possible_number() looks at the calling code and the length only: ask it once per
        # length instead of once per customer.
        lengths = frozenset(
            size
            for size in range(1, 18)
            if phonenumbers.is_possible_number(
                phonenumbers.PhoneNumber(country_code=country_code, national_number=int("1" * size))
            )
        )
        rules = _Rules(
            re.compile(national) if national else None,
            re.compile(international) if international else None,
            lengths,
        )
        _RULES[(region, country_code)] = rules
    return rules


def _e164_fast(text: str, region: str | None, region_code: int) -> str | None:
    """libphonenumber's answer for plain digits when it involves no prefix handling, else None.

    None means "take the full parse", never "invalid". The shortcut applies where the parse
    would only split off the country code and check the length: no leading zero (Italian-style
    numbers), no trunk prefix or carrier code the parse might strip, no dialling-out prefix or
    country code hidden in a national number.
    """
    compact = text.translate(_PHONE_SEPARATORS)
    if compact.startswith("+"):
        digits = compact[1:]
        # The parse reads no calling code from a leading zero ("+0…", "000…").
        if not (digits.isdigit() and digits.isascii()) or digits[0] == "0":
            return None
        for size in (1, 2, 3):  # the parse takes the shortest known calling code
            if int(digits[:size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                country_code, national = int(digits[:size]), digits[size:]
                break
        else:
            return None
        rules = _rules(phonenumbers.region_code_for_country_code(country_code), country_code)
    else:
        if not (region and region_code and compact.isdigit() and compact.isascii()):
            return None
        rules = _rules(region, region_code)
        if compact.startswith(str(region_code)) or (
            rules.international_prefix is not None and rules.international_prefix.match(compact)
        ):
            return None
        country_code, national = region_code, compact
    if len(national) < 3 or len(national) not in rules.lengths or national[0] == "0":
        return None  # the full parse decides: it may strip a prefix, or drop the number
    if rules.national_prefix is not None and rules.national_prefix.match(national):
        return None
    return f"{country_code}{national}"


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

        :raises InvalidEvent: for a key that is neither a known PII field nor a clear field
            (so a typo such as ``"emial"`` cannot silently lose the match), for a value that
            is not text, a number or (date of birth) a date, and for more than
            :data:`MAX_VALUES` values in one field. The message names the field, never a value.
        """
        out: dict[str, Any] = {}
        if raw is None:
            return out
        if not isinstance(raw, Mapping):
            raise InvalidEvent(f"user data must be a mapping, got {type(raw).__name__}")
        for key, value in raw.items():
            if value is None or value == "" or value == []:
                continue
            if not isinstance(key, str):
                raise InvalidEvent(f"user field names must be text, got {type(key).__name__}")
            if key in CLEAR_FIELDS:
                clear = _clear_text(key, value)
                if clear is not None:
                    out[key] = clear
                continue
            field = FIELD_ALIASES.get(key, key)
            normalize = self._normalizers.get(field)
            if normalize is None:
                raise InvalidEvent(f"unknown user field {key[:64]!r}: use one of {_ALL_KEYS}")
            label = f"user.{key}"  # messages name the caller's key, never a value
            if type(value) is str:  # the common case: one string, no list to build
                digest = _hash_one(field, label, value, normalize)
                if digest is not None:
                    _add(out, field, digest)
                continue
            for one in _values(label, value):
                digest = _hash_one(field, label, one, normalize)
                if digest is not None:
                    _add(out, field, digest)
        return out


def _add(out: dict[str, Any], field: str, digest: str) -> None:
    existing = out.get(field)
    if existing is None:
        out[field] = [digest]
    elif digest not in existing:
        existing.append(digest)


def _hash_one(
    field: str, label: str, value: Any, normalize: Callable[[Any], str | None]
) -> str | None:
    if field == "db" and isinstance(value, dt.date):
        normalized = normalize(value)  # a date needs no text checks
    else:
        text = _sendable_text(label, value, MAX_LENGTH)
        if text is None:
            return None
        if len(text) >= 64 and _HEX64.match(text.strip()):
            return text.strip().lower()  # already hashed by the caller
        normalized = normalize(text)
    if normalized is None:
        logger.warning("dropped an unusable %s value", label)
        return None
    return sha256_hex(normalized)


def _values(label: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        if len(value) > MAX_VALUES:
            raise InvalidEvent(f"{label} must list at most {MAX_VALUES} values")
        return [one for one in value if one is not None and one != ""]
    return [value]


def _number_text(label: str, value: Any) -> str:
    """An int or float given for a text field (a zip or phone as a number), as text."""
    if type(value) is int:
        # Bounded before str(): a 5,000-digit int would raise, a 4,000-digit one cost time.
        if -(10**64) < value < 10**64:
            return str(value)
        raise InvalidEvent(f"{label} must be text or a number of at most 64 digits")
    if type(value) is float:
        return repr(value)
    raise InvalidEvent(f"{label} must be text or a number, got {type(value).__name__}")


def _clear_text(key: str, value: Any) -> str | None:
    """A clear field as sent, or None (with a warning) when it cannot be sent."""
    return _sendable_text(f"user.{key}", value, MAX_CLEAR_LENGTH)


def _sendable_text(label: str, value: Any, limit: int) -> str | None:
    """``value`` as text of at most ``limit`` characters that UTF-8 can carry, or ``None`` with
    a warning naming ``label`` (never the value)."""
    text = value if type(value) is str else _number_text(label, value)
    if len(text) > limit:
        logger.warning("dropped an over-long %s value (%d characters)", label, len(text))
        return None
    if not text.isascii() and not _encodes(text):
        logger.warning("dropped a %s value that is not valid Unicode text", label)
        return None
    return text


def _encodes(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8, i.e. holds no lone surrogate (``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_required_identity(user_data: Mapping[str, Any]) -> bool:
    """Pinterest's rule: ``em``, or ``hashed_maids``, or both client IP and user agent."""
    return bool(
        user_data.get("em")
        or user_data.get("hashed_maids")
        or (user_data.get("client_ip_address") and user_data.get("client_user_agent"))
    )
