"""What the current request tells about the visitor: IP, user agent, click id, consent.

Pinterest attributes a conversion through ``client_ip_address`` + ``client_user_agent`` and
the ``epik`` click id, so these must be the *browser's* values: the client IP a CDN reports
rather than the CDN's own address, and the page's click id rather than nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from flask import Request

from ..event.user_data import sha256_hex

logger = logging.getLogger("dedupkit")

#: A site's consent hook (``DEDUPKIT_CONSENT``): ``(request) -> True | False | None``.
ConsentHook = Callable[[Request], "bool | None"]
#: A country or region code from a CDN header: ``US``, ``CA``, ``US-CA``.
_GEO_CODE = re.compile(r"^(?:[A-Za-z]{2}-)?([A-Za-z0-9]{1,3})$")

#: Longest click id kept. Observed epik values are ~100 characters of URL-safe Base64.
MAX_CLICK_ID_LENGTH = 512
# URL-safe Base64 plus the few characters a percent-decoded value may carry. Anything else
# (CR, LF, ';', ',', spaces) could split a Set-Cookie header or a cookie value.
_CLICK_ID = re.compile(r"^[A-Za-z0-9._~=+/-]+$")


class Consent(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    UNKNOWN = "unknown"


def clean_click_id(value: str | None) -> str | None:
    """The click id if it is safe to store and send, else ``None``."""
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > MAX_CLICK_ID_LENGTH or not _CLICK_ID.match(value):
        return None
    return value


def click_id_in_url(url: str | None) -> str | None:
    """The ``epik`` query parameter of ``url``, cleaned."""
    if not url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    values = parse_qs(query).get("epik")
    return clean_click_id(values[-1]) if values else None


def client_ip(request: Request, header: str | None) -> str | None:
    """The visitor's IP: the trusted CDN header if configured, else ``remote_addr``.

    ``remote_addr`` is right behind Werkzeug's ``ProxyFix``; trusting ``X-Forwarded-For``
    without it would let any visitor choose their IP. When the configured header is there but
    malformed, the answer is no IP: ``remote_addr`` is then the CDN's own address, and sending
    it as the shopper's would tie every conversion to the CDN.
    """
    if header:
        raw = request.headers.get(header)
        if raw is not None:
            # Some CDNs append hops; the first address is the client's.
            candidate = normalised_ip(raw[:256].split(",")[0])
            if candidate is None:
                _warn_header(header, "holds no IP address")
            elif ipaddress.ip_address(candidate).is_link_local:
                # fe80::1%eth0 names an interface of the CDN's own network, no shopper's.
                _warn_header(header, f"holds a link-local address ({candidate}), no client's")
                return None
            return candidate
    return normalised_ip(request.remote_addr or "")


def normalised_ip(value: str) -> str | None:
    """``value`` as a plain IP address, an IPv6 zone id (``%eth0``) stripped and an
    IPv4-mapped IPv6 address (``::ffff:203.0.113.9``) given as the IPv4 it maps; else ``None``.
    """
    value = value.strip()
    if len(value) > 64:
        return None
    address = value.partition("%")[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 clients this way; Pinterest matches the IPv4 form.
    mapped = parsed.ipv4_mapped if isinstance(parsed, ipaddress.IPv6Address) else None
    return str(mapped or parsed)


_warned_headers: set[tuple[str, str]] = set()


def _warn_header(header: str, problem: str) -> None:
    # Once per header, problem and process: a misconfigured CDN would otherwise log every request.
    key = (header, problem.partition(" (")[0])
    if key not in _warned_headers:
        _warned_headers.add(key)
        logger.warning(
            "the %s header (DEDUPKIT_CLIENT_IP_HEADER) %s; events of such requests are sent "
            "without an IP. Check the CDN sends this header",
            header,
            problem,
        )


def consent_from_hook(hook: ConsentHook | None, request: Request) -> Consent | None:
    """What the site's consent hook says, ``None`` when it has no answer.

    A hook that raises or answers something else than True, False or None is treated as
    having no answer (the cookie decides) and logged: a broken CMP integration must not
    break the page, nor decide for the visitor.
    """
    if hook is None:
        return None
    try:
        answer = hook(request)
    except Exception as exc:
        # The type only: the message of a CMP's exception may carry the visitor's data.
        logger.warning(
            "DEDUPKIT_CONSENT raised %s; using the consent cookie instead", type(exc).__name__
        )
        return None
    if answer is True:
        return Consent.GRANTED
    if answer is False:
        return Consent.DENIED
    if answer is not None:
        logger.warning(
            "DEDUPKIT_CONSENT returned a %s, not True, False or None; using the consent cookie",
            type(answer).__name__,
        )
    return None


def geo_code(value: str | None) -> str | None:
    """A country or region code from a CDN header, lowercase (``US-CA`` gives ``ca``)."""
    if not value:
        return None
    match = _GEO_CODE.match(value.strip()[:16])
    return match.group(1).lower() if match else None


def consent_from_cookie(value: str | None) -> Consent:
    if value == "1":
        return Consent.GRANTED
    if value == "0":
        return Consent.DENIED
    return Consent.UNKNOWN


@dataclass(frozen=True, slots=True)
class Visitor:
    """The request's view of the visitor, read once per request."""

    ip: str | None
    user_agent: str | None
    #: The freshest click id: the URL's ``epik`` if present, else the cookie's.
    click_id: str | None
    #: True when ``click_id`` came from the URL: the cookie must be (re)written.
    click_id_from_url: bool
    #: Pinterest's own first-party visitor cookie, if the tag set one.
    pin_unauth: str | None
    consent: Consent
    #: The browser sent ``Sec-GPC: 1`` (or the page reported ``navigator.globalPrivacyControl``).
    gpc: bool = False
    #: Country and region codes from the CDN's geo headers, lowercase, for LDP.
    country: str | None = None
    region: str | None = None
    #: SHA-256 of ``_pin_unauth``, when the cookie itself is not at hand (a visitor token).
    pin_unauth_sha256: str | None = None
    #: The page the visitor was on, when restored from a visitor token.
    page_url: str | None = None

    @property
    def external_id(self) -> str | None:
        """``sha256(_pin_unauth)``, as Pinterest's own plugins send it."""
        if self.pin_unauth:
            return sha256_hex(self.pin_unauth)
        return self.pin_unauth_sha256

    def with_consent(self, consent: Consent) -> Visitor:
        """The same visitor with another consent state."""
        return self if consent is self.consent else dataclasses.replace(self, consent=consent)

    def may_send(self, require_consent: bool) -> bool:
        """One consent decision for both channels."""
        if self.consent is Consent.DENIED:
            return False
        return self.consent is Consent.GRANTED or not require_consent


def read_visitor(
    request: Request,
    *,
    ip_header: str | None,
    click_cookie: str,
    consent_cookie: str,
    page_url: str | None = None,
    consent_hook: ConsentHook | None = None,
    country_header: str | None = None,
    region_header: str | None = None,
) -> Visitor:
    """Read the visitor from ``request``; ``page_url`` is the page a beacon reports.

    Consent: the site's hook first, then the consent cookie.
    """
    cookie_click = clean_click_id(request.cookies.get(click_cookie))
    url_click = click_id_in_url(page_url) or clean_click_id(request.args.get("epik"))
    consent = consent_from_hook(consent_hook, request)
    if consent is None:
        consent = consent_from_cookie(request.cookies.get(consent_cookie))
    return Visitor(
        ip=client_ip(request, ip_header),
        user_agent=request.headers.get("User-Agent") or None,
        click_id=url_click or cookie_click,
        click_id_from_url=url_click is not None,
        pin_unauth=request.cookies.get("_pin_unauth") or None,
        consent=consent,
        gpc=request.headers.get("Sec-GPC", "").strip() == "1",
        country=geo_code(request.headers.get(country_header)) if country_header else None,
        region=geo_code(request.headers.get(region_header)) if region_header else None,
    )
