"""User data: PII normalised and SHA-256'd as pinterest.md §2.2 says; clear fields kept clear."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
from typing import Any

import phonenumbers
import pytest

from dedupkit.errors import InvalidEvent
from dedupkit.event.model import build_event
from dedupkit.event.user_data import UserDataHasher, has_required_identity, phone_normalizer

from ..support.agents import CHROME_UA

HEX = "0123456789ABCDEFabcdef0123456789abcdef0123456789ABCDEF0123456789"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every logged message with its arguments filled in (no line numbers to collide with)."""
    return "\n".join(record.getMessage() for record in caplog.records)


#: (raw key, CAPI key, raw value, the normalised string Pinterest expects to be hashed).
HASHED: list[tuple[str, str, Any, str]] = [
    ("email", "em", " John.Doe@Example.COM ", "john.doe@example.com"),
    ("em", "em", "JANE@EXAMPLE.ORG", "jane@example.org"),
    ("phone", "ph", "+1 (650) 555-1234", "16505551234"),
    ("ph", "ph", "+1-650-555-1234", "16505551234"),
    ("phone", "ph", "0044 20 7946 0958", "442079460958"),
    ("phone", "ph", "+44 (0)20 7946 0958", "442079460958"),
    ("first_name", "fn", "  John ", "john"),
    ("fn", "fn", "ÉMILE", "émile"),
    ("last_name", "ln", "DOE", "doe"),
    ("ln", "ln", "Doe", "doe"),
    ("gender", "ge", "F", "f"),
    ("gender", "ge", "female", "f"),
    ("ge", "ge", "M", "m"),
    ("gender", "ge", "male", "m"),
    ("gender", "ge", "n", "n"),
    ("gender", "ge", "Non-binary", "n"),
    ("date_of_birth", "db", "1991-05-26", "19910526"),
    ("date_of_birth", "db", dt.date(1991, 5, 26), "19910526"),
    ("db", "db", "19910526", "19910526"),
    ("city", "ct", "San Francisco", "sanfrancisco"),
    ("ct", "ct", "St. Louis", "stlouis"),
    ("state", "st", "CA", "ca"),
    ("st", "st", " ny ", "ny"),
    ("zip", "zp", "94103", "94103"),
    ("zp", "zp", "94103-1234", "94103"),
    ("country", "country", "US", "us"),
    ("country", "country", " gb ", "gb"),
    ("external_id", "external_id", " cust-42 ", "cust-42"),
    (
        "maid",
        "hashed_maids",
        "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        "6d92078a-8246-4ba4-ae5b-76104861e7dc",
    ),
    (
        "hashed_maids",
        "hashed_maids",
        "38400000-8cf0-11bd-b23e-10b96e40000d",
        "38400000-8cf0-11bd-b23e-10b96e40000d",
    ),
]

#: Every hashed CAPI key the spec lists (§2.2).
HASHED_KEYS = [
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
    "hashed_maids",
]

CLEAR: list[tuple[str, str]] = [
    (
        "click_id",
        "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2Q2dOVDBXWWhkWklrUGxBUSZ0",
    ),
    ("client_ip_address", "203.0.113.7"),
    ("client_ip_address", "2001:db8::1"),
    ("client_user_agent", CHROME_UA),
    ("partner_id", "RampID-XY1234"),
    # A clear field that happens to look like PII or a hash is still not touched.
    ("partner_id", "John.Doe@Example.com"),
    ("click_id", HEX),
]

#: (raw key, CAPI key, a value that cannot be normalised). Values are distinctive so that
#: finding them in the log text means they were logged.
MALFORMED: list[tuple[str, str, str]] = [
    ("email", "em", "john.doe.at.example.com"),
    ("email", "em", "john doe@example.com"),
    ("em", "em", "john@@example.com"),
    ("phone", "ph", "12"),
    ("phone", "ph", "not a phone number"),
    ("phone", "ph", "+1 555"),
    # A national number and no region configured: guessing a country would hash nonsense.
    ("phone", "ph", "020 7946 0958"),
    ("gender", "ge", "unspecified-gender"),
    ("date_of_birth", "db", "31/02/1990"),
    ("date_of_birth", "db", "sometime in 1990"),
    ("state", "st", "California"),
    ("country", "country", "United States"),
]


