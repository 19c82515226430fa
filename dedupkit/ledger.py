"""The dedup ledger at ``{prefix}/debug``: what the outbox holds and what Pinterest answered.

Shows counts, skips, the Retry-After pause, the last errors and the recent events by
event_id, with the names of the identity fields sent, never their values.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Response, abort, jsonify, render_template, request

from .errors import OutboxError, UnknownEventName
from .outbox.base import LedgerEntry
from .settings import redacted_url
from .state import State, get_state

logger = logging.getLogger("dedupkit")

#: Entries the dashboard lists by default, and at most (``?limit=``).
LEDGER_LIMIT = 100
MAX_LEDGER_LIMIT = 1000
#: Skip reasons always shown, even at zero.
SKIP_REASONS = ("bot", "no_consent", "no_identity")
#: ``DEDUPKIT_DEBUG_UI`` strings (from the environment) that turn the dashboard on.
_TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})


def debug_ui_allowed(setting: object) -> bool:
    """Whether ``DEDUPKIT_DEBUG_UI`` lets the current request see the dashboard.

    The setting is a flag, or a callable ``(request) -> bool`` asked on every request (an auth
    hook, e.g. ``lambda request: current_user.is_authenticated and current_user.is_admin``).
    A hook that raises denies, and the error is logged.
    """
    if callable(setting):
        try:
            return bool(setting(request))
        except Exception:
            logger.exception("DEDUPKIT_DEBUG_UI raised; the ledger dashboard stays closed")
            return False
    if isinstance(setting, str):
        return setting.strip().lower() in _TRUE_STRINGS
    return bool(setting)


def debug() -> Response:
    """The dedup ledger: what the outbox holds and what Pinterest answered, per event_id.

    404 unless ``DEDUPKIT_DEBUG_UI`` allows it; ``?format=json`` for the same data as JSON,
    ``?limit=`` for more or fewer entries. Only hashed data and field names are shown.
    """
    state = get_state()
    if not debug_ui_allowed(state.settings.debug_ui):
        abort(404)
    fmt = request.args.get("format", "html")
    if fmt not in ("html", "json"):
        abort(400, "format must be html or json")
    try:
        limit = int(request.args.get("limit", LEDGER_LIMIT))
    except ValueError:
        abort(400, "limit must be a whole number")
    limit = max(1, min(limit, MAX_LEDGER_LIMIT))
    try:
        data = ledger(state, limit=limit)
    except OutboxError as exc:
        logger.warning("the ledger dashboard could not read the outbox: %s", exc)
        abort(503, _scrub(str(exc), state))
    if fmt == "json":
        response = jsonify(data)
    else:
        response = Response(render_template("dedupkit/debug.html", ledger=data, human=_human))
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'"
        )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def ledger(state: State, *, limit: int = LEDGER_LIMIT, now: float | None = None) -> dict[str, Any]:
    """The dashboard's data, as JSON-ready values: hashes and field names only."""
    now = time.time() if now is None else now
    outbox = state.outbox
    stats = outbox.stats(now=now)
    entries = outbox.recent(limit)
    pause_until = outbox.pause_until()
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    skipped.update(stats.skipped)
    return {
        "queue": redacted_url(state.queue_url),
        "now": now,
        "counts": {
            "pending": stats.pending,
            "in_flight": stats.in_flight,
            "delivered": stats.delivered,
            "dead": stats.dead,
        },
        "oldest_pending_age": stats.oldest_pending_age,
        "skipped": skipped,
        "paused_until": pause_until if pause_until > now else None,
        "pause_remaining": max(0.0, pause_until - now) if pause_until > now else None,
        "last_errors": [
            {"at": when, "message": _scrub(message, state)} for when, message in stats.last_errors
        ],
        "entries": [_entry(entry, state, now) for entry in entries],
    }


def _entry(entry: LedgerEntry, state: State, now: float) -> dict[str, Any]:
    try:
        tag_name = state.names.resolve(entry.event_name).tag
    except UnknownEventName:  # an advertiser-defined name since removed from the settings
        tag_name = None
    born = entry.event_time if entry.event_time is not None else entry.updated_at
    return {
        "event_name": entry.event_name,
        "tag_name": tag_name,
        "event_id": entry.event_id,
        "state": entry.state.value,
        "attempts": entry.attempts,
        "event_time": entry.event_time,
        "age": max(0.0, now - born),
        "updated_at": entry.updated_at,
        "has_click_id": entry.has_click_id,
        "user_fields": list(entry.user_fields),
        "last_error": None if entry.last_error is None else _scrub(entry.last_error, state),
    }


def _scrub(message: str, state: State) -> str:
    """``message`` without the conversion token, should an error ever have echoed it."""
    token = state.settings.conversion_token
    if token:
        message = message.replace(token, "***")
    return message


def _human(seconds: float | None) -> str:
    """A short duration: ``42 s``, ``5 min``, ``3.5 h``, ``2 d``."""
    if seconds is None:
        return "\N{EN DASH}"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
