"""Does the cost per event stay flat as the backlog grows? SQLite and Redis, 1k to 1M queued.

Run ``.venv/bin/python bench/scale.py [--max-backlog N] [--reps R] [--backends sqlite,redis]``.

Every backlog size has its own outbox (a SQLite file; a namespace of one throwaway
``redis-server`` on a free loopback port), pre-filled with realistic checkout events, so the
sizes are measured side by side, interleaved (1k 10k 100k 1M, 1k 10k …), medians over the reps:

* ``track``: CPU per ``kit.track("checkout", …)`` in a request (distinct user agent, IP and
  customer each time; background sender off), through a Flask app on that outbox;
* ``claim→ack``: CPU per event of the sender's storage work, ``claim(1000)`` then ``ack``
  (no HTTP: that part does not depend on the backlog); the claimed events are topped up again
  outside the clock. For Redis both figures add redis-server's own CPU (``INFO cpu``), where
  the Lua scripts run.

Then, on the largest backlog of each backend: the drain rate (events/s acknowledged by the
stand-in Pinterest) of a background sender in another process, and the wall latency of
``kit.track()`` at ``--rate`` events/s before and while it drains (a claim of 1,000 rows holds
SQLite's write lock). Backlogs are pre-filled through the outbox's own statements: SQLite's
``INSERT`` in transactions of 100,000 rows, Redis' put script pipelined, for events built
once and given distinct event ids.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from _loopback_pinterest import AD_ACCOUNT_ID, TOKEN, Server, running_server  # noqa: E402
from hot_path import Traffic, realistic  # noqa: E402
from throughput import running_redis  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
BATCH = 1000
#: Events built with full hashing; the backlog repeats them under distinct event ids.
DISTINCT = 1000
PLACEHOLDER = "prefill-000000000"
FILL_CHUNK = 100_000
#: Redis fills of this many events or more run in two processes.
PARALLEL_FILL = 50_000
#: track() calls per outbox before the clock starts.
WARMUP = 20


# -- the backlogs --------------------------------------------------------------------------


def base_payloads(traffic: Traffic) -> list[dict[str, Any]]:
    """``DISTINCT`` CAPI checkout events of distinct customers, their event id a placeholder."""
    from dedupkit.event.model import build_event
    from dedupkit.event.user_data import UserDataHasher

    hasher = UserDataHasher(phone_region="US")
    return [
        build_event(
            "checkout",
            {"order_id": f"B{i:06d}", "value": "72.39", "currency": "USD"},
            user={
                **traffic.people[i],
                "client_ip_address": traffic.ips[i],
                "client_user_agent": traffic.agents[i],
            },
            hasher=hasher,
            event_id=PLACEHOLDER,
        ).to_capi()
        for i in range(DISTINCT)
    ]


class Backlog:
    """One outbox and how to add ``n`` pending events to it quickly."""

    url: str
    namespace: str

    def fill(self, ids: range) -> None:
        """Add one pending event per number of ``ids`` (their event ids)."""
        raise NotImplementedError

    def server_cpu(self) -> float:
        """CPU seconds of the store's own process so far (0 when it runs in this one)."""
        return 0.0


class SQLiteBacklog(Backlog):
    """A SQLite outbox made by :class:`SQLiteOutbox`, filled with its own ``INSERT``."""

    def __init__(self, path: Path, payloads: Sequence[dict[str, Any]]) -> None:
        from dedupkit.outbox.base import event_time_of, stored_entry, summary_of
        from dedupkit.outbox.sqlite import SQLiteOutbox

        outbox = SQLiteOutbox(path)  # the schema, exactly as dedupkit makes it
        outbox.put({**payloads[0], "event_id": "schema"})
        outbox.close()
        self.url, self.namespace, self.path = f"sqlite:///{path}", "", path
        entries = [(stored_entry(p), p) for p in payloads]
        self.rows = [(e[0], e[2], event_time_of(p), summary_of(p)) for e, p in entries]

    def fill(self, ids: range) -> None:
        from dedupkit.outbox.sqlite import _PUT

        now = time.time()
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            for start in range(0, len(ids), FILL_CHUNK):
                rows = []
                for i in ids[start : start + FILL_CHUNK]:
                    name, text, event_time, summary = self.rows[i % DISTINCT]
                    event_id = f"prefill-{i:09d}"
                    data = text.replace(PLACEHOLDER, event_id)
                    rows.append((name, event_id, data, event_time, now, now, now, *summary))
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_PUT, rows)
                conn.execute("COMMIT")
        finally:
            conn.close()


