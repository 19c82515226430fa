"""The one intake path: ``kit.track()`` and ``POST {prefix}/events`` both end in :func:`record`.

:func:`record` resolves the event name once, builds the event, applies the consent, bot and
identity rules once, checks the result against Pinterest's limits and stores it. It returns a
typed :class:`Recorded`; the route maps it to JSON, ``track()`` returns its event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Response, g, request

from ..errors import ConfigurationError, EventNotAllowed, InvalidEvent
from ..event.limits import check_capi_event
from ..event.model import Event, build_event
from ..event.user_data import has_required_identity
from ..state import State, Stored, get_state
from ..vocabulary import SkipReason
from . import privacy, tickets
from .bots import MAX_CHARS, explain, is_bot, user_agent_family
from .visitor import Consent, Visitor, read_visitor

logger = logging.getLogger("dedupkit")

#: One year, the lifetime Pinterest's partners give the click id cookie.
COOKIE_MAX_AGE = 365 * 24 * 3600


class IntakeOutcome(str, enum.Enum):
    """What became of a recorded event; also :attr:`dedupkit.event.Event.outcome`."""

    QUEUED = "queued"
    #: The same (name, event_id) was stored before: sent once.
    DUPLICATE = "duplicate"
    #: Deliberately not sent; :attr:`Recorded.reason` says why.
    SKIPPED = "skipped"
    #: The outbox failed: the event waits in memory and is written when it works again.
    KEPT_IN_MEMORY = "kept_in_memory"
    #: ``DEDUPKIT_ENABLED`` is off: nothing is sent.
    DISABLED = "disabled"

    def __str__(self) -> str:  # "queued" in a template or an f-string, as on Python 3.11+'s StrEnum
        return str(self.value)


@dataclass(frozen=True, slots=True)
class Recorded:
    """The event as built (for the tag) and what became of it on the API channel."""

    event: Event
    outcome: IntakeOutcome
    reason: SkipReason | None = None

    @property
    def status(self) -> str:
        """The word the events route answers with, e.g. ``queued`` or ``skipped: bot``."""
        if self.reason is not None:
            return f"{self.outcome.value}: {self.reason.value}"
        return self.outcome.value


@dataclass(frozen=True, slots=True)
class Submission:
    """One event as a caller describes it, before anything is checked.

    :param data: event data in the tag's vocabulary.
    :param user: raw PII and clear identity fields from the caller; beats the request's.
    :param from_browser: reported by a beacon: only :attr:`State.browser_events` may be.
    :param page_click_id: the click id the page saw, used when the request has none.
    :param page_consent: the page granted consent (a drop-in page on another site).
    :param ticket: the server's signed permission for an event outside ``BROWSER_EVENTS``.
    :param page_gpc: the page reported ``navigator.globalPrivacyControl``.
    :param tag: a beacon's tag flag (see :func:`dedupkit.evidence.tag_flag`), stored in the
        same write as the event's outcome.
    :param must_store: no page waits on this event (a webhook, a worker): when it can be
        neither stored nor kept in memory, :func:`record` raises
        :class:`~dedupkit.errors.OutboxError` so that the caller can retry.
    """

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    event_time: int | float | dt.datetime | None = None
    event_source_url: str | None = None
    user: Mapping[str, Any] = field(default_factory=dict)
    from_browser: bool = False
    page_click_id: str | None = None
    page_consent: bool = False
    ticket: str | None = None
    page_gpc: bool = False
    tag: bool | None = None
    must_store: bool = False


def record(
    state: State, submission: Submission, visitor: Visitor | None, *, transaction: Any = None
) -> Recorded:
    """Build, check and store one event; the only way an event enters the outbox.

    :param visitor: the request's visitor, ``None`` outside a request (a worker, a webhook).
    :param transaction: a SQLAlchemy session or connection to store the event in (see
        :meth:`State.store_in`); ``None`` stores it on its own.
    :raises UnknownEventName: for a name that is no Pinterest, custom or advertiser event.
    :raises EventNotAllowed: for a browser-reported event outside ``BROWSER_EVENTS`` that
        carries no ticket; :class:`~dedupkit.intake.tickets.TicketRefused` for a ticket that is
        forged, expired or signed for another event (any event that carries one).
    :raises InvalidEvent: for malformed data, naming the field; outside a request also for
        an event without the identity Pinterest needs.
    :raises OutboxError: with ``submission.must_store``, when the event could be neither
        stored nor kept.
    """
    name = state.names.resolve(submission.name)
    if (
        submission.from_browser
        and name.capi not in state.browser_events
        and submission.ticket is None
    ):
        # Purchases and sign-ups must come from the server, which knows they happened;
        # otherwise anyone could post conversions.
        raise EventNotAllowed(
            f"event {name.capi!r} cannot be reported from the browser without a ticket: "
            "pass {ticket: …} from kit.ticket(), track it on the server with kit.track(), "
            "or add it to DEDUPKIT_BROWSER_EVENTS"
        )
    user = visitor_user_data(visitor, state.settings.hash_pin_unauth) if visitor else {}
    if submission.page_click_id and "click_id" not in user:
        # A page on another subdomain sees a cookie this host cannot: trust what it saw.
        user["click_id"] = submission.page_click_id
    user.update(submission.user)
    gpc = submission.page_gpc or (visitor is not None and visitor.gpc)
    treatment = privacy.treatment(state.settings.gpc, gpc)
    data: Mapping[str, Any] = submission.data
    if treatment is privacy.Treatment.LDP:
        data = privacy.ldp_data(data)
        user = privacy.ldp_user(user, visitor)
    event = build_event(
        name,  # resolved above: not looked up again
        data,
        names=state.names,
        hasher=state.hasher,
        event_id=submission.event_id,
        event_time=submission.event_time,
        event_source_url=submission.event_source_url,
        user=user,
        partner_name=state.settings.partner_name,
        require_identity=False,
    )
    if submission.ticket is not None:
        _check_ticket(state, submission.ticket, event)
    if not state.enabled:
        return _recorded(event, IntakeOutcome.DISABLED)
    reason = (
        SkipReason.GPC_OPT_OUT
        if treatment is privacy.Treatment.OPT_OUT
        else _skip_reason(state, event, visitor, submission.page_consent)
    )
    if reason is not None:
        state.record_skip(
            reason, event_name=event.capi_name, event_id=event.event_id, tag=submission.tag
        )
        return _recorded(event, IntakeOutcome.SKIPPED, reason)
    # Nothing Pinterest would refuse enters a batch: one such event fails the whole request.
    payload = event.to_capi()
    check_capi_event(payload)
    if transaction is not None:
        stored = state.store_in(transaction, payload, tag=submission.tag)
    else:
        stored = state.store(payload, tag=submission.tag, must_keep=submission.must_store)
    return _recorded(event, _OUTCOMES[stored])


def _recorded(event: Event, outcome: IntakeOutcome, reason: SkipReason | None = None) -> Recorded:
    # The caller of kit.track() gets the event back: it says what became of it.
    told = dataclasses.replace(event, outcome=outcome, skipped=reason)
    return Recorded(told, outcome, reason)


def _check_ticket(state: State, ticket: str, event: Event) -> None:
    try:
        keys = state.signing_keys()
    except ConfigurationError:
        logger.warning("a beacon carried a ticket but no signing key is set (DEDUPKIT_SECRET_KEY)")
        raise tickets.TicketRefused("this server cannot verify tickets") from None
    tickets.verify(keys, ticket, event)


_OUTCOMES = {
    Stored.QUEUED: IntakeOutcome.QUEUED,
    Stored.DUPLICATE: IntakeOutcome.DUPLICATE,
    Stored.KEPT_IN_MEMORY: IntakeOutcome.KEPT_IN_MEMORY,
}


def _skip_reason(
    state: State, event: Event, visitor: Visitor | None, page_consent: bool
) -> SkipReason | None:
    if visitor is not None:
        consent = visitor.consent
        if consent is Consent.UNKNOWN and page_consent:
            consent = Consent.GRANTED
        if not visitor.with_consent(consent).may_send(state.settings.require_consent):
            return SkipReason.NO_CONSENT
        if state.settings.bot_filter and _is_bot(state, visitor.user_agent):
            _warn_bot_skip(visitor.user_agent, event)
            return SkipReason.BOT
    if has_required_identity(event.user_data):
        return None
    if visitor is None:
        # Outside a request the caller forgot to say who the visitor is: a programming error.
        raise InvalidEvent(
            f"event {event.capi_name!r} needs an email, a mobile ad id, or both the client IP "
            "and user agent in user data (Pinterest rejects it otherwise)"
        )
    # In a request a missing IP or user agent marks a non-browser: skipped, not raised.
    logger.warning(
        "not sending %s %s: no email, mobile ad id, or client IP and user agent",
        event.capi_name,
        event.event_id,
    )
    return SkipReason.NO_IDENTITY


def _is_bot(state: State, user_agent: str | None) -> bool:
    if not is_bot(user_agent):
        return False
    allow = state.settings.bot_allow_regex
    return allow is None or user_agent is None or not allow.search(user_agent[:MAX_CHARS])


#: Families of user agents already warned about in this process, and how many at most: a
#: flood of made-up user agents must neither fill memory nor the log.
_WARNED_FAMILIES: set[str] = set()
MAX_WARNED_FAMILIES = 1000
_warned_lock = threading.Lock()


def _warn_bot_skip(user_agent: str | None, event: Event) -> None:
    """Log the first bot skip of each family of user agents (``curl/…``, ``Googlebot/…``)."""
    family = user_agent_family(user_agent)
    with _warned_lock:
        if family in _WARNED_FAMILIES or len(_WARNED_FAMILIES) >= MAX_WARNED_FAMILIES:
            return
        _WARNED_FAMILIES.add(family)
    shown = (user_agent or "")[:200]
    logger.warning(
        "not sending %s %s to the Conversions API: its user agent %r looks like a bot (%s). "
        "Later events from this kind of user agent are skipped without a word. If it is a "
        "shopper, add a pattern for it to DEDUPKIT_BOT_ALLOW and report the user agent; "
        "DEDUPKIT_BOT_FILTER = False sends every visitor's events",
        event.capi_name,
        event.event_id,
        shown,
        explain(user_agent),
    )


def current_visitor(state: State, page_url: str | None = None) -> Visitor:
    """The visitor of the current request, read once per request (and page URL)."""
    cache: dict[str | None, Visitor] = g.setdefault("_dedupkit_visitors", {})
    if page_url not in cache:
        s = state.settings
        cache[page_url] = read_visitor(
            # The request itself, not the proxy: every attribute read through the proxy costs
            # a context lookup, and the visitor reads a dozen.
            request._get_current_object(),  # type: ignore[attr-defined]
            ip_header=s.client_ip_header,
            click_cookie=s.click_id_cookie,
            consent_cookie=s.consent_cookie,
            page_url=page_url,
            consent_hook=s.consent,
            country_header=s.geo_country_header,
            region_header=s.geo_region_header,
        )
    return cache[page_url]


def visitor_user_data(visitor: Visitor, hash_pin_unauth: bool) -> dict[str, Any]:
    """The clear user-data fields a request provides."""
    data: dict[str, Any] = {
        "client_ip_address": visitor.ip,
        "client_user_agent": visitor.user_agent,
        "click_id": visitor.click_id,
    }
    if hash_pin_unauth and visitor.external_id:
        # Pinterest's own Magento and Salesforce plugins send sha256(_pin_unauth) as
        # external_id: it ties server events to the tag's anonymous visitor.
        data["external_id"] = visitor.external_id
    return {k: v for k, v in data.items() if v}


def set_click_id_cookie(response: Response, state: State, click_id: str) -> None:
    """Write the click id as a server cookie, which ITP does not cap like a JS cookie."""
    response.set_cookie(
        state.settings.click_id_cookie,
        click_id,
        max_age=COOKIE_MAX_AGE,
        path="/",
        domain=state.settings.cookie_domain,
        secure=request.is_secure,
        httponly=False,  # Pinterest's tag reads it
        samesite="Lax",
    )


def remember_click_id(response: Response) -> Response:
    """``after_request``: keep a landing page's ``epik`` in the first-party cookie, and say
    which CDN geo headers the page's HTML depended on (``dedupkit.head()`` with LDP)."""
    for header in sorted(g.get("_dedupkit_vary", ())):
        response.vary.add(header)
    if "epik" in request.args:
        state = get_state()
        visitor = current_visitor(state)
        if visitor.click_id and visitor.click_id_from_url:
            set_click_id_cookie(response, state, visitor.click_id)
    return response


def start_delivery() -> None:
    """``before_request``: on any request, not only the first tracked event, so that events
    a crashed process left in the outbox go out even if no new event comes in."""
    get_state().start_delivery()
