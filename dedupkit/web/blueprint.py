"""The routes: the browser snippet, the endpoint its beacons report to, and the dedup ledger.

Beacons carry no CSRF token: apps using Flask-WTF's ``CSRFProtect`` must
``csrf.exempt(blueprint)``. Bad input gets a 4xx with a JSON reason, never a 5xx. The events
route is public: each client IP is rate limited (``DEDUPKIT_RATE_LIMIT``), its body parsed with
bounds (:mod:`dedupkit.intake.beacon`), and conversions need a signed ticket
(:mod:`dedupkit.intake.tickets`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, NoReturn

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import BeaconRefused, EventNotAllowed, InvalidEvent
from ..event.page_url import MAX_INPUT_LENGTH
from ..intake.beacon import MAX_BODY_BYTES, parse_beacon
from ..intake.evidence import is_evidence, record_evidence, tag_flag
from ..intake.record import IntakeOutcome, Submission, current_visitor, record, set_click_id_cookie
from ..intake.visitor import clean_click_id, client_ip
from ..ledger import metrics
from ..ledger.page import debug as ledger_view
from ..ratelimit import retry_after
from ..state import State, get_state
from .assets import snippet

#: Where init_app keeps the app's events rate limiter (``None`` when the limit is off).

logger = logging.getLogger("dedupkit")

# The templates sit at the package root (dedupkit/templates), shared by the ledger.
blueprint = Blueprint("dedupkit", __name__, template_folder="../templates")

#: How far a browser clock may be ahead before the server's time is used instead.
MAX_CLOCK_AHEAD = 60


@blueprint.get("/dedupkit.js")
def script() -> Response:
    data, version = snippet()
    response = Response(data, mimetype="application/javascript")
    response.set_etag(version)
    # Versioned URLs (from dedupkit.head()) never change; bare drop-in URLs revalidate hourly.
    immutable = request.args.get("v") == version
    response.cache_control.public = True
    response.cache_control.max_age = 31536000 if immutable else 3600
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.make_conditional(request)
    return response


@blueprint.errorhandler(BeaconRefused)
def beacon_refused(exc: BeaconRefused) -> Response:
    response = jsonify(error=exc.description)
    response.status_code = exc.code or 400
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return _with_cors(response)


@blueprint.errorhandler(HTTPException)
def json_error(exc: HTTPException) -> Response:
    response = jsonify(error=exc.description)
    response.status_code = exc.code or 400
    return response


@blueprint.errorhandler(Exception)
def unexpected_error(exc: Exception) -> Response:
    # A bug of ours must not become a 500 on the shop's pages or a crashed worker; the
    # browser does not retry beacons, so say plainly that nothing was stored.
    logger.exception("dedupkit could not handle %s %s", request.method, request.path)
    response = jsonify(error="dedupkit could not store this event; see the server log")
    response.status_code = 503
    return response


def _reject(status: int, message: str) -> NoReturn:
    raise BeaconRefused(status, message)


@blueprint.route("/events", methods=["POST", "OPTIONS"])
def events() -> Response:
    """Record one browser event; 202 when accepted, 4xx with ``{"error": …}`` otherwise."""
    if request.method == "OPTIONS":
        return _with_cors(Response(status=204))
    state = get_state()
    _check_rate(state)
    _check_origin(state)
    body = _read_body()
    if is_evidence(body):
        # The page mirrored an event the server tracked: only whether its tag call happened.
        try:
            record_evidence(state, body)
        except InvalidEvent as exc:
            _reject(400, str(exc))
        return _with_cors(Response(status=202))
    submission = _submission(body, state)
    visitor = current_visitor(state, _raw_page_url(body))
    try:
        recorded = record(state, submission, visitor)
    except EventNotAllowed as exc:  # TicketRefused too
        _reject(403, str(exc))
    except InvalidEvent as exc:
        _reject(400, str(exc))
    if submission.ticket is not None and recorded.outcome is IntakeOutcome.DUPLICATE:
        # One ticket, one conversion: a replay is refused, and nothing more was queued.
        _reject(409, f"ticket already used: event {recorded.event.event_id!r} is recorded once")
    response = _with_cors(jsonify(status=recorded.status, event_id=recorded.event.event_id))
    response.status_code = 202
    if visitor.click_id and visitor.click_id_from_url:
        set_click_id_cookie(response, state, visitor.click_id)
    return response


def _submission(body: dict[str, Any], state: State) -> Submission:
    data = body.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _reject(400, "data must be an object")
    page_url = body.get("event_source_url")
    if page_url is None:
        page_url = request.referrer
    click_id = body.get("click_id")
    ticket = body.get("ticket")
    if ticket is not None and not isinstance(ticket, str):
        _reject(400, "ticket must be a string")
    return Submission(
        _required_string(body, "event_name"),
        data,
        event_id=_required_string(body, "event_id"),
        event_time=_event_time(body.get("event_time"), state.settings.retry_window),
        event_source_url=page_url if isinstance(page_url, str) else None,
        from_browser=True,
        page_click_id=clean_click_id(click_id) if isinstance(click_id, str) else None,
        page_consent=body.get("consent") in (1, True),
        ticket=ticket,
        page_gpc=body.get("gpc") in (1, True),
        tag=tag_flag(body.get("tag")),
    )


def _read_body() -> dict[str, Any]:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        _reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
    # Read at most one byte past the limit: a chunked body has no Content-Length to check.
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        _reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return parse_beacon(raw)
    except InvalidEvent as exc:
        _reject(400, str(exc))


def _required_string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        _reject(400, f"{key} must be a non-empty string")
    return value


def _raw_page_url(body: dict[str, Any]) -> str | None:
    """The reported page URL, for its ``epik``; bounded, otherwise unchecked."""
    url = body.get("event_source_url")
    return url if isinstance(url, str) and len(url) <= MAX_INPUT_LENGTH else None


def _event_time(value: object, retry_window: float) -> int:
    """The browser's time unless its clock is off; Pinterest rejects future timestamps."""
    now = int(time.time())
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return now
    if now - retry_window < value <= now + MAX_CLOCK_AHEAD:
        return min(int(value), now)
    return now