class RedisBacklog(Backlog):
    """A namespace of a Redis outbox, filled by its own put script, pipelined.

    The script's keys and arguments are those ``RedisOutbox.put`` computes for each distinct
    event; only the event id (and so the idempotency key) changes from row to row.
    """

    def __init__(self, url: str, namespace: str, payloads: Sequence[dict[str, Any]]) -> None:
        from dedupkit.outbox.redis import RedisOutbox

        self.url, self.namespace, self.payloads = url, namespace, payloads
        self.outbox = RedisOutbox(url, namespace=namespace)
        calls: list[tuple[list[str], list[Any]]] = []

        def capture(script: Any, action: str, keys: Any, args: Any, client: Any = None) -> int:
            calls.append((list(keys), list(args)))
            return 1

        self.outbox._run = capture  # type: ignore[method-assign]
        for payload in payloads:
            self.outbox.put(payload)
        del self.outbox._run
        self.calls = calls
        idem = calls[0][0][0]
        if idem != self._idem_key(idem, calls[0][1][2], PLACEHOLDER):
            raise SystemExit("scale: RedisOutbox's idempotency key changed; update RedisBacklog")

    @staticmethod
    def _idem_key(template: str, name: str, event_id: str) -> str:
        digest = hashlib.sha256(json.dumps([name, event_id]).encode()).hexdigest()
        return template.rsplit(":", 1)[0] + ":" + digest

    def fill(self, ids: range) -> None:
        """Large fills run in two processes: redis-server, not one client, is then the limit."""
        if len(ids) < PARALLEL_FILL:
            self.fill_here(ids)
            return
        half = len(ids) // 2
        args = [
            (self.url, self.namespace, self.payloads, part) for part in (ids[:half], ids[half:])
        ]
        with mp.get_context("spawn").Pool(2) as pool:
            pool.starmap(_fill_redis, args)

    def fill_here(self, ids: range) -> None:
        pipe = self.outbox._redis().pipeline(transaction=False)
        for count, i in enumerate(ids, 1):
            keys, args = self.calls[i % DISTINCT]
            event_id = f"prefill-{i:09d}"
            keys = [self._idem_key(keys[0], args[2], event_id), *keys[1:]]
            args = [args[0], args[1].replace(PLACEHOLDER, event_id), args[2], event_id, *args[4:]]
            self.outbox._put(keys=keys, args=args, client=pipe)
            if count % BATCH == 0:
                pipe.execute()
        pipe.execute()

    def server_cpu(self) -> float:
        info = self.outbox._redis().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _fill_redis(url: str, namespace: str, payloads: Sequence[dict[str, Any]], ids: range) -> None:
    RedisBacklog(url, namespace, payloads).fill_here(ids)


class Ids:
    """Event id numbers, handed out in blocks, never twice."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> range:
        block = range(self.next, self.next + n)
        self.next += n
        return block


# -- the measurements ----------------------------------------------------------------------


def make_shop(backlog: Backlog, api_base_url: str, sender: bool) -> tuple[Any, Any]:
    """A Flask app with dedupkit on ``backlog``'s outbox, and its ``DedupKit``."""
    from flask import Flask

    from dedupkit import DedupKit

    app = Flask("scale_shop")
    app.config.update(
        DEDUPKIT_AD_ACCOUNT_ID=AD_ACCOUNT_ID,
        DEDUPKIT_CONVERSION_TOKEN=TOKEN,
        DEDUPKIT_TAG_ID="2612345678901",
        DEDUPKIT_API_BASE_URL=api_base_url,
        DEDUPKIT_QUEUE_URL=backlog.url,
        DEDUPKIT_QUEUE_NAMESPACE=backlog.namespace or None,
        DEDUPKIT_BACKGROUND_SENDER=sender,
        DEDUPKIT_PHONE_REGION="US",
    )
    return app, DedupKit(app)


