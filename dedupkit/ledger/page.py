"""The dedup ledger at ``{prefix}/debug``: is it working, and what did the server recover?

First what a shop owner needs at a glance: whether delivery works, what Pinterest counted once
and what the server recovered that the tag lost over the last day and week
(:mod:`dedupkit.ledger.recovery`), and where the tag is lost (by browser, OS and device type).
Below, collapsed: a verdict per event (:mod:`dedupkit.ledger.verdicts`), the delivery counts,
a chart of the last day (:mod:`dedupkit.ledger.chart`), matching coverage
(:mod:`dedupkit.ledger.coverage`), skipped events and the last errors. Identity fields are
shown by their plain names, never their values; the outbox is described, never located.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Response, abort, jsonify, render_template, request

from ..errors import OutboxError, UnknownEventName
from ..outbox.base import SKIPS_KEPT, LedgerEntry, Skip
from ..redaction import redact
from ..state import State, get_state
from ..vocabulary import EventState, SkipReason
from .chart import legend, verdict_chart
from .coverage import SCAN_LIMIT, summarize, with_missing_tag_hint
from .recovery import DAY, DIMENSIONS, WEEK, money_text, percent, skipped_sentence, stored_at
from .verdicts import (
    DEDUP_WINDOW,
    MEANINGS,
    STATE_MEANINGS,
    judge,
    judge_skip,
)

logger = logging.getLogger("dedupkit")

#: Entries the dashboard lists by default, and at most (``?limit=``).
LEDGER_LIMIT = 100
MAX_LEDGER_LIMIT = 1000
#: Skip reasons always shown, even at zero: every one of the vocabulary.
SKIP_REASONS = tuple(reason.value for reason in SkipReason)
#: Skipped events listed one by one.
SKIPS_LISTED = 20
#: Characters of an event id shown before the ellipsis (the whole id is in the page).
SHORT_ID_LENGTH = 14
#: Recent events listed open (a newcomer's first checkouts) up to this many; collapsed beyond.
OPEN_RECENT = 5
#: The coverage windows the table switches between (``?window=``).
WINDOWS = {"hour": "last hour", "day": "last day"}
#: ``DEDUPKIT_DEBUG_UI`` strings (from the environment) that turn the dashboard on.
_TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})
#: ``user_data`` keys in plain words.
FIELD_NAMES = {
    "em": "e-mail",
    "ph": "phone",
    "fn": "first name",
    "ln": "last name",
    "ge": "gender",
    "db": "date of birth",
    "ct": "city",
    "st": "state",
    "zp": "zip code",
    "country": "country",
    "external_id": "external id",
    "client_ip_address": "IP address",
    "client_user_agent": "user agent",
    "click_id": "click id",
    "hashed_maids": "mobile ad id",
    "partner_id": "partner id",
}


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
    window = request.args.get("window", "day")
    if window not in WINDOWS:
        window = "day"
    try:
        data = ledger(state, limit=limit)
    except OutboxError as exc:
        logger.warning("the ledger dashboard could not read the outbox: %s", exc)
        abort(503, scrub(str(exc), state))
    if fmt == "json":
        response = jsonify(data)
    else:
        chart = verdict_chart(data["coverage"]["timeline"])
        response = Response(
            render_template(
                "dedupkit/debug.html",
                ledger=data,
                human=_human,
                chart=chart,
                legend=legend(),
                site_url=request.script_root + "/",
                window=window,
                request_window="window" in request.args,
                open_recent=OPEN_RECENT,
                windows=WINDOWS,
                dimensions=DIMENSIONS,
                percent=percent,
                money=money_text,
            )
        )
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
    test_mode = bool(state.settings.test_mode)
    stats = outbox.stats(now=now)
    entries = outbox.recent(limit)
    pause = outbox.pause(now=now)
    recent_week = outbox.entries_since(now - WEEK, limit=SCAN_LIMIT)
    remembered = outbox.recent_skips(SKIPS_KEPT)
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    skipped.update(stats.skipped)
    coverage = summarize(
        recent_week,
        now=now,
        test_mode=test_mode,
        sampled=len(recent_week) >= SCAN_LIMIT,
        skips=remembered,
    )
    # Counted ever, not only those still remembered one by one.
    coverage["value"]["skipped_ever"] = skipped
    coverage["value"]["skips_sampled"] = len(remembered) >= SKIPS_KEPT
    pause_data = (
        None
        if pause is None
        else {
            "until": pause.until,
            "remaining": max(0.0, pause.until - now),
            "reason": scrub(pause.reason, state),
            "kind": pause.kind,
        }
    )
    return {
        "outbox": describe_outbox(state),
        # Redis keeps delivered events' summaries about a day (DELIVERED_TTL): its "week" is
        # that day, and the page says so.
        "history_note": "Redis keeps delivered events for about a day: the week is that day."
        if state.queue_url.lower().startswith(("redis:", "rediss:"))
        else None,
        "now": now,
        "test_mode": test_mode,
        "status": status(coverage["value"]["day"], pause_data, stats.oldest_pending_age),
        # The day's sentence, asking for {{ dedupkit.head() }} when no page reported a tag.
        "headline": with_missing_tag_hint(
            coverage["headline"], (e for e in recent_week if stored_at(e) >= now - DAY)
        ),
        "value": coverage["value"],
        "devices": coverage["devices"],
        "skipped_text": skipped_sentence(coverage["value"]["day"]["skipped"]),
        "coverage": coverage,
        "meanings": {verdict.value: meaning for verdict, meaning in MEANINGS.items()},
        "states": {
            state_.value: {"label": state_.label, "meaning": STATE_MEANINGS[state_]}
            for state_ in EventState
        },
        "field_names": FIELD_NAMES,
        "counts": {
            EventState.PENDING.value: stats.pending,
            EventState.SENDING.value: stats.in_flight,
            EventState.DELIVERED.value: stats.delivered,
            EventState.DEAD.value: stats.dead,
        },
        "state_labels": {state.value: state.label for state in EventState},
        "skip_labels": {reason: SkipReason.label_of(reason) for reason in skipped},
        "oldest_pending_age": stats.oldest_pending_age,
        "skipped": skipped,
        "duplicates": stats.duplicates,
        "pause": pause_data,
        "paused_until": None if pause is None else pause.until,
        "pause_remaining": None if pause is None else max(0.0, pause.until - now),
        "last_errors": [
            {"at": when, "message": scrub(message, state)} for when, message in stats.last_errors
        ],
        "entries": [_entry(entry, state, now, test_mode) for entry in entries],
        "skips": [_skip(skip) for skip in remembered[:SKIPS_LISTED]],
    }


def _entry(entry: LedgerEntry, state: State, now: float, test_mode: bool) -> dict[str, Any]:
    try:
        tag_name = state.names.resolve(entry.event_name).tag
    except UnknownEventName:  # an advertiser-defined name since removed from the settings
        tag_name = None
    born = entry.event_time if entry.event_time is not None else entry.updated_at
    judgement = judge(entry, now=now, test_mode=test_mode)
    return {
        "event_name": entry.event_name,
        "tag_name": tag_name,
        "event_id": entry.event_id,
        "short_id": short_id(entry.event_id),
        "state": entry.state.value,
        "device": entry.device,
        "state_label": entry.state.label,
        "attempts": entry.attempts,
        "event_time": entry.event_time,
        "age": max(0.0, now - born),
        "updated_at": entry.updated_at,
        "has_click_id": entry.has_click_id,
        "user_fields": list(entry.user_fields),
        "identity": [FIELD_NAMES.get(k, k.replace("_", " ")) for k in entry.user_fields],
        "tag": entry.tag,
        "test": entry.test,
        "verdict": judgement.verdict.value,
        "detail": scrub(judgement.detail, state),
        "advice": judgement.advice,
        "time_left": judgement.time_left,
        "last_error": None if entry.last_error is None else scrub(entry.last_error, state),
    }


def _skip(skip: Skip) -> dict[str, Any]:
    judgement = judge_skip(skip)
    return {
        "at": skip.at,
        "reason": skip.reason,
        "reason_label": SkipReason.label_of(skip.reason),
        "event_name": skip.event_name,
        "event_id": skip.event_id,
        "short_id": None if skip.event_id is None else short_id(skip.event_id),
        "verdict": judgement.verdict.value,
        "detail": judgement.detail,
    }


def status(
    day: dict[str, Any], pause: dict[str, Any] | None, oldest_pending_age: float | None
) -> dict[str, str]:
    """Is it working? ``{"level": "ok" | "attention" | "idle", "title": …, "text": …}``:
    the first thing on the page, in words (never colour alone)."""
    if pause is not None:
        text = f"Delivery is paused for another {_human(pause['remaining'])}"
        text += f": {pause['reason']}" if pause["reason"] else "."
        return {"level": "attention", "title": "Needs attention", "text": text}
    if day["failed"]:
        what = "conversion" if day["failed"] == 1 else "conversions"
        return {
            "level": "attention",
            "title": "Needs attention",
            "text": f"{day['failed']} {what} failed in the last day: see what to do below.",
        }
    if oldest_pending_age is not None and oldest_pending_age > DEDUP_WINDOW:
        return {
            "level": "attention",
            "title": "Needs attention",
            "text": f"An event has waited {_human(oldest_pending_age)}: is the sender running?",
        }
    if day["counted"] or day["test"]:
        text = "Events reach Pinterest and none failed in the last day."
        if day["pending"]:
            text += f" {day['pending']} waiting to be sent."
        return {"level": "ok", "title": "Working", "text": text}
    if day["pending"]:
        return {
            "level": "ok",
            "title": "Working",
            "text": f"{day['pending']} waiting to be sent; nothing delivered yet today.",
        }
    text = "Nothing sent to Pinterest in the last day."
    skipped = day["skipped"]
    if skipped:
        text += f" {skipped_sentence(skipped)}"
        if skipped.get("bot"):
            text += " Requests from curl, scripts and crawlers count as bots: try a real browser."
    return {"level": "idle", "title": "No conversions yet", "text": text}


def describe_outbox(state: State) -> str:
    """Where events wait, in words, never the path or the address: "SQLite in the instance
    folder", "SQLite, the file o.sqlite3 outside the instance folder", "Redis, namespace
    dedupkit:123"."""
    url = state.queue_url
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        path = url.partition(":///")[2]
        inside = _inside(path, state.app.instance_path)
        if inside:
            return "SQLite in the instance folder"
        return f"SQLite, the file {os.path.basename(path)} outside the instance folder"
    if scheme in ("redis", "rediss"):
        return f"Redis, namespace {state.settings.outbox_namespace()}"
    if scheme.startswith("postgres"):
        return "PostgreSQL"
    return scheme or "unknown"


def short_id(event_id: str) -> str:
    """The start of a long event id, with an ellipsis: the page holds the whole id."""
    if len(event_id) <= SHORT_ID_LENGTH + 1:
        return event_id
    return event_id[:SHORT_ID_LENGTH] + "\N{HORIZONTAL ELLIPSIS}"


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == (
            os.path.abspath(folder)
        )
    except ValueError:  # different drives
        return False


def scrub(message: str, state: State) -> str:
    """``message`` without the conversion token, should an error ever have echoed it."""
    token = state.settings.conversion_token
    return redact(message, [token] if token else [], limit=1000)


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
