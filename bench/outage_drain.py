"""Drain rate after a long outage, SQLite and Redis side by side.

Run ``.venv/bin/python bench/outage_drain.py [--expired N] [--fresh N] [--reps R]``.

The state a shop is in on Monday morning after a token revoked on Friday night: a backlog of
events past their retry window (``--expired``), the last hour's events still inside it
(``--fresh``), and a credentials pause left by the process with the old token. A sender with
the new token starts in a thread, as the background sender does, against the loopback
stand-in for Pinterest in its own process. Timed, wall clock, from the start of the sender:

- ``first``: until the first fresh event reached Pinterest;
- ``fresh``: until every fresh event reached Pinterest (acked);
- ``all``: until nothing is left pending (the expired are dead letters);
- ``drain/s``: (expired + fresh) / ``all``, and ``fresh/s``: fresh / ``fresh``.

Backends run interleaved (sqlite, redis, sqlite, redis, …); medians over the reps. Redis is a
throwaway ``redis-server`` on a free loopback port (the row is skipped when it is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from _loopback_pinterest import AD_ACCOUNT_ID, TOKEN, Server, running_server  # noqa: E402
from throughput import running_redis  # noqa: E402

from dedupkit.delivery.client import CapiClient  # noqa: E402
from dedupkit.delivery.gate import CREDENTIALS  # noqa: E402
from dedupkit.delivery.sender import EXPIRED, Sender  # noqa: E402
from dedupkit.outbox import Outbox, open_outbox  # noqa: E402

WINDOW = 3600.0
HOUR = 3600.0


@dataclass
class Run:
    first: float
    fresh: float
    all: float


def checkout(event_id: str, event_time: float) -> dict[str, Any]:
    return {
        "event_name": "checkout",
        "event_id": event_id,
        "event_time": int(event_time),
        "action_source": "web",
        "user_data": {
            "em": ["5f4dcc3b5aa765d61d8327deb882cf99" * 2],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        },
        "custom_data": {"currency": "USD", "value": "49.90", "order_id": event_id},
    }


def fill(outbox: Outbox, expired: int, fresh: int, now: float) -> None:
    """The Monday-morning outbox: three days of expired events, then the last 50 minutes."""
    for i in range(expired):
        when = now - 72 * HOUR + i * (71 * HOUR / max(expired, 1))
        outbox.put(checkout(f"old-{i}", when), now=when)
    for i in range(fresh):
        when = now - 50 * 60 + i * (50 * 60 / max(fresh, 1))
        outbox.put(checkout(f"new-{i}", when), now=when)
    outbox.set_pause_until(
        now + 900, reason="HTTP 401 (Friday's token)", kind=CREDENTIALS, token_id="friday"
    )


def drain(outbox: Outbox, server: Server, fresh: int, expired: int) -> Run:
    client = CapiClient(ad_account_id=AD_ACCOUNT_ID, token=TOKEN, base_url=server.api_base_url)
    sender = Sender(outbox, client, retry_window=WINDOW)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    before = server.events_received()
    started = time.perf_counter()
    thread.start()
    first = done_fresh = 0.0
    try:
        deadline = started + 120
        while time.perf_counter() < deadline:
            received = server.events_received() - before
            now = time.perf_counter() - started
            if received and not first:
                first = now
            if received >= fresh and not done_fresh:
                done_fresh = now
            if done_fresh and outbox.count_dead(reason=EXPIRED) >= expired:
                stats = outbox.stats()
                if stats.pending == 0 and stats.in_flight == 0:
                    return Run(first, done_fresh, time.perf_counter() - started)
            time.sleep(0.005)
        raise RuntimeError("the backlog did not drain within 2 minutes")
    finally:
        stop.set()
        sender.interrupt()
        thread.join(30)
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="drain rate after a 72-hour outage")
    parser.add_argument("--expired", type=int, default=20_000, help="events past the window")
    parser.add_argument("--fresh", type=int, default=2_000, help="events inside the window")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    logging.getLogger("dedupkit").setLevel(logging.ERROR)
    skipped = []
    if "redis" in backends and shutil.which("redis-server") is None:
        backends.remove("redis")
        skipped.append("redis (redis-server is not installed)")
    runs: dict[str, list[Run]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as tmp, running_server("loopback") as server:
        workdir = Path(tmp)
        redis_url = ""
        with contextlib.ExitStack() as stack:
            if "redis" in backends:
                (workdir / "redis").mkdir()
                redis_url = stack.enter_context(running_redis(workdir / "redis"))
            for rep in range(args.reps):
                for backend in backends:
                    if backend == "sqlite":
                        url = f"sqlite:///{workdir}/outbox-{rep}.sqlite3"
                        outbox = open_outbox(url)
                    else:
                        outbox = open_outbox(redis_url, namespace=f"drain-{uuid.uuid4().hex}")
                    try:
                        fill(outbox, args.expired, args.fresh, time.time())
                        runs[backend].append(drain(outbox, server, args.fresh, args.expired))
                    finally:
                        outbox.close()
    report(runs, args.expired, args.fresh, skipped)
    return 0


def report(runs: dict[str, list[Run]], expired: int, fresh: int, skipped: list[str]) -> None:
    print(f"after a 72-hour credentials outage: {expired} expired + {fresh} fresh events, ")
    print("a credentials pause of the old token; a sender with the new token starts (medians)")
    print()
    print(f"{'outbox':<8} {'first':>8} {'fresh':>8} {'all':>8} {'fresh/s':>9} {'drain/s':>9}")
    for backend, results in runs.items():
        first = statistics.median(r.first for r in results)
        done = statistics.median(r.fresh for r in results)
        whole = statistics.median(r.all for r in results)
        print(
            f"{backend:<8} {first:>7.2f}s {done:>7.2f}s {whole:>7.2f}s "
            f"{fresh / done:>9.0f} {(expired + fresh) / whole:>9.0f}"
        )
    if len(runs) == 2:
        sqlite, redis = (statistics.median(r.all for r in runs[b]) for b in ("sqlite", "redis"))
        print(f"\ndrain time redis / sqlite: {redis / sqlite:.2f}")
    for what in skipped:
        print(f"skipped: {what}")


if __name__ == "__main__":
    raise SystemExit(main())
