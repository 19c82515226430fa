"""The routes: the browser snippet, the endpoint its beacons report to, and the dedup ledger.

Beacons carry no CSRF token: apps using Flask-WTF's ``CSRFProtect`` must
``csrf.exempt(blueprint)``. Bad input gets a 4xx with a JSON reason, never a 5xx.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from functools import lru_cache
from typing import Any, NoReturn
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from . import config as cfg
from .assets import static_file
from .errors import InvalidEvent, UnknownEventName
from .extension import (
    current_visitor,
    get_state,
    set_click_id_cookie,
    visitor_user_data,
)
from .ledger import debug as ledger_view
from .visitor import clean_click_id

logger = logging.getLogger("dedupkit")

blueprint = Blueprint("dedupkit", __name__, template_folder="templates")

#: Largest beacon body accepted; the browser's keepalive limit is 64 KB for all requests.
MAX_BODY_BYTES = 16 * 1024
#: Longest page URL accepted from a beacon.
MAX_URL_LENGTH = 2048
#: How far a browser clock may be ahead before the server's time is used instead.
MAX_CLOCK_AHEAD = 60


@lru_cache(maxsize=1)
def snippet() -> tuple[bytes, str]:
    """The snippet's bytes and a short hash of them (its ETag and cache-busting version)."""
    data = static_file("dedupkit.js")
    return data, hashlib.sha256(data).hexdigest()[:16]


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


@blueprint.errorhandler(HTTPException)
def json_error(exc: HTTPException) -> Response:
    if exc.response is not None:  # raised by _reject, already JSON
        return exc.response  # type: ignore[return-value]
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
    response = jsonify(error=message)
    response.status_code = status
    abort(_with_cors(response))


@blueprint.route("/events", methods=["POST", "OPTIONS"])
def events() -> Response:
    """Queue one browser event; 202 when accepted, 4xx with ``{"error": …}`` otherwise."""
    if request.method == "OPTIONS":
        return _with_cors(Response(status=204))
    _check_origin()
    body = _read_body()
    state = get_state()

    name = _string(body, "event_name", required=True)
    try:
        resolved = state.names.resolve(name)
    except UnknownEventName as exc:
        _reject(400, str(exc))
    if resolved.capi not in state.browser_events:
        # Purchases and sign-ups must come from the server, which knows they happened;
        # otherwise anyone could post conversions.
        _reject(
            403,
            f"event {resolved.capi!r} cannot be reported from the browser: track it on the "
            "server with kit.track(), or add it to DEDUPKIT_BROWSER_EVENTS",
        )
    event_id = _string(body, "event_id", required=True)
    page_url = _page_url(body)
    data = body.get("data") or {}
    if not isinstance(data, dict):
        _reject(400, "data must be an object")

    visitor = current_visitor(page_url)
    user = visitor_user_data(visitor, state.hash_pin_unauth)
    if "click_id" not in user:
        # A page on another subdomain sees a cookie this host cannot: trust what it saw.
        beacon_click = clean_click_id(_string(body, "click_id"))
        if beacon_click:
            user["click_id"] = beacon_click
    try:
        event = state.build(
            name,
            event_id=event_id,
            event_time=_event_time(body.get("event_time")),
            event_source_url=page_url,
            user=user,
            data=data,
            require_identity=False,
        )
    except InvalidEvent as exc:
        _reject(400, str(exc))

    status = state.submit(event, visitor)
    response = _with_cors(jsonify(status=status, event_id=event.event_id))
    response.status_code = 202
    if visitor.click_id and visitor.click_id_from_url:
        set_click_id_cookie(response, visitor.click_id)
    return response


def _read_body() -> dict[str, Any]:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        _reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
    # Read at most one byte past the limit: a chunked body has no Content-Length to check.
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        _reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        _reject(400, "body must be a JSON object (sent as text/plain or application/json)")
    if not isinstance(body, dict):
        _reject(400, "body must be a JSON object")
    return body


def _string(body: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        _reject(400, f"{key} must be a non-empty string")
    return value


def _page_url(body: dict[str, Any]) -> str | None:
    url = body.get("event_source_url")
    if url is None:
        return request.referrer
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        _reject(400, f"event_source_url must be a URL of at most {MAX_URL_LENGTH} characters")
    if urlsplit(url).scheme not in ("http", "https"):
        _reject(400, "event_source_url must be an http(s) URL")
    return url


def _event_time(value: object) -> int:
    """The browser's time unless its clock is off; Pinterest rejects future timestamps."""
    now = int(time.time())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        retry_window = float(cfg.setting(get_state().config, "RETRY_WINDOW"))
        if now - retry_window < value <= now + MAX_CLOCK_AHEAD:
            return min(int(value), now)
    return now


def _allowed_origins() -> set[str]:
    conf = get_state().config
    own = f"{request.scheme}://{request.host}"
    return {own, *cfg.names_list(cfg.setting(conf, "ALLOWED_ORIGINS"), "ALLOWED_ORIGINS")}


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    # Browsers send Origin on cross-origin beacons; its absence means same-origin or no browser.
    if origin and origin != "null" and not _origin_allowed(origin):
        _reject(
            403,
            f"origin {origin!r} may not report events: add it to DEDUPKIT_ALLOWED_ORIGINS",
        )


def _origin_allowed(origin: str) -> bool:
    allowed = _allowed_origins()
    return "*" in allowed or origin in allowed


def _with_cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if origin and _origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Vary"] = "Origin"
    return response


# -- the dedup ledger dashboard ------------------------------------------------------------


# The dedup ledger lives in its own module; it is a view of this blueprint.
blueprint.add_url_rule("/debug", "debug", ledger_view)
