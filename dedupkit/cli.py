"""``flask dedupkit …``: run the sender, check health, look at and replay dead letters.

Every command prints a configuration or outbox error as one line naming the fix and exits
with status 1, never with a traceback. The group is also a ``flask.commands`` entry point, so
a ``ConfigurationError`` raised while Flask loads the app gets the same treatment.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from flask.cli import AppGroup

from . import logs
from .delivery.sender import CREDENTIALS, EXPIRED
from .errors import ConfigurationError, DedupKitError, OutboxError
from .event.model import build_event
from .outbox import DeadLetter, Outbox, OutboxStats, Pause
from .redaction import redacted_url
from .state import State, get_state
from .vocabulary import EventState, SkipReason

#: Dead letters replayed per outbox call, so a large replay shows progress.
REPLAY_CHUNK = 500
#: Dead letters younger than this make ``status`` unhealthy; older ones were seen already.
DEAD_HEALTH_WINDOW = 24 * 3600.0
#: Seconds per unit of ``--since`` (``30m``, ``2h``, ``1d``, ``1w``).
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
#: Log levels from the most verbose; ``-v`` moves left, ``-q`` right.
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)

F = TypeVar("F", bound=Callable[..., Any])


class _Group(AppGroup):
    """Turns dedupkit's errors, raised by a command or while loading the app, into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OutboxError as exc:
            raise click.ClickException(_one_line(f"{exc}; check DEDUPKIT_QUEUE_URL")) from None
        except DedupKitError as exc:
            raise click.ClickException(_one_line(str(exc))) from None


cli = _Group("dedupkit", help="Pinterest Tag + Conversions API delivery.")


def _verbosity(default: int) -> Callable[[F], F]:
    """``-v``/``-q`` (repeatable): one log level more or less verbose than ``default``."""

    def set_level(ctx: click.Context, param: click.Parameter, value: int) -> int:
        if "dedupkit.level" not in ctx.meta:
            # The level is the process's: put it back when the command ends (tests, shells).
            logger = logging.getLogger(logs.LOGGER_NAME)
            handler = logs.install()
            ctx.call_on_close(_restore(logger, logger.level, handler, handler.level))
        # Parameters are processed in order: -v and -q each move the level they find.
        current = ctx.meta.get("dedupkit.level", _LEVELS.index(default))
        step = -value if param.name == "verbose" else value
        index = min(max(current + step, 0), len(_LEVELS) - 1)
        ctx.meta["dedupkit.level"] = index
        logs.install(_LEVELS[index])
        return value

    def decorate(command: F) -> F:
        verbose = click.option(
            "-v", "--verbose", count=True, expose_value=False, callback=set_level,
            help="More detail (-vv: debug).",
        )  # fmt: skip
        quiet = click.option(
            "-q", "--quiet", count=True, expose_value=False, callback=set_level,
            help="Less: errors only (-qq: critical).",
        )  # fmt: skip
        return verbose(quiet(command))

    return decorate


def _restore(
    logger: logging.Logger, level: int, handler: logging.Handler, handler_level: int
) -> Callable[[], None]:
    def restore() -> None:
        logger.setLevel(level)
        handler.setLevel(handler_level)

    return restore


