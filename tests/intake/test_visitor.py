"""The visitor as the request shows it: click id, client IP, user agent, consent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request

from dedupkit.intake.visitor import (
    MAX_CLICK_ID_LENGTH,
    Consent,
    Visitor,
    clean_click_id,
    click_id_in_url,
    client_ip,
    consent_from_cookie,
    read_visitor,
)

from ..support.agents import CHROME_UA

#: The spec's example click id: URL-safe Base64 (pinterest.md §9).
EPIK = (
    "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0yJm49cnNBQ3F2Q2dOVDBXWWhkWklrUGxBUSZ0"
    "PUFBQUFBR1BaY3Bv"
)
OLDER_EPIK = "dj0yJnU9b2xkZXI"
CDN_HEADER = "CF-Connecting-IP"


@pytest.fixture(scope="module")
def app() -> Flask:
    return Flask("visitor-tests")


@pytest.fixture
def make_request(app: Flask) -> Iterator[Any]:
    """Push a request context built from test_request_context(...) arguments."""
    contexts: list[Any] = []

    def push(*args: Any, **kwargs: Any) -> Any:
        ctx = app.test_request_context(*args, **kwargs)
        ctx.push()
        contexts.append(ctx)
        return request

    yield push
    for ctx in reversed(contexts):
        ctx.pop()


# clean_click_id


@pytest.mark.parametrize(
    "value",
    [
        EPIK,
        "dj0yJnU9b2JD",
        "abc-_DEF123",
        "dj0yJnU9b2JDcFFH==",
        "a" * MAX_CLICK_ID_LENGTH,
    ],
)
def test_a_url_safe_base64_click_id_is_kept(value: str) -> None:
    assert clean_click_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "abc\r\nSet-Cookie: admin=1",
        "abc\ndef",
        "abc\rdef",
        "abc;def",
        "abc; Path=/",
        "abc def",
        "abc,def",
        'abc"def',
        "abc\x00def",
        "<script>",
        "a" * (MAX_CLICK_ID_LENGTH + 1),
        "",
        "   ",
        None,
    ],
)
def test_an_unsafe_or_over_long_click_id_is_rejected(value: str | None) -> None:
    assert clean_click_id(value) is None


@pytest.mark.parametrize("value", [f"{EPIK}\r\n", f"\n{EPIK}", f" {EPIK} "])
def test_a_cleaned_click_id_never_carries_line_breaks_or_spaces(value: str) -> None:
    # Surrounding white space is trimmed; the id itself is kept whole.
    assert clean_click_id(value) == EPIK


# click_id_in_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://shop.example/p/1?epik={EPIK}", EPIK),
        (f"https://shop.example/p/1?utm_source=pinterest&epik={EPIK}&x=1", EPIK),
        ("https://shop.example/p/1?epik=abc%3D%3D", "abc=="),
        ("https://shop.example/p/1?epik=abc%3Bdef", None),
        ("https://shop.example/p/1?epik=abc%0D%0ASet-Cookie:x", None),
        ("https://shop.example/p/1?epik=", None),
        ("https://shop.example/p/1?utm_source=pinterest", None),
        (f"https://shop.example/p/1#epik={EPIK}", None),
        (f"/p/1?epik={EPIK}", EPIK),
        ("http://[::1/p?epik=abc", None),
        ("", None),
        (None, None),
    ],
)
def test_click_id_in_url_reads_the_epik_query_parameter(url: str | None, expected: str) -> None:
    assert click_id_in_url(url) == expected


# client_ip


@pytest.mark.parametrize(
    ("header_value", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, 198.51.100.2, 10.0.0.1", "203.0.113.7"),
        (" 203.0.113.7 ,198.51.100.2", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8::1%eth0", "2001:db8::1"),
        # A dual-stack socket's form of an IPv4 client: Pinterest matches the IPv4 one.
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("::ffff:cb00:7109", "203.0.113.9"),
        # A malformed header means no IP: REMOTE_ADDR is then the CDN's own address.
        ("not-an-ip", None),
        ("203.0.113.7:4711", None),
        ("", None),
        ("unknown, 203.0.113.7", None),
        ("1" * 5000, None),
    ],
)
def test_client_ip_trusts_the_configured_cdn_header(
    make_request: Any, header_value: str, expected: str | None
) -> None:
    req = make_request(headers={CDN_HEADER: header_value}, environ_base={"REMOTE_ADDR": "10.0.0.1"})

    assert client_ip(req, CDN_HEADER) == expected


def test_a_malformed_cdn_header_warns_once_and_never_sends_the_proxy_ip(
    make_request: Any, caplog: pytest.LogCaptureFixture
) -> None:
    header = "X-Malformed-Test-IP"
    for _ in range(3):
        req = make_request(headers={header: "junk"}, environ_base={"REMOTE_ADDR": "10.0.0.1"})
        assert client_ip(req, header) is None
    assert caplog.text.count("X-Malformed-Test-IP header (DEDUPKIT_CLIENT_IP_HEADER)") == 1


@pytest.mark.parametrize("link_local", ["fe80::1%eth0", "FE80::abcd:1", "169.254.10.1"])
def test_a_link_local_address_in_the_cdn_header_is_no_client_address(
    make_request: Any, caplog: pytest.LogCaptureFixture, link_local: str
) -> None:
    header = f"X-Link-Local-{link_local.replace(':', '').replace('%', '').replace('.', '')}"
    for _ in range(2):
        req = make_request(headers={header: link_local}, environ_base={"REMOTE_ADDR": "10.0.0.1"})
        assert client_ip(req, header) is None
    [warning] = [r.getMessage() for r in caplog.records if header in r.getMessage()]
    assert "link-local address" in warning and "no client's" in warning


def test_an_ipv4_mapped_remote_addr_is_sent_as_ipv4(make_request: Any) -> None:
    req = make_request(environ_base={"REMOTE_ADDR": "::ffff:203.0.113.9"})

    assert client_ip(req, None) == "203.0.113.9"


def test_client_ip_falls_back_to_remote_addr_when_the_header_is_missing(make_request: Any) -> None:
    req = make_request(environ_base={"REMOTE_ADDR": "10.0.0.1"})

    assert client_ip(req, CDN_HEADER) == "10.0.0.1"


def test_client_ip_ignores_the_header_when_none_is_configured(make_request: Any) -> None:
    req = make_request(
        headers={CDN_HEADER: "203.0.113.7", "X-Forwarded-For": "198.51.100.2"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )

    assert client_ip(req, None) == "10.0.0.1"


@pytest.mark.parametrize(
    ("remote_addr", "expected"),
    [("2001:db8::42", "2001:db8::42"), ("192.0.2.1", "192.0.2.1"), ("garbage", None)],
)
def test_client_ip_keeps_remote_addr_as_is(
    make_request: Any, remote_addr: str, expected: str | None
) -> None:
    req = make_request(environ_base={"REMOTE_ADDR": remote_addr})

    assert client_ip(req, None) == expected


# Consent


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        ("1", Consent.GRANTED),
        ("0", Consent.DENIED),
        (None, Consent.UNKNOWN),
        ("", Consent.UNKNOWN),
        ("yes", Consent.UNKNOWN),
        ("10", Consent.UNKNOWN),
    ],
)
def test_consent_from_cookie(cookie: str | None, expected: Consent) -> None:
    assert consent_from_cookie(cookie) is expected


@pytest.mark.parametrize(
    ("consent", "require_consent", "may_send"),
    [
        (Consent.GRANTED, False, True),
        (Consent.GRANTED, True, True),
        (Consent.UNKNOWN, False, True),
        (Consent.UNKNOWN, True, False),
        # A stored "no" holds even where consent is not required.
        (Consent.DENIED, False, False),
        (Consent.DENIED, True, False),
    ],
)
def test_one_consent_decision_rules_sending(
    consent: Consent, require_consent: bool, may_send: bool
) -> None:
    visitor = Visitor(
        ip=None,
        user_agent=None,
        click_id=None,
        click_id_from_url=False,
        pin_unauth=None,
        consent=consent,
    )

    assert visitor.may_send(require_consent) is may_send


# read_visitor


def read(req: Any, page_url: str | None = None) -> Visitor:
    return read_visitor(
        req,
        ip_header=CDN_HEADER,
        click_cookie="_epik",
        consent_cookie="_dedupkit_consent",
        page_url=page_url,
    )


def test_read_visitor_reads_everything_from_the_request(make_request: Any) -> None:
    req = make_request(
        "/thanks",
        headers={
            "User-Agent": CHROME_UA,
            CDN_HEADER: "203.0.113.7",
            "Cookie": f"_epik={OLDER_EPIK}; _pin_unauth=dWlkPTEyMw; _dedupkit_consent=1",
        },
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )

    assert read(req) == Visitor(
        ip="203.0.113.7",
        user_agent=CHROME_UA,
        click_id=OLDER_EPIK,
        click_id_from_url=False,
        pin_unauth="dWlkPTEyMw",
        consent=Consent.GRANTED,
    )


def test_the_epik_in_the_request_url_beats_the_cookie(make_request: Any) -> None:
    req = make_request(f"/p/1?epik={EPIK}", headers={"Cookie": f"_epik={OLDER_EPIK}"})

    visitor = read(req)

    assert (visitor.click_id, visitor.click_id_from_url) == (EPIK, True)


def test_the_epik_in_the_reported_page_url_beats_the_cookie(make_request: Any) -> None:
    # A beacon posts to /dedupkit/events; the landing page it reports carries the epik.
    req = make_request("/dedupkit/events", method="POST", headers={"Cookie": f"_epik={OLDER_EPIK}"})

    visitor = read(req, page_url=f"https://shop.example/p/1?epik={EPIK}")

    assert (visitor.click_id, visitor.click_id_from_url) == (EPIK, True)


def test_the_reported_page_url_beats_the_request_url(make_request: Any) -> None:
    req = make_request(f"/dedupkit/events?epik={OLDER_EPIK}", method="POST")

    visitor = read(req, page_url=f"https://shop.example/p/1?epik={EPIK}")

    assert (visitor.click_id, visitor.click_id_from_url) == (EPIK, True)


def test_the_epik_in_the_url_is_used_without_a_cookie(make_request: Any) -> None:
    visitor = read(make_request(f"/p/1?epik={EPIK}"))

    assert (visitor.click_id, visitor.click_id_from_url) == (EPIK, True)


def test_an_unsafe_epik_in_the_url_falls_back_to_the_cookie(make_request: Any) -> None:
    req = make_request("/p/1?epik=abc%3Bdef", headers={"Cookie": f"_epik={OLDER_EPIK}"})

    visitor = read(req)

    assert (visitor.click_id, visitor.click_id_from_url) == (OLDER_EPIK, False)


def test_an_unsafe_cookie_gives_no_click_id(make_request: Any) -> None:
    req = make_request("/p/1", headers={"Cookie": '_epik="abc def"'})

    visitor = read(req)

    assert (visitor.click_id, visitor.click_id_from_url) == (None, False)


def test_a_bare_request_gives_an_anonymous_visitor(make_request: Any) -> None:
    req = make_request("/", environ_base={"REMOTE_ADDR": "10.0.0.1"})

    assert read(req) == Visitor(
        ip="10.0.0.1",
        user_agent=None,
        click_id=None,
        click_id_from_url=False,
        pin_unauth=None,
        consent=Consent.UNKNOWN,
    )


@pytest.mark.parametrize(("cookie", "expected"), [("0", Consent.DENIED), ("1", Consent.GRANTED)])
def test_read_visitor_reads_consent_from_its_cookie(
    make_request: Any, cookie: str, expected: Consent
) -> None:
    req = make_request("/", headers={"Cookie": f"_dedupkit_consent={cookie}"})

    assert read(req).consent is expected