def _check_rate(state: State) -> None:
    limiter = state.rate_limiter
    if limiter is None:
        return
    # The visitor's IP as dedupkit sees it (the CDN's header when configured); behind a
    # proxy without ProxyFix every client shares the proxy's address, and its bucket.
    client = client_ip(request, state.settings.client_ip_header) or "unknown"
    wait = limiter.take(client)
    if wait:
        if client == "unknown" or ipaddress.ip_address(client).is_private:
            logger.warning(
                "refused beacons from %s, a private address: if the app is behind a proxy or "
                "CDN, every shopper shares its address. Use Werkzeug's ProxyFix or set "
                "DEDUPKIT_CLIENT_IP_HEADER (or raise DEDUPKIT_RATE_LIMIT)",
                client,
            )
        seconds = retry_after(wait)
        raise BeaconRefused(
            429,
            f"too many events from this client: at most {limiter.burst} per "
            f"{limiter.period:g} s; retry in {seconds} s",
            retry_after=seconds,
        )


def _allowed_origins(state: State) -> set[str]:
    own = f"{request.scheme}://{request.host}"
    return {own, *state.settings.allowed_origins}


def _check_origin(state: State) -> None:
    origin = request.headers.get("Origin")
    # Browsers send Origin on cross-origin beacons; its absence means same-origin or no browser.
    # "null" (a sandboxed iframe of any site) is refused unless listed explicitly.
    if origin and not _origin_allowed(origin, state):
        _reject(
            403,
            f"origin {origin[:200]!r} may not report events: add it to DEDUPKIT_ALLOWED_ORIGINS",
        )


def _origin_allowed(origin: str, state: State) -> bool:
    allowed = _allowed_origins(state)
    if origin == "null":
        return "null" in allowed
    return "*" in allowed or origin in allowed


def _with_cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and _origin_allowed(origin, get_state()):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Vary"] = "Origin"
    return response


# The dedup ledger and the metrics live in their own modules; they are views of this blueprint.
blueprint.add_url_rule("/debug", "debug", ledger_view)
metrics.register(blueprint)
