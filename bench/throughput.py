"""Sustained events/s through the SQLite and the Redis outbox, and enqueue latency.

Run ``.venv/bin/python bench/throughput.py [--events N] [--reps R] [--backends sqlite,redis]``.

Each scenario runs web processes (like ``gunicorn -w 2``), each with dedupkit's background
sender thread, sharing one fresh outbox and delivering to the stand-in Pinterest (another
process on 127.0.0.1). Everything shares this machine's two cores, as it would in production:

* ``view``: each process calls a Flask view (``kit.track("checkout", …)``) through Flask's
  test client, as fast as it can (closed loop): no HTTP server, but the whole request path.
* ``track``: each process calls ``kit.track()`` in a loop, no request: what the outbox and
  the sender sustain without Flask's per-request cost.
* ``paced``: one process calls the view at a fixed rate well below saturation: the latency a
  visitor sees when the site is not overloaded.

``sustained`` is the events/s acknowledged in the outbox while the load lasted (between the
first and the last batch acknowledged before the last ``track()`` returned); ``enqueue``
counts until the last ``track()`` returned; ``end-to-end`` is N over the time from the first
event to the last acknowledgement, the sender's last ``FLUSH_INTERVAL`` (1 s) included, and
``drain`` the time from the last ``track()`` to the last acknowledgement (about 1 s when
delivery keeps up, more when a backlog built up).
Latencies are of the ``kit.track()`` call inside the view (``time.perf_counter``), and of the
whole test-client request. Scenarios run interleaved (sqlite, redis, sqlite, redis …)
``--reps`` times; rates are medians, latency percentiles are over all the reps' samples.
Redis is a throwaway ``redis-server`` on a free loopback port, stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from _loopback_pinterest import AD_ACCOUNT_ID, TOKEN, running_server  # noqa: E402
from delivery_cpu import USER_AGENT, checkout_inputs  # noqa: E402

#: Events each process sends before the clock starts: imports, connections, sender thread.
WARMUP = 20
#: Longest wait for the outbox to drain after the last event.
DRAIN_TIMEOUT = 60.0
POLL_INTERVAL = 0.05
#: What the view receives from the request rather than from ``user=``.
FROM_REQUEST = ("client_ip_address", "client_user_agent", "click_id")


# -- the web processes -------------------------------------------------------------------


def make_app(queue_url: str, api_base_url: str, latencies: list[float]) -> Any:
    """A shop whose thank-you view tracks the checkout; returns (app, kit, orders)."""
    from flask import Flask

    from dedupkit import DedupKit

    app = Flask("bench_shop")
    app.config.update(
        DEDUPKIT_AD_ACCOUNT_ID=AD_ACCOUNT_ID,
        DEDUPKIT_CONVERSION_TOKEN=TOKEN,
        DEDUPKIT_API_BASE_URL=api_base_url,
        DEDUPKIT_QUEUE_URL=queue_url,
    )
    kit = DedupKit(app)
    #: What the view tracks for each order id (in a shop: loaded from the database).
    orders: dict[str, dict[str, Any]] = {}

    @app.get("/thanks/<order_id>")
    def thanks(order_id: str) -> str:
        args = orders.pop(order_id)
        start = time.perf_counter()
        event = kit.track("checkout", **args)
        latencies.append(time.perf_counter() - start)
        return event.event_id

    return app, kit, orders


def web_process(
    index: int,
    mode: str,
    count: int,
    rate: float,
    queue_url: str,
    api_base_url: str,
    ready: Any,
    go: Any,
    stop: Any,
    results: Any,
) -> None:
    """One web process: warm up, wait for ``go``, send ``count`` events, report, wait."""
    from dedupkit.state import get_state

    latencies: list[float] = []
    app, kit, orders = make_app(queue_url, api_base_url, latencies)
    now = int(time.time())
    # Distinct orders in every process: order ids are event ids.
    all_inputs = checkout_inputs(WARMUP + count, now)
    for i, args in enumerate(all_inputs):
        args["order_id"] = f"P{index}-{i:07d}"
    client = app.test_client()
    client.set_cookie("_epik", "dj0yJnU9bench")
    headers = {"User-Agent": USER_AGENT}
    environ = {"REMOTE_ADDR": "203.0.113.7"}
    request_latencies: list[float] = []

    def view(args: dict[str, Any]) -> None:
        orders[args["order_id"]] = {
            **{k: v for k, v in args.items() if k not in ("event_time", "event_source_url")},
            "user": {k: v for k, v in args["user"].items() if k not in FROM_REQUEST},
        }
        start = time.perf_counter()
        response = client.get(f"/thanks/{args['order_id']}", headers=headers, environ_base=environ)
        request_latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"the view answered {response.status_code}")

    def direct(args: dict[str, Any]) -> None:
        start = time.perf_counter()
        kit.track("checkout", **args)
        latencies.append(time.perf_counter() - start)

    send = direct if mode == "track" else view
    # Only direct calls need an app context: one around the test client's requests would be
    # reused by all of them, and flask.g (where dedupkit caches the visitor) with it.
    with app.app_context() if mode == "track" else contextlib.nullcontext():
        for args in all_inputs[:WARMUP]:
            send(args)
        latencies.clear()
        request_latencies.clear()
        ready.put(index)
        go.wait()
        cpu_start, started = time.process_time(), time.monotonic()
        for i, args in enumerate(all_inputs[WARMUP:]):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            send(args)
        finished = time.monotonic()
        stop.wait()  # the parent saw everything delivered: the sender's CPU is in too
        cpu = time.process_time() - cpu_start
        results.put(
            {
                "index": index,
                "latencies": latencies,
                "request_latencies": request_latencies,
                "started": started,
                "finished": finished,
                "cpu": cpu,
            }
        )
        get_state(app).background.stop()


# -- one scenario ------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    scenario: str
    workers: int
    events: int
    seconds: float
    enqueue_seconds: float
    drain: float
    delivered_rate: float | None
    cpu_per_event: float
    latencies: list[float]
    request_latencies: list[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def run_scenario(
    backend: str,
    queue_url: str,
    api_base_url: str,
    scenario: str,
    workers: int,
    events: int,
    rate: float = 0.0,
) -> Result:
    from dedupkit.outbox import open_outbox

    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    mode = "track" if scenario == "track" else "view"
    shares = [events // workers + (i < events % workers) for i in range(workers)]
    channels = (ready, go, stop, results)
    processes = [
        ctx.Process(
            target=web_process,
            args=(i, mode, shares[i], rate / workers, queue_url, api_base_url, *channels),
            daemon=True,
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    # The app's default Redis namespace: one per ad account.
    outbox = open_outbox(queue_url, namespace=f"dedupkit:{AD_ACCOUNT_ID}")
    try:
        for _ in processes:
            ready.get(timeout=120)
        warm = WARMUP * workers
        _wait_delivered(outbox, warm, [])
        go.set()
        started = time.monotonic()
        samples: list[tuple[float, int]] = []
        done_at = _wait_delivered(outbox, warm + events, samples)
        stop.set()
        reports = [results.get(timeout=60) for _ in processes]
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
        outbox.close()
    first = min(r["started"] for r in reports)
    last = max(r["finished"] for r in reports)
    return Result(
        backend=backend,
        scenario=scenario,
        workers=workers,
        events=events,
        seconds=done_at - min(first, started),
        enqueue_seconds=last - first,
        drain=done_at - last,
        delivered_rate=_delivery_rate(samples, last),
        cpu_per_event=sum(r["cpu"] for r in reports) / events,
        latencies=[x for r in reports for x in r["latencies"]],
        request_latencies=[x for r in reports for x in r["request_latencies"]],
    )


def _wait_delivered(outbox: Any, count: int, samples: list[tuple[float, int]]) -> float:
    """Poll the outbox until ``count`` events were acknowledged; returns when."""
    deadline = time.monotonic() + DRAIN_TIMEOUT + count / 100
    while True:
        delivered = outbox.stats().delivered
        now = time.monotonic()
        samples.append((now, delivered))
        if delivered >= count:
            return now
        if now > deadline:
            raise SystemExit(f"throughput: only {delivered} of {count} events were delivered")
        time.sleep(POLL_INTERVAL)


def _delivery_rate(samples: list[tuple[float, int]], until: float) -> float | None:
    """Events/s acknowledged while the load lasted, from the first to the last ack before
    ``until``: acks come a batch at a time, so the rate is measured between two of them."""
    steps = [now for now, prev in zip(samples[1:], samples, strict=False) if now[1] > prev[1]]
    steps = [step for step in steps if step[0] <= until]
    if len(steps) < 2 or steps[-1][0] <= steps[0][0]:
        return None
    (t1, d1), (t2, d2) = steps[0], steps[-1]
    return (d2 - d1) / (t2 - t1)


# -- Redis -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on 127.0.0.1 without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(directory), "--logfile", str(directory / "redis.log")]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


# -- the report --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="outbox throughput and enqueue latency")
    parser.add_argument("--events", type=int, default=8000, help="events per scenario run")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--workers", type=int, default=2, help="web processes (default 2)")
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of 'paced'")
    parser.add_argument("--paced-events", type=int, default=400, help="events of 'paced'")
    parser.add_argument("--server", choices=("loopback", "fake"), default="loopback")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"sqlite", "redis"} or min(args.events, args.reps, args.workers) < 1:
        parser.error("--backends takes sqlite and/or redis; --events, --reps, --workers > 0")

    skipped: list[str] = []
    if "redis" in backends and shutil.which("redis-server") is None:
        backends.remove("redis")
        skipped.append("redis (redis-server is not installed)")
    scenarios = [
        ("view", args.workers, args.events, 0.0),
        ("track", args.workers, args.events, 0.0),
        ("paced", 1, args.paced_events, args.rate),
    ]
    runs: dict[tuple[str, str], list[Result]] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dedupkit-bench-")))
        server = stack.enter_context(running_server(args.server))
        redis_url = ""
        if "redis" in backends:
            (workdir / "redis").mkdir()
            redis_url = stack.enter_context(running_redis(workdir / "redis"))
        fresh = itertools.count()
        for _ in range(args.reps):
            for scenario, workers, events, rate in scenarios:
                for backend in backends:
                    if backend == "redis":
                        _flush_redis(redis_url)
                        url = redis_url
                    else:
                        directory = workdir / f"sqlite{next(fresh)}"
                        directory.mkdir()
                        url = f"sqlite:///{directory}/outbox.sqlite3"
                    result = run_scenario(
                        backend, url, server.api_base_url, scenario, workers, events, rate
                    )
                    runs.setdefault((backend, scenario), []).append(result)
        received = server.events_received()
    expected = sum(r.events + WARMUP * r.workers for rs in runs.values() for r in rs)
    if received != expected:
        raise SystemExit(f"throughput: the server received {received} events, not {expected}")
    report(args, server.kind, runs, skipped)
    return 0


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


def report(
    args: argparse.Namespace,
    server: str,
    runs: dict[tuple[str, str], list[Result]],
    skipped: list[str],
) -> None:
    print(
        f"dedupkit outbox throughput — {os.cpu_count()} CPUs shared by {args.workers} web "
        f"processes, their sender threads, the outbox and the {server} Pinterest stand-in; "
        f"{args.reps} interleaved reps, medians"
    )
    print(
        "sustained: events/s acknowledged while the load lasted; enqueue: events/s until the "
        "last track() returned;\nend-to-end: N / (first event to last ack), range over reps; "
        "drain: last track() to last ack;\nCPU: web processes only, sender threads included; "
        "track: kit.track() in the view; request: the whole test-client request"
    )
    print()
    print(
        f"{'backend':<7} {'scenario':<10} {'events':>6} {'sustained':>9} {'enqueue':>7} "
        f"{'end-to-end':>15} {'drain s':>7} {'CPU µs/ev':>9} {'track p50':>9} {'p99':>6} "
        f"{'request p50':>11} {'p99':>6}"
    )
    print(" " * 26 + "(events/s)" + " " * 68 + "(ms)")
    for (backend, scenario), rs in runs.items():
        paced = scenario == "paced"
        rates = [r.rate for r in rs]
        sustained = [r.delivered_rate for r in rs if r.delivered_rate]
        end_to_end = f"{statistics.median(rates):.0f} {min(rates):.0f}-{max(rates):.0f}"
        delivered = f"{statistics.median(sustained):.0f}" if sustained and not paced else "-"
        enqueue = statistics.median(r.events / r.enqueue_seconds for r in rs)
        drain = statistics.median(r.drain for r in rs)
        cpu = statistics.median(r.cpu_per_event for r in rs) * 1e6
        latencies = [x for r in rs for x in r.latencies]
        requests = [x for r in rs for x in r.request_latencies]
        label = f"paced@{args.rate:g}" if paced else scenario
        print(
            f"{backend:<7} {label:<10} {rs[0].events:>6} {delivered:>9} {enqueue:>7.0f} "
            f"{'-' if paced else end_to_end:>15} {drain:>7.2f} {cpu:>9.0f} "
            f"{_ms(latencies, 0.5):>9} {_ms(latencies, 0.99):>6} "
            f"{_ms(requests, 0.5):>11} {_ms(requests, 0.99):>6}"
        )
    for item in skipped:
        print(f"skipped: {item}")
    print()
    for scenario in ("view", "track"):
        pair = [runs.get((backend, scenario), []) for backend in ("sqlite", "redis")]
        rates = [[r.delivered_rate for r in rs if r.delivered_rate] for rs in pair]
        if all(rates):
            ratio = statistics.median(rates[0]) / statistics.median(rates[1])
            print(f"SQLite / Redis sustained events/s, {scenario}: {ratio:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