@pytest.mark.parametrize(("key", "capi_key", "raw", "normalized"), HASHED)
def test_each_pii_field_is_normalised_then_sha256_hashed(
    key: str, capi_key: str, raw: Any, normalized: str
) -> None:
    assert UserDataHasher().hash({key: raw}) == {capi_key: [sha256(normalized)]}


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("020 7946 0958", "442079460958"),
        ("07911 123456", "447911123456"),
        ("+1 (650) 555-1234", "16505551234"),
        ("0044 20 7946 0958", "442079460958"),
    ],
)
def test_a_national_phone_number_takes_the_configured_region(raw: str, normalized: str) -> None:
    hasher = UserDataHasher(phone_region="GB")

    assert hasher.hash({"phone": raw}) == {"ph": [sha256(normalized)]}


@pytest.mark.parametrize("capi_key", HASHED_KEYS)
def test_an_already_hashed_value_passes_through_lowercased_and_unhashed(capi_key: str) -> None:
    assert UserDataHasher().hash({capi_key: f"  {HEX} "}) == {capi_key: [HEX.lower()]}


@pytest.mark.parametrize(("key", "value"), CLEAR)
def test_clear_fields_are_never_hashed(key: str, value: str) -> None:
    assert UserDataHasher().hash({key: value}) == {key: value}


@pytest.mark.parametrize(("key", "capi_key", "raw"), MALFORMED)
def test_a_malformed_value_is_dropped_with_a_warning_that_does_not_contain_it(
    caplog: pytest.LogCaptureFixture, key: str, capi_key: str, raw: str
) -> None:
    caplog.set_level(logging.DEBUG)

    out = UserDataHasher().hash({key: raw, "client_ip_address": "203.0.113.7"})

    assert out == {"client_ip_address": "203.0.113.7"}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"user.{key}" in warnings[0].getMessage()
    logged = logged_text(caplog)
    assert raw not in logged
    assert raw.strip().lower() not in logged.lower()


def test_a_malformed_value_does_not_drop_the_valid_values_next_to_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)

    out = UserDataHasher().hash({"email": ["not-an-email", "jane@example.org"]})

    assert out == {"em": [sha256("jane@example.org")]}
    assert "not-an-email" not in logged_text(caplog)


def test_valid_pii_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    raw = {key: value for key, _, value, _ in HASHED if isinstance(value, str)}

    UserDataHasher().hash(raw)

    logged = logged_text(caplog)
    for value in raw.values():
        assert value.strip() not in logged


@pytest.mark.parametrize("key", ["emial", "mail", "ip", "user_agent", "epik", "phone_number", "EM"])
def test_an_unknown_user_key_raises_invalid_event_naming_the_key(key: str) -> None:
    with pytest.raises(InvalidEvent, match=repr(key)) as info:
        UserDataHasher().hash({key: "secret-value@example.com"})

    assert "secret-value" not in str(info.value)


def test_build_event_refuses_an_unknown_user_key_with_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="'emial'"):
        build_event("checkout", user={"emial": "john@example.com", "email": "john@example.com"})


class Opaque:
    """Not text: its str() would be whatever the class says, so it must not be hashed."""

    def __str__(self) -> str:
        return "john@example.com"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"email": {"address": "john@example.com"}}, "em"),
        ({"email": Opaque()}, "em"),
        ({"email": True}, "em"),
        ({"phone": 10**70}, "ph"),
        ({"phone": [["+16505551234"]]}, "ph"),
        ({"email": ["j@example.com"] * 101}, "em"),
        ({"client_user_agent": b"Mozilla/5.0"}, "client_user_agent"),
    ],
)
def test_a_value_of_the_wrong_shape_raises_invalid_event_naming_the_field(
    raw: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEvent, match=field) as info:
        UserDataHasher().hash(raw)

    assert "example.com" not in str(info.value)


