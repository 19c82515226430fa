"""Visitor tokens: what Pinterest matches a conversion on, carried to a webhook.

A hosted checkout (Stripe Checkout, PayPal, a payment link) confirms the purchase in a webhook,
a request from the payment provider: no click id, no IP, no user agent of the shopper. Inside
the shopper's own request :func:`capture` (``kit.visitor_token()``) signs those (click id, IP,
user agent, SHA-256 of ``_pin_unauth``, consent and GPC, geo codes, page URL, time) into one
URL-safe string of at most :data:`MAX_TOKEN_LENGTH` characters, which fits a Stripe metadata
value; :func:`restore` turns it back into the :class:`~dedupkit.intake.visitor.Visitor` that
``kit.track(…, visitor=token)`` tracks as.
"""

from __future__ import annotations

import time
from typing import Any

from itsdangerous import BadSignature

from ..errors import InvalidEvent
from ..signing import serializer
from .visitor import Consent, Visitor, clean_click_id, normalised_ip

#: Keeps a visitor token from verifying as a ticket or a session, and the other way round.
SALT = "dedupkit.visitor.v1"
#: Stripe's limit for one metadata value.
MAX_TOKEN_LENGTH = 500
#: How long a token is accepted: Pinterest accepts conversions up to 7 days after the event.
DEFAULT_MAX_AGE = 7 * 24 * 3600
#: Longest user agent kept; real ones are under 300 characters.
MAX_USER_AGENT_LENGTH = 512
_VERSION = 1
_CONSENT = {Consent.GRANTED: "g", Consent.DENIED: "d", Consent.UNKNOWN: "u"}
_CONSENT_BACK = {letter: consent for consent, letter in _CONSENT.items()}


class InvalidVisitorToken(InvalidEvent):
    """The visitor token is forged, damaged or expired."""


def capture(
    keys: tuple[bytes, ...], visitor: Visitor, page_url: str | None, *, now: float | None = None
) -> str:
    """The signed token for ``visitor``, at most :data:`MAX_TOKEN_LENGTH` characters.

    When everything does not fit, the least useful parts go first: the page URL's query,
    the page URL, the ``_pin_unauth`` hash, then the user agent's tail.
    """
    fields: list[Any] = [
        _VERSION,
        int(time.time() if now is None else now),
        visitor.click_id,
        visitor.ip,
        (visitor.user_agent or "")[:MAX_USER_AGENT_LENGTH] or None,
        visitor.external_id,
        _CONSENT[visitor.consent],
        1 if visitor.gpc else 0,
        visitor.country,
        visitor.region,
        page_url,
    ]
    sign = serializer(keys, SALT).dumps
    token = sign(fields)
    for shrink in (_drop_query, _drop_page, _drop_pin, _cut_user_agent):
        while len(token) > MAX_TOKEN_LENGTH and shrink(fields):
            token = sign(fields)
    if len(token) > MAX_TOKEN_LENGTH:  # a 500-character click id; nothing left to drop
        fields[2] = None
        token = sign(fields)
    return token


def restore(
    keys: tuple[bytes, ...],
    token: object,
    *,
    max_age: float = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> Visitor:
    """The visitor ``token`` was captured from.

    :raises InvalidVisitorToken: for a token altered, truncated, signed with another key,
        expired, or not a token at all.
    """
    if not isinstance(token, str) or not token or len(token) > 2 * MAX_TOKEN_LENGTH:
        raise InvalidVisitorToken("visitor must be the string kit.visitor_token() returned")
    try:
        fields = serializer(keys, SALT).loads(token)
    except BadSignature:
        raise InvalidVisitorToken(
            "visitor token is invalid (altered, truncated or signed with another key)"
        ) from None
    except Exception:  # a valid signature over bytes that are not ours
        raise InvalidVisitorToken("visitor token is invalid") from None
    if not _well_formed(fields):
        raise InvalidVisitorToken("visitor token is invalid (unknown format)")
    _, captured, click_id, ip, user_agent, pin_hash, consent, gpc, country, region, page = fields
    age = (time.time() if now is None else now) - captured
    if age > max_age:
        days = max_age / 86400
        raise InvalidVisitorToken(
            f"visitor token expired: captured more than {days:g} days ago, too late for "
            "Pinterest to attribute the conversion"
        )
    return Visitor(
        ip=normalised_ip(ip) if ip else None,
        user_agent=user_agent,
        click_id=clean_click_id(click_id),
        click_id_from_url=False,
        pin_unauth=None,
        consent=_CONSENT_BACK[consent],
        gpc=bool(gpc),
        country=country,
        region=region,
        pin_unauth_sha256=pin_hash,
        page_url=page,
    )


def _well_formed(fields: object) -> bool:
    if not isinstance(fields, list) or len(fields) != 11 or fields[0] != _VERSION:
        return False
    texts = [fields[i] for i in (2, 3, 4, 5, 8, 9, 10)]
    return (
        type(fields[1]) is int
        and all(v is None or isinstance(v, str) for v in texts)
        and fields[6] in _CONSENT_BACK
        and fields[7] in (0, 1)
    )


def _drop_query(fields: list[Any]) -> bool:
    page = fields[10]
    if page and "?" in page:
        fields[10] = page.partition("?")[0]
        return True
    return False


def _drop_page(fields: list[Any]) -> bool:
    if fields[10]:
        fields[10] = None
        return True
    return False


def _drop_pin(fields: list[Any]) -> bool:
    if fields[5]:
        fields[5] = None
        return True
    return False


def _cut_user_agent(fields: list[Any]) -> bool:
    # Pinterest matches on IP + user agent; a cut one still beats none. Cut in steps of 32.
    user_agent = fields[4]
    if user_agent and len(user_agent) > 64:
        fields[4] = user_agent[:-32]
        return True
    return False