@cli.command()
@_verbosity(logging.INFO)
def worker() -> None:
    """Deliver queued events until stopped (SIGINT or SIGTERM).

    Prints a line per batch (sent, retried, dead and why) and a summary when it stops.
    Runs the same sender the web process runs in the background; with a separate worker,
    set DEDUPKIT_BACKGROUND_SENDER = False in the web app.
    """
    state = _state()
    if not state.enabled:
        raise click.ClickException(
            "dedupkit is disabled: set DEDUPKIT_AD_ACCOUNT_ID and DEDUPKIT_CONVERSION_TOKEN "
            "(and DEDUPKIT_ENABLED is not False) for the worker to deliver"
        )
    stop = threading.Event()
    sender = state.make_sender()

    def shut_down(*_: object) -> None:
        stop.set()
        sender.interrupt()  # end the idle wait now rather than at its next timeout

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, shut_down)
    click.echo(
        f"dedupkit worker: delivering from {redacted_url(state.queue_url)} to ad account "
        f"{state.settings.ad_account_id}{_mode(state)}",
        err=True,
    )
    started = time.monotonic()
    sender.run(stop, flush_interval=state.settings.flush_interval)
    took = time.monotonic() - started
    click.echo(f"dedupkit worker: stopped after {took:.0f} s: {sender.totals.summary()}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@_verbosity(logging.WARNING)
def status(as_json: bool) -> None:
    """Counts by state, pauses, skipped events and the last errors.

    Exits with 0 when delivery is healthy, 1 when it is not: dead letters in the last 24
    hours, delivery paused, events pending for longer than DEDUPKIT_RETRY_WINDOW, or
    dedupkit disabled.
    """
    state = _state()
    outbox = state.outbox
    now = time.time()
    stats = outbox.stats(now=now)
    pause = outbox.pause(now=now)
    recent_dead = outbox.count_dead(since=now - DEAD_HEALTH_WINDOW)
    problems = _problems(state, pause, recent_dead, stats.oldest_pending_age, now)
    if as_json:
        report = {
            "healthy": not problems,
            "problems": problems,
            "enabled": state.enabled,
            "test_mode": state.settings.test_mode,
            "queue": redacted_url(state.queue_url),
            **{kind.value: count for kind, count in _state_counts(stats).items()},
            "dead_last_24h": recent_dead,
            "oldest_pending_age": stats.oldest_pending_age,
            "pause": None
            if pause is None
            else {"until": _when(pause.until), "kind": pause.kind, "reason": pause.reason},
            "skipped": dict(stats.skipped),
            "last_errors": [{"at": _when(w), "message": m} for w, m in stats.last_errors],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"queue       {redacted_url(state.queue_url)}")
        click.echo(f"mode        {_mode(state).strip(' ()') or 'live'}")
        for kind, count in _state_counts(stats).items():
            click.echo(f"{kind.label:<12}  {count}")
        age = stats.oldest_pending_age
        click.echo(f"oldest pending  {'-' if age is None else f'{age:.0f}s'}")
        for reason, count in sorted(stats.skipped.items()):
            click.echo(f"skipped ({SkipReason.label_of(reason)})  {count}")
        if stats.last_errors:
            click.echo("last errors:")
            for when, message in stats.last_errors:
                click.echo(f"  {_when(when)}  {message}")
        click.echo("health      " + ("ok" if not problems else "UNHEALTHY"))
        for problem in problems:
            click.echo(f"  - {problem}")
    if problems:
        click.get_current_context().exit(1)


def _state_counts(stats: OutboxStats) -> dict[EventState, int]:
    return {
        EventState.PENDING: stats.pending,
        EventState.SENDING: stats.in_flight,
        EventState.DELIVERED: stats.delivered,
        EventState.DEAD: stats.dead,
    }


def _problems(
    state: State, pause: Pause | None, recent_dead: int, oldest: float | None, now: float
) -> list[str]:
    """What makes delivery unhealthy, each in plain words with what to do."""
    problems = []
    if not state.enabled:
        problems.append(
            "dedupkit sends nothing: DEDUPKIT_AD_ACCOUNT_ID or DEDUPKIT_CONVERSION_TOKEN is "
            "not set, or DEDUPKIT_ENABLED is False"
        )
    if pause is not None:
        problems.append(f"delivery paused for another {pause.until - now:.0f} s: {_pause(pause)}")
    if recent_dead:
        problems.append(
            f"{recent_dead} dead letter(s) in the last 24 h: see `flask dedupkit dead --since 1d`"
        )
    window = state.settings.retry_window
    if oldest is not None and oldest > window:
        problems.append(
            f"the oldest pending event has waited {oldest:.0f} s, longer than "
            f"DEDUPKIT_RETRY_WINDOW ({window:.0f} s): is a sender running (`flask dedupkit "
            "worker`, or DEDUPKIT_BACKGROUND_SENDER in the web app)?"
        )
    return problems


def _pause(pause: Pause) -> str:
    reason = pause.reason or "Pinterest asked to wait"
    if pause.kind == CREDENTIALS:
        return (
            f"{reason}. Fix DEDUPKIT_CONVERSION_TOKEN or DEDUPKIT_AD_ACCOUNT_ID, restart the "
            "senders, then `flask dedupkit resume`"
        )
    return f"{reason} ({pause.kind.replace('_', ' ')}; it ends by itself)"


if TYPE_CHECKING:
    _FloatType = click.ParamType[float]
else:  # click < 8.2 (Flask 3.0 allows 8.1) has no generic ParamType
    _FloatType = click.ParamType


class Since(_FloatType):
    """``30m``, ``2h``, ``1d``, ``1w`` ago, or an ISO date or time (UTC unless it says)."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        match = _DURATION.match(text)
        if match:
            return time.time() - float(match.group(1)) * _UNITS[match.group(2).lower()]
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(
                f"{text!r} is neither a duration (30m, 2h, 1d, 1w) nor an ISO date "
                "(2025-01-31 or 2025-01-31T14:00)",
                param,
                ctx,
            )
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return when.timestamp()


@cli.command()
@click.option("--reason", help="Only those with exactly this reason, e.g. expired.")
@click.option("--since", type=Since(), help="Only those that died since: 2h, 1d or a date.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--replay", is_flag=True, help="Queue the matching dead letters again.")
@click.option(
    "--as-offline",
    is_flag=True,
    help="With --replay: send the expired ones as offline events (may count twice).",
)
@click.option("--yes", "-y", is_flag=True, help="Replay without asking.")
@_verbosity(logging.WARNING)
def dead(
    reason: str | None,
    since: float | None,
    limit: int,
    replay: bool,
    as_offline: bool,
    yes: bool,
) -> None:
    """List dead letters (newest first) with their event ids and Pinterest's message.

    --replay queues them again, except expired ones: sent again they would only expire
    again. --replay --as-offline sends the expired ones as offline events instead.
    """
    if as_offline and not replay:
        raise click.UsageError("--as-offline goes with --replay")
    state = _state()
    outbox = state.outbox
    total = outbox.count_dead(reason=reason, since=since)
    matching = _filters(reason, since)
    if replay:
        _replay(outbox, outbox.dead_letters(max(total, 1), reason=reason, since=since),
                as_offline=as_offline, yes=yes)  # fmt: skip
        return
    if not total:
        click.echo(f"no dead letters{matching}")
        return
    letters = outbox.dead_letters(limit, reason=reason, since=since)
    more = f"; --limit {total} shows them all" if len(letters) < total else ""
    click.echo(f"showing {len(letters)} of {total} dead letters{matching}{_mode(state)}{more}")
    for letter in letters:
        click.echo(
            f"{_when(letter.died_at)}  {letter.event_name}  {letter.event_id}  "
            f"attempts={letter.attempts}  {letter.reason}"
        )


def _replay(outbox: Outbox, letters: list[DeadLetter], *, as_offline: bool, yes: bool) -> None:
    expired = [letter for letter in letters if letter.reason == EXPIRED]
    others = [letter for letter in letters if letter.reason != EXPIRED]
    if as_offline:
        chosen = expired
        if others:
            click.echo(f"{len(others)} dead letter(s) that did not expire are left alone: "
                       "replay them without --as-offline")  # fmt: skip
        if chosen:
            click.echo(
                f"warning: {len(chosen)} expired event(s) go to Pinterest as offline events, "
                "which it does not deduplicate against the tag: those whose Pinterest tag "
                "fired will count twice. Only do this if the tag did not fire.",
                err=True,
            )
    else:
        chosen = others
        if expired:
            click.echo(
                f"{len(expired)} expired dead letter(s) left alone: sent again they would only "
                "expire again. If their tag never fired, --replay --as-offline sends them as "
                "offline events"
            )
    if not chosen:
        click.echo("nothing to replay")
        return
    kind = " as offline events" if as_offline else ""
    if not yes:
        click.confirm(f"Queue {len(chosen)} dead letter(s) again{kind}?", abort=True)
    replayed = 0
    ids = [letter.id for letter in chosen]
    with click.progressbar(length=len(ids), label="replaying dead letters") as bar:
        for start in range(0, len(ids), REPLAY_CHUNK):
            count = outbox.replay_dead(ids[start : start + REPLAY_CHUNK], as_offline=as_offline)
            replayed += count
            bar.update(count)
    click.echo(f"{replayed} dead letters queued again{kind}")


@cli.command()
@_verbosity(logging.WARNING)
def resume() -> None:
    """Lift a delivery pause now (after fixing the credentials, or to override a wait), for
    every process: running senders see it within a second."""
    outbox = _state().outbox
    pause = outbox.pause()
    if pause is None:
        click.echo("delivery is not paused")
        return
    outbox.clear_pause()
    click.echo(f"delivery resumed; it was paused ({pause.kind.replace('_', ' ')}): "
               f"{pause.reason or 'no reason given'}")  # fmt: skip
    click.echo("running senders see it within a second")
    if pause.kind == CREDENTIALS:
        click.echo("if the credentials are still wrong, the next batch pauses delivery again")


@cli.command("send-test")
@_verbosity(logging.WARNING)
def send_test() -> None:
    """Send one ?test=true event to check the credentials (Pinterest records nothing)."""
    state = _state()
    settings = state.settings
    if not settings.credentials_set:
        raise ConfigurationError(
            "send-test needs DEDUPKIT_AD_ACCOUNT_ID and DEDUPKIT_CONVERSION_TOKEN (in "
            "app.config or the environment)"
        )
    event = build_event(
        "page_visit",
        names=state.names,
        event_id=f"dedupkit-send-test-{int(time.time())}",
        event_source_url="https://dedupkit.invalid/send-test",
        user={"client_ip_address": "192.0.2.1", "client_user_agent": "dedupkit send-test"},
    )
    with state.make_client(test_mode=True) as client:
        result = client.send([event.to_capi()])
    outcome = result.results[0]
    if result.delivered:
        click.echo(
            f"ok: Pinterest accepted a test event for ad account {settings.ad_account_id} "
            "(test mode: validated, nothing recorded)"
        )
        if outcome.message:
            click.echo(f"warning: {outcome.message}")
        return
    status = "no answer" if result.status_code is None else f"HTTP {result.status_code}"
    fix = _fix_for(result.status_code, redacted_url(settings.api_base_url))
    raise click.ClickException(
        _one_line(f"Pinterest did not accept the test event ({status}): {outcome.message}; {fix}")
    )


def _fix_for(status: int | None, api_base_url: str) -> str:
    """The setting to fix for a failed send-test, in words."""
    if status is None:
        return f"fix DEDUPKIT_API_BASE_URL ({api_base_url}) or the network to it"
    if status == 401:
        return "fix DEDUPKIT_CONVERSION_TOKEN (copy it again from Ads Manager)"
    if status == 403:
        return "fix DEDUPKIT_CONVERSION_TOKEN or DEDUPKIT_AD_ACCOUNT_ID (the token's account)"
    if status == 404:
        return "fix DEDUPKIT_AD_ACCOUNT_ID (the numeric id shown in Ads Manager)"
    if status == 429 or status >= 500:
        return "Pinterest is busy or failing: try again later"
    if not 200 <= status < 300 and status not in (400, 422):
        return f"is DEDUPKIT_API_BASE_URL ({api_base_url}) Pinterest's API?"
    return "the event was refused: please report it to dedupkit"


def _state() -> State:
    try:
        return get_state()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


def _mode(state: State) -> str:
    return " (test mode: Pinterest validates, records nothing)" if state.settings.test_mode else ""


def _filters(reason: str | None, since: float | None) -> str:
    parts = [f"reason {reason!r}" if reason else "", f"since {_when(since)}" if since else ""]
    chosen = " and ".join(p for p in parts if p)
    return f" with {chosen}" if chosen else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
