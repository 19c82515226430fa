"""Signed tickets: the server's permission for the browser to report one conversion.

The events endpoint is public, so the browser may report on its own only the events in
``DEDUPKIT_BROWSER_EVENTS`` (views and intents, never money). A single-page checkout confirms
a purchase in the browser; for it the server mints a ticket with :func:`mint` (``kit.ticket``)
that binds the event name, ``event_id``, value, currency and order id, and expires. The beacon
carries it, and :func:`verify` accepts the event only if every signed field matches exactly.
The outbox's (name, event_id) idempotency makes one ticket worth at most one conversion.

A ticket reads ``<event_id>~<signed claims>``: the browser snippet takes the event id from it
(``dedupkit.track('checkout', data, {ticket: t})`` needs nothing more), and fires the tag
with the id the server will verify. Only the signed copy counts: an altered prefix is refused.

The signing keys (also used by :mod:`dedupkit.intake.visitor_token`, with another salt) are
``DEDUPKIT_SECRET_KEY`` or the app's ``SECRET_KEY``, plus fallbacks that still verify.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from itsdangerous import BadSignature

from ..errors import EventNotAllowed
from ..event.data import to_custom_data
from ..event.model import Event
from ..event.names import EventNames
from ..signing import serializer

#: Keeps a ticket from verifying as anything else signed with the same key.
SALT = "dedupkit.ticket.v1"
#: A ticket's default lifetime: the checkout page hands it to the script that reports it.
DEFAULT_EXPIRES_IN = 3600
#: Longest lifetime: Pinterest deduplicates within 48 hours; a ticket older is a liability.
MAX_EXPIRES_IN = 48 * 3600
#: Longest ticket read: a real one is under 300 characters; this admits the longest event_id
#: and order id there are, twice (in the clear and signed).
MAX_TICKET_LENGTH = 2048
#: Between the event id in the clear and the signed claims (no signed text has one).
ID_SEPARATOR = "~"
#: Format of the signed list, its first item.
_VERSION = 1


class TicketRefused(EventNotAllowed):
    """The ticket is missing, forged, expired, or signed for another event (answered 403)."""


@dataclass(frozen=True, slots=True)
class Claims:
    """What a ticket binds, in the event's CAPI form (value as a decimal string)."""

    name: str
    event_id: str
    order_id: str | None
    value: str | None
    currency: str | None

    def mismatch(self, event: Event) -> str | None:
        """The first signed field ``event`` differs in, or ``None``."""
        custom = event.custom_data
        actual = {
            "event_name": event.capi_name,
            "event_id": event.event_id,
            "order_id": custom.get("order_id"),
            "value": custom.get("value"),
            "currency": custom.get("currency"),
        }
        signed = {
            "event_name": self.name,
            "event_id": self.event_id,
            "order_id": self.order_id,
            "value": self.value,
            "currency": self.currency,
        }
        return next((key for key in signed if not _same(key, signed[key], actual[key])), None)


def _same(key: str, signed: Any, actual: Any) -> bool:
    if key == "value" and signed is not None and actual is not None:
        return Decimal(signed) == Decimal(actual)  # "24.130" is 24.13: one amount
    return bool(signed == actual)


def mint(
    keys: tuple[bytes, ...],
    names: EventNames,
    name: str,
    *,
    order_id: str | int,
    value: Any = None,
    currency: str | None = None,
    event_id: str | None = None,
    expires_in: float = DEFAULT_EXPIRES_IN,
    now: float | None = None,
) -> str:
    """A ticket for one event the browser will report.

    :param event_id: default ``"<capi name>-<order id>"``, the id ``kit.track`` gives the
        same order, so a page and a server that both report it send one conversion.
    :raises InvalidEvent: for an unknown name, or a value, currency or order id the event
        itself would refuse.
    :raises ValueError: for ``expires_in`` outside (0, :data:`MAX_EXPIRES_IN`].
    """
    if not 0 < expires_in <= MAX_EXPIRES_IN:
        raise ValueError(f"expires_in must be between 0 and {MAX_EXPIRES_IN} seconds")
    capi_name = names.resolve(name).capi
    custom = to_custom_data({"order_id": order_id, "value": value, "currency": currency})
    claims = Claims(
        capi_name,
        event_id or f"{capi_name}-{custom['order_id']}",
        custom.get("order_id"),
        custom.get("value"),
        custom.get("currency"),
    )
    expires = int((time.time() if now is None else now) + expires_in)
    fields = [claims.name, claims.event_id, claims.order_id, claims.value, claims.currency]
    signed = serializer(keys, SALT).dumps([_VERSION, *fields, expires])
    return f"{claims.event_id}{ID_SEPARATOR}{signed}"


def event_id_of(ticket: str) -> str | None:
    """The event id a ticket shows in the clear (what the snippet reads), unverified."""
    shown, separator, _ = ticket.rpartition(ID_SEPARATOR)
    return shown if separator else None


def verify(
    keys: tuple[bytes, ...], ticket: object, event: Event, *, now: float | None = None
) -> Claims:
    """The ticket's claims, if it is genuine, unexpired and signed for ``event``.

    :raises TicketRefused: naming what is wrong (the field that differs, for a mismatch).
    """
    claims, expires = _read(keys, ticket)
    if (time.time() if now is None else now) > expires:
        raise TicketRefused("ticket expired: ask the server for a new one (kit.ticket)")
    field = claims.mismatch(event)
    if field is not None:
        raise TicketRefused(f"ticket does not match the event: {field} differs from the signed one")
    return claims


def _read(keys: tuple[bytes, ...], ticket: object) -> tuple[Claims, int]:
    if not isinstance(ticket, str) or not ticket or len(ticket) > MAX_TICKET_LENGTH:
        raise TicketRefused("ticket must be the string kit.ticket() returned")
    # Tickets minted before the id was shown in the clear are the signed part alone.
    shown = event_id_of(ticket)
    try:
        signed = serializer(keys, SALT).loads(ticket.rpartition(ID_SEPARATOR)[2])
    except BadSignature:
        raise TicketRefused(
            "ticket is invalid (altered, truncated or signed with another key)"
        ) from None
    except Exception:  # a valid signature over bytes that are not ours: zlib, JSON, …
        raise TicketRefused("ticket is invalid") from None
    if not _well_formed(signed):
        raise TicketRefused("ticket is invalid (unknown format)")
    _, name, event_id, order_id, value, currency, expires = signed
    if shown is not None and shown != event_id:
        raise TicketRefused("ticket is invalid (its event_id was altered)")
    return Claims(name, event_id, order_id, value, currency), expires


def _well_formed(signed: object) -> bool:
    if not isinstance(signed, list) or len(signed) != 7 or signed[0] != _VERSION:
        return False
    texts: Sequence[object] = signed[1:3]
    optional: Sequence[object] = signed[3:6]
    return (
        all(isinstance(v, str) for v in texts)
        and all(v is None or isinstance(v, str) for v in optional)
        and type(signed[6]) is int
    )