@dataclass
class Size:
    """One backlog size of one backend: its outbox, its shop, its samples."""

    backend: str
    size: int
    backlog: Backlog
    app: Any
    kit: Any
    track: list[float] = field(default_factory=list)
    claim_ack: list[float] = field(default_factory=list)
    acked: int = 0


class Visitors:
    """Hands out the requests of the realistic traffic, none twice."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic, self.next = traffic, 0

    def take(self) -> int:
        self.next += 1
        if self.next >= len(self.traffic.agents):
            raise SystemExit("scale: out of distinct visitors; raise TRAFFIC")
        return self.next


def track_one(app: Any, kit: Any, visitors: Visitors, order: str) -> tuple[float, float]:
    """(CPU s, wall s) of one ``kit.track("checkout", …)`` in a fresh request."""
    i = visitors.take()
    t = visitors.traffic
    headers = {"User-Agent": t.agents[i]}
    with app.test_request_context(
        "/thanks", headers=headers, environ_base={"REMOTE_ADDR": t.ips[i]}
    ):
        cpu, wall = time.process_time(), time.perf_counter()
        kit.track("checkout", order_id=order, value="72.39", currency="USD", user=t.people[i])
        return time.process_time() - cpu, time.perf_counter() - wall


def measure_track(entry: Size, visitors: Visitors, calls: int, orders: Iterator[int]) -> None:
    kit = entry.kit
    gc.collect()
    server = entry.backlog.server_cpu()
    cpu = sum(track_one(entry.app, kit, visitors, f"T{next(orders)}")[0] for _ in range(calls))
    cpu += entry.backlog.server_cpu() - server
    entry.track.append(cpu / calls * 1e6)


def measure_claim_ack(entry: Size, batches: int, ids: Ids) -> None:
    from dedupkit.state import get_state

    outbox = get_state(entry.app).outbox
    gc.collect()
    server, cpu, events = entry.backlog.server_cpu(), time.process_time(), 0
    for _ in range(batches):
        claimed = outbox.claim(BATCH)
        outbox.ack([c.id for c in claimed])
        events += len(claimed)
    cpu = time.process_time() - cpu + entry.backlog.server_cpu() - server
    entry.claim_ack.append(cpu / events * 1e6)
    entry.acked += events
    entry.backlog.fill(ids.take(events))  # back to the same backlog, off the clock


# -- draining a large backlog --------------------------------------------------------------


class KeptInMemory(logging.Handler):
    """Counts the puts that found SQLite locked past dedupkit's ``PUT_TIMEOUT`` (their event
    then waits in memory, as the log says); other records go to stderr as usual."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.setFormatter(logging.Formatter("%(levelname)s in %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if "keeping the event in memory" in record.getMessage():
            self.count += 1
        elif "in memory were written" not in record.getMessage():
            print(self.format(record), file=sys.stderr)


KEPT = KeptInMemory()


def drain_process(url: str, namespace: str, api_base_url: str, ready: Any, stop: Any) -> None:
    """Another web process whose background sender drains the backlog until ``stop``."""
    from dedupkit.state import get_state

    backlog = Backlog()
    backlog.url, backlog.namespace = url, namespace
    state = get_state(make_shop(backlog, api_base_url, sender=True)[0])
    state.start_delivery()
    ready.set()
    stop.wait()
    state.background.stop(timeout=30)


@dataclass
class Drain:
    backend: str
    rates: list[float] = field(default_factory=list)
    #: track() calls whose put found the outbox locked too long: kept in memory.
    kept: int = 0
    idle: list[float] = field(default_factory=list)
    draining: list[float] = field(default_factory=list)