@pytest.mark.parametrize("raw", [["email", "john@example.com"], "email=john@example.com"])
def test_user_data_that_is_not_a_mapping_raises_invalid_event(raw: Any) -> None:
    with pytest.raises(InvalidEvent, match="mapping"):
        UserDataHasher().hash(raw)


def test_a_field_name_that_is_not_text_raises_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="field names"):
        UserDataHasher().hash({("email",): "john@example.com"})  # type: ignore[dict-item]


UNUSABLE_TEXT: list[tuple[str, str, str]] = [
    ("email", "em", "john\ud800@example.com"),
    ("first_name", "fn", "Jo\udfffhn"),
    ("phone", "ph", "+1 650 555 " + "1" * 5000),
    ("last_name", "ln", "Doe" * 1000),
    ("client_user_agent", "client_user_agent", "Mozilla/5.0 \ud83d"),
    ("click_id", "click_id", "dj0y" * 2000),
]


@pytest.mark.parametrize(("key", "field", "raw"), UNUSABLE_TEXT)
def test_lone_surrogates_and_over_long_values_are_dropped_with_a_warning_naming_the_field(
    caplog: pytest.LogCaptureFixture, key: str, field: str, raw: str
) -> None:
    caplog.set_level(logging.DEBUG)

    out = UserDataHasher().hash({key: raw, "em": "jane@example.org"})

    assert out == {"em": [sha256("jane@example.org")]}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"user.{key}" in warning.getMessage()
    assert raw[:20] not in logged_text(caplog)


def test_an_over_long_phone_number_is_dropped_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed an over-long value")

    monkeypatch.setattr("dedupkit.event.user_data.phonenumbers.parse", refuse)

    assert UserDataHasher(phone_region="US").hash({"phone": "6" * 100_000}) == {}


@pytest.mark.parametrize(
    ("raw_key", "capi_key", "value"),
    [(raw, capi, value) for raw, capi, value, _ in HASHED if raw != capi],
)
def test_both_vocabularies_give_the_same_hash(raw_key: str, capi_key: str, value: Any) -> None:
    hasher = UserDataHasher()

    assert hasher.hash({raw_key: value}) == hasher.hash({capi_key: value})


@pytest.mark.parametrize(
    "emails",
    [
        ["john@example.com", "jane@example.org"],
        ("john@example.com", "jane@example.org"),
    ],
)
def test_a_list_of_values_gives_a_list_of_hashes_in_order(emails: Any) -> None:
    out = UserDataHasher().hash({"email": emails})

    assert out == {"em": [sha256("john@example.com"), sha256("jane@example.org")]}


def test_a_set_of_values_gives_one_hash_per_value() -> None:
    out = UserDataHasher().hash({"phone": {"+16505551234", "+442079460958"}})

    assert sorted(out["ph"]) == sorted([sha256("16505551234"), sha256("442079460958")])


@pytest.mark.parametrize(
    "raw",
    [
        {"email": ["john@example.com", " JOHN@example.com "]},
        {"email": "john@example.com", "em": "John@Example.com"},
        {"email": ["john@example.com", sha256("john@example.com").upper()]},
        {"phone": ["+1 (650) 555-1234", "+16505551234", "001 650 555 1234"]},
    ],
)
def test_duplicates_are_removed_after_normalisation(raw: dict[str, Any]) -> None:
    out = UserDataHasher().hash(raw)

    (values,) = out.values()
    assert len(values) == 1


@pytest.mark.parametrize("empty", [None, "", []])
def test_empty_values_are_left_out(empty: Any) -> None:
    assert UserDataHasher().hash({"email": empty, "click_id": empty}) == {}


def test_no_user_data_hashes_to_nothing() -> None:
    assert UserDataHasher().hash(None) == {}
    assert UserDataHasher().hash({}) == {}


