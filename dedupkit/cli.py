"""``flask dedupkit …``: run the sender, look at the queue, replay dead letters."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time

import click
from flask.cli import AppGroup

from .errors import DedupKitError
from .event import build_event
from .settings import redacted_url
from .state import get_state

cli = AppGroup("dedupkit", help="Pinterest Tag + Conversions API delivery.")

#: Dead letters replayed per outbox call, so a large replay shows progress.
REPLAY_CHUNK = 500


@cli.command()
def worker() -> None:
    """Deliver queued events until stopped (SIGINT or SIGTERM).

    Runs the same sender the web process runs in the background; with a separate worker,
    set DEDUPKIT_BACKGROUND_SENDER = False in the web app.
    """
    state = get_state()
    stop = threading.Event()
    sender = state.make_sender()

    def shut_down(*_: object) -> None:
        stop.set()
        sender.interrupt()  # end the idle wait now rather than at its next timeout

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, shut_down)
    click.echo(f"dedupkit worker: delivering from {redacted_url(state.queue_url)}")
    sender.run(stop, flush_interval=state.settings.flush_interval)
    click.echo("dedupkit worker: stopped")


@cli.command()
def status() -> None:
    """Counts by state, the oldest pending event, skipped events and the last errors."""
    state = get_state()
    stats = state.outbox.stats()
    click.echo(f"queue       {redacted_url(state.queue_url)}")
    click.echo(f"pending     {stats.pending}")
    click.echo(f"in flight   {stats.in_flight}")
    click.echo(f"delivered   {stats.delivered}")
    click.echo(f"dead        {stats.dead}")
    age = stats.oldest_pending_age
    click.echo(f"oldest pending  {'-' if age is None else f'{age:.0f}s'}")
    pause = state.outbox.pause_until() - time.time()
    if pause > 0:
        click.echo(f"paused by Pinterest (Retry-After) for another {pause:.0f}s")
    for reason, count in sorted(stats.skipped.items()):
        click.echo(f"skipped ({reason})  {count}")
    if stats.last_errors:
        click.echo("last errors:")
        for when, message in stats.last_errors:
            click.echo(f"  {_when(when)}  {message}")


@cli.command()
@click.option("--replay", is_flag=True, help="Queue the dead letters again.")
@click.option("--limit", default=100, show_default=True, help="How many to list.")
def dead(replay: bool, limit: int) -> None:
    """List dead letters with their event ids and Pinterest's message."""
    outbox = get_state().outbox
    if not replay:
        letters = outbox.dead_letters(limit)
        if not letters:
            click.echo("no dead letters")
        for letter in letters:
            click.echo(
                f"{_when(letter.died_at)}  {letter.event_name}  {letter.event_id}  "
                f"attempts={letter.attempts}  {letter.reason}"
            )
        return
    total = outbox.stats().dead
    replayed = 0
    with click.progressbar(length=total, label="replaying dead letters") as bar:
        while True:
            ids = [letter.id for letter in outbox.dead_letters(REPLAY_CHUNK)]
            if not ids:
                break
            count = outbox.replay_dead(ids)
            if count == 0:
                break
            replayed += count
            bar.update(count)
    click.echo(f"{replayed} dead letters queued again")


@cli.command("send-test")
def send_test() -> None:
    """Send one ?test=true event to check the credentials (Pinterest records nothing)."""
    state = get_state()
    event = build_event(
        "page_visit",
        names=state.names,
        event_id=f"dedupkit-send-test-{int(time.time())}",
        event_source_url="https://dedupkit.invalid/send-test",
        user={"client_ip_address": "192.0.2.1", "client_user_agent": "dedupkit send-test"},
    )
    try:
        with state.make_client(test_mode=True) as client:
            result = client.send([event.to_capi()])
    except DedupKitError as exc:
        raise click.ClickException(str(exc)) from exc
    outcome = result.results[0]
    if result.delivered:
        click.echo(
            f"ok: Pinterest accepted a test event for ad account {state.settings.ad_account_id}"
        )
        if outcome.message:
            click.echo(f"warning: {outcome.message}")
        return
    raise click.ClickException(f"Pinterest did not accept the test event: {outcome.message}")


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