def paced_tracks(
    entry: Size, visitors: Visitors, rate: float, seconds: float, out: list[float]
) -> None:
    """``kit.track()`` at ``rate`` per second for ``seconds``; wall latencies into ``out``."""
    kit = entry.kit
    start = time.monotonic()
    for n in itertools.count():
        due = start + n / rate
        if due - start >= seconds:
            return
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.append(track_one(entry.app, kit, visitors, f"D{entry.backend}{n}-{due}")[1])


def measure_drain(
    entry: Size, server: Server, visitors: Visitors, rate: float, seconds: float
) -> Drain:
    """Idle window, then a sender in another process drains while this one tracks, idle again."""
    result = Drain(entry.backend)
    paced_tracks(entry, visitors, rate, seconds, result.idle)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    backlog = entry.backlog
    process = ctx.Process(
        target=drain_process,
        args=(backlog.url, backlog.namespace, server.api_base_url, ready, stop),
        daemon=True,
    )
    process.start()
    try:
        if not ready.wait(60):
            raise SystemExit("scale: the draining process did not start")
        before = _wait_for_deliveries(server)
        started, kept = time.monotonic(), KEPT.count
        paced_tracks(entry, visitors, rate, seconds, result.draining)
        result.rates.append((server.events_received() - before) / (time.monotonic() - started))
        result.kept = KEPT.count - kept
    finally:
        stop.set()
        process.join(timeout=60)
        if process.is_alive():
            process.terminate()
            process.join()
    paced_tracks(entry, visitors, rate, seconds, result.idle)
    return result


def _wait_for_deliveries(server: Server) -> int:
    """The stand-in's count once the sender's first batch arrived (the rate starts there)."""
    first = server.events_received()
    deadline = time.monotonic() + 60
    while (count := server.events_received()) == first:
        if time.monotonic() > deadline:
            raise SystemExit("scale: the sender delivered nothing within 60 s")
        time.sleep(0.02)
    return count