# The "em, hashed_maids, or IP + UA" rule (§2.2).

IDENTIFIED: list[dict[str, Any]] = [
    {"email": "john@example.com"},
    {"em": sha256("john@example.com")},
    {"maid": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
    {"client_ip_address": "203.0.113.7", "client_user_agent": CHROME_UA},
]
ANONYMOUS: list[dict[str, Any] | None] = [
    None,
    {},
    {"client_ip_address": "203.0.113.7"},
    {"client_user_agent": CHROME_UA},
    {"phone": "+16505551234", "external_id": "cust-42", "click_id": "abc"},
    # An email that cannot be normalised is dropped, so it does not count.
    {"email": "not-an-email", "client_ip_address": "203.0.113.7"},
]


@pytest.mark.parametrize("user", IDENTIFIED)
def test_an_event_with_an_email_a_maid_or_ip_and_user_agent_builds(user: dict[str, Any]) -> None:
    event = build_event("checkout", user=user)

    assert has_required_identity(event.to_capi()["user_data"])


@pytest.mark.parametrize("user", ANONYMOUS)
def test_an_event_without_email_maid_or_ip_and_user_agent_is_refused(
    user: dict[str, Any] | None,
) -> None:
    with pytest.raises(InvalidEvent, match="user data"):
        build_event("checkout", user=user)


def test_build_event_hashes_the_user_data_it_is_given() -> None:
    event = build_event(
        "checkout",
        user={"email": " John.Doe@Example.COM ", "client_ip_address": "203.0.113.7"},
    )

    assert event.to_capi()["user_data"] == {
        "em": [sha256("john.doe@example.com")],
        "client_ip_address": "203.0.113.7",
    }


def test_build_event_uses_the_hasher_it_is_given() -> None:
    event = build_event(
        "lead",
        user={"email": "john@example.com", "phone": "020 7946 0958"},
        hasher=UserDataHasher(phone_region="GB"),
    )

    assert event.to_capi()["user_data"]["ph"] == [sha256("442079460958")]


# The phone fast path must give libphonenumber's answer, or defer to it.


def libphonenumber_e164(raw: str, region: str | None) -> str | None:
    """The reference: a full parse, the possible-number check, E.164 without the ``+``."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def phone_inputs(region: str, rng: random.Random) -> list[str]:
    """What shoppers type: national and international forms, trunk and dialling prefixes."""
    code = str(phonenumbers.country_code_for_region(region))
    inputs = []
    example = phonenumbers.example_number(region)
    if example is not None:
        for style in (
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL,
        ):
            inputs.append(phonenumbers.format_number(example, style))
    for _ in range(12):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 16)))
        lead = rng.choice(["", "0", "1", "8", "00", "011", code, "0" + code])
        inputs += [f"+{code}{lead}{digits}", f"{lead}{digits}", f"+{code} ({lead}) {digits}"]
        inputs.append(f"00{code}-{lead}{digits[:3]}-{digits[3:]}")
    return inputs


def test_the_phone_fast_path_agrees_with_libphonenumber_in_every_region() -> None:
    rng = random.Random(20240612)
    disagreements = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for configured in (region, None):
            normalize = phone_normalizer(configured)
            for raw in phone_inputs(region, rng):
                expected = libphonenumber_e164(raw, configured)
                if normalize(raw) != expected:
                    disagreements.append((configured, raw, normalize(raw), expected))

    assert disagreements == []


def test_the_phone_fast_path_is_taken_for_plain_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    # What makes the common case fast: no full parse for these (the answers are checked above).
    normalize = phone_normalizer("US")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("took the full parse")

    monkeypatch.setattr("dedupkit.event.user_data.phonenumbers.parse", refuse)

    assert normalize("+1 (650) 555-1234") == "16505551234"
    assert normalize("(650) 555-1234") == "16505551234"
    assert normalize("+44 7911 123456") == "447911123456"
    assert normalize("+33 6 12 34 56 78") == "33612345678"
