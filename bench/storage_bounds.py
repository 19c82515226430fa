"""How long a page waits for a locked outbox, per intake outcome, and how many writes each is.

Run ``.venv/bin/python bench/storage_bounds.py [--reps N]``.

A second connection holds the SQLite file's write lock (``BEGIN IMMEDIATE``) while a request
tracks a checkout, in turn, for a shopper (an event), Googlebot (a skip: bot) and a shopper
without consent (a skip: no consent); interleaved, medians and maxima over the reps. Then,
with the lock gone, how many outbox writes one beacon with a tag flag costs. The issue
measured 0.05 s for a shopper and 5 s for Googlebot before, and two writes per beacon.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Flask

from dedupkit import DedupKit
from dedupkit.state import get_state

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
VISITORS = {
    "shopper (event)": (CHROME, ""),
    "Googlebot (skip: bot)": (GOOGLEBOT, ""),
    "no consent (skip)": (CHROME, "_dedupkit_consent=0"),
}


def make_app(folder: Path) -> tuple[Flask, DedupKit]:
    app = Flask("bench", instance_path=str(folder / "instance"))
    app.config.update(
        SECRET_KEY="bench",
        DEDUPKIT_AD_ACCOUNT_ID="549764982399",
        DEDUPKIT_CONVERSION_TOKEN="bench-token",
        DEDUPKIT_BACKGROUND_SENDER=False,
        DEDUPKIT_API_BASE_URL="http://127.0.0.1:9/v5",
    )
    kit = DedupKit(app)
    return app, kit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, kit = make_app(Path(tmp))
        state = get_state(app)
        path = state.queue_url.removeprefix("sqlite:///")
        state.outbox.stats()  # the file exists before it is locked
        times: dict[str, list[float]] = {name: [] for name in VISITORS}
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        for rep in range(args.reps):
            for name, (agent, cookie) in VISITORS.items():
                headers = {"User-Agent": agent, "Cookie": cookie}
                environ = {"REMOTE_ADDR": "198.51.100.7"}
                with app.test_request_context("/", headers=headers, environ_base=environ):
                    started = time.perf_counter()
                    kit.track("checkout", order_id=f"{rep}-{name}", value=10, currency="USD")
                    times[name].append(time.perf_counter() - started)
        holder.execute("ROLLBACK")
        holder.close()
        deadline = time.monotonic() + 30
        while len(state.fallback) and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"SQLite locked by another writer, {args.reps} requests each (ms)")
        print(f"{'visitor':<24}{'median':>8}{'max':>8}")
        for name, values in times.items():
            print(f"{name:<24}{statistics.median(values) * 1000:>8.1f}{max(values) * 1000:>8.1f}")
        writes = count_beacon_writes(app)
        print(f"outbox writes per beacon with a tag flag: {writes}")
        stats = state.outbox.stats()
        print(f"after the lock: pending {stats.pending}, skipped {dict(stats.skipped)}")


def count_beacon_writes(app: Flask) -> int:
    outbox: Any = get_state(app).outbox
    calls: list[str] = []
    for name in ("put", "record_skip", "record_tag"):
        method = getattr(outbox, name)

        def counted(*a: Any, _method: Any = method, _name: str = name, **k: Any) -> Any:
            calls.append(_name)
            return _method(*a, **k)

        setattr(outbox, name, counted)
    body = {"event_name": "add_to_cart", "event_id": "beacon-1", "tag": 1, "consent": 1}
    app.test_client().post(
        "/dedupkit/events", data=json.dumps(body), headers={"User-Agent": CHROME}
    )
    return len(calls)


if __name__ == "__main__":
    main()