# -- the run -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-backlog", type=int, default=1_000_000, help="largest size")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--tracks", type=int, default=300, help="track() calls per size and rep")
    parser.add_argument("--batches", type=int, default=3, help="claim→ack batches per size/rep")
    parser.add_argument("--rate", type=float, default=200.0, help="track()/s while draining")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of each drain window")
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated")
    args = parser.parse_args(argv)
    sizes = [s for s in SIZES if s <= args.max_backlog] or [args.max_backlog]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    skipped = []
    if "redis" in backends and shutil.which("redis-server") is None:
        backends.remove("redis")
        skipped.append("redis (redis-server is not installed)")

    entries_count = len(sizes) * len(backends)
    windows = int(3 * args.window * args.rate) * len(backends)
    tracks = entries_count * (WARMUP + args.reps * args.tracks) + windows
    traffic = realistic(DISTINCT + tracks + 100)
    visitors = Visitors(traffic)
    visitors.next = DISTINCT  # the backlog's customers are not the tracked ones
    payloads = base_payloads(traffic)
    ids, orders = Ids(), itertools.count()
    began = time.monotonic()
    logging.getLogger("dedupkit").addHandler(KEPT)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dedupkit-scale-")))
        server = stack.enter_context(running_server("loopback"))
        redis_url = ""
        if "redis" in backends:
            (workdir / "redis").mkdir()
            redis_url = stack.enter_context(running_redis(workdir / "redis"))
        entries: list[Size] = []
        fill_seconds: dict[str, float] = {}
        for backend in backends:
            print(f"scale: pre-filling {backend} backlogs of {sizes} events", file=sys.stderr)
            start = time.monotonic()
            for size in sizes:
                backlog: Backlog
                if backend == "sqlite":
                    backlog = SQLiteBacklog(workdir / f"outbox-{size}.sqlite3", payloads)
                else:
                    backlog = RedisBacklog(redis_url, f"scale{size}", payloads)
                backlog.fill(ids.take(size))
                app, kit = make_shop(backlog, server.api_base_url, sender=False)
                entries.append(Size(backend, size, backlog, app, kit))
            fill_seconds[backend] = time.monotonic() - start
        for entry in entries:  # warm-up: imports, connections, compiled scripts
            measure_track(entry, visitors, WARMUP, orders)
            entry.track.clear()
        gc.freeze()
        print("scale: measuring track() and claim→ack, then draining", file=sys.stderr)
        for _ in range(args.reps):
            for entry in entries:
                measure_track(entry, visitors, args.tracks, orders)
                measure_claim_ack(entry, min(args.batches, max(1, entry.size // BATCH)), ids)
        drains = [
            measure_drain(
                max((e for e in entries if e.backend == backend), key=lambda e: e.size),
                server,
                visitors,
                args.rate,
                args.window,
            )
            for backend in backends
        ]
        check_outboxes(entries)
    report(entries, drains, fill_seconds, args, time.monotonic() - began, skipped)
    return 0


def check_outboxes(entries: Sequence[Size]) -> None:
    """Nothing was dead-lettered, and every directly claimed event was acknowledged."""
    from dedupkit.state import get_state

    for entry in entries:
        stats = get_state(entry.app).outbox.stats()
        if stats.dead or (entry.backend == "sqlite" and stats.delivered < entry.acked):
            raise SystemExit(f"scale: {entry.backend} {entry.size}: {stats}")


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(
    entries: Sequence[Size],
    drains: Sequence[Drain],
    fill_seconds: dict[str, float],
    args: argparse.Namespace,
    elapsed: float,
    skipped: Sequence[str],
) -> None:
    med: Callable[[Sequence[float]], float] = statistics.median
    fills = ", ".join(f"{b} {s:.0f} s" for b, s in fill_seconds.items())
    print(
        f"\nCPU µs per event by backlog (pending events), {args.reps} interleaved reps, medians "
        f"(min-max); Redis figures include redis-server's CPU. Pre-fill: {fills}.\n"
    )
    print(f"  {'backend':<7} {'backlog':>9}  {'track()':>18}  {'claim→ack':>18}")
    for e in entries:
        spread_t = f"{med(e.track):6.0f} ({min(e.track):.0f}-{max(e.track):.0f})"
        spread_c = f"{med(e.claim_ack):6.1f} ({min(e.claim_ack):.0f}-{max(e.claim_ack):.0f})"
        print(f"  {e.backend:<7} {e.size:>9,}  {spread_t:>18}  {spread_c:>18}")
    print()
    for backend in dict.fromkeys(e.backend for e in entries):
        rows = [e for e in entries if e.backend == backend]
        small, large = rows[0], rows[-1]
        label = f"{large.size // 1000:,}k ÷ {small.size // 1000:,}k"
        print(
            f"  {backend}: {label}: track() {med(large.track) / med(small.track):.2f}x, "
            f"claim→ack {med(large.claim_ack) / med(small.claim_ack):.2f}x  (flat: ≈ 1)"
        )
    print(
        f"\nDraining the largest backlog: a background sender in another process delivering "
        f"to the stand-in, while this process tracks at {args.rate:g}/s ({args.window:g} s "
        "windows: before, while and after the drain); track() wall latency, ms\n"
    )
    print(
        f"  {'backend':<7} {'drain ev/s':>10}  {'idle p50':>8} {'p99':>6} {'max':>6}  "
        f"{'draining p50':>12} {'p99':>6} {'max':>6}  p99 ratio  kept"
    )
    for d in drains:
        print(
            f"  {d.backend:<7} {med(d.rates):>10.0f}  {_pct(d.idle, 0.5):>8.2f} "
            f"{_pct(d.idle, 0.99):>6.2f} {_pct(d.idle, 1):>6.2f}  {_pct(d.draining, 0.5):>12.2f} "
            f"{_pct(d.draining, 0.99):>6.2f} {_pct(d.draining, 1):>6.2f}  "
            f"{_pct(d.draining, 0.99) / _pct(d.idle, 0.99):>8.1f}x  {d.kept:>4}"
        )
    print(
        "  kept: track() calls whose put found the outbox locked past dedupkit's 50 ms "
        "PUT_TIMEOUT (the event waited in memory, then was written)"
    )
    for item in skipped:
        print(f"skipped: {item}")
    print(f"\n{elapsed:.0f} s in all.")


if __name__ == "__main__":
    sys.exit(main())
