"""Requests/s and latency under gunicorn (2 workers), driven over loopback keep-alive connections.

Run ``.venv/bin/python bench/http_load.py [--seconds S] [--reps R] [--connections C]``.

gunicorn serves ``_gunicorn_shop.py`` on 127.0.0.1 (``-w 2 -k gthread``: the threaded worker
keeps connections alive, as a shop's workers behind a proxy do), each worker with dedupkit's
background sender delivering to the stand-in Pinterest (another process), one SQLite outbox.
A load generator in another process (``_load_client.py``) keeps ``--connections`` requests in
flight for ``--seconds``; four variants, interleaved ``--reps`` times, on realistic traffic
(every request a different browser user agent, client IP and customer):

* ``plain`` vs ``tracked``: ``GET`` a thank-you page, without and with ``kit.track("checkout")``;
* ``noop`` vs ``events``: ``POST`` a browser's ``add_to_cart`` beacon to a view that reads it
  and answers 204, and to ``/dedupkit/events`` (``DEDUPKIT_RATE_LIMIT=off``; the client IP
  comes from ``DEDUPKIT_CLIENT_IP_HEADER``, so every beacon has its own).

Figures: requests/s (median over reps), p50/p99 latency (over every rep's requests), and the
workers' CPU per request (``/proc``, sender threads included). The ratios compare each pair.
Everything listens on 127.0.0.1 and is stopped at the end; the script fails if an event
tracked or accepted was not delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from _loopback_pinterest import AD_ACCOUNT_ID, TOKEN, Server, running_server  # noqa: E402
from hot_path import Traffic, realistic  # noqa: E402
from throughput import _free_port  # noqa: E402

VARIANTS = ("plain", "tracked", "noop", "events")
IP_HEADER = "X-Real-IP"
#: Requests written per variant and rep: more than the fastest variant serves in a window.
CAP_PER_SECOND = 6000
TICKS = os.sysconf("SC_CLK_TCK")


# -- the requests --------------------------------------------------------------------------


def beacon(i: int, traffic: Traffic) -> str:
    """What dedupkit.js posts for ``dedupkit.track("add_to_cart", …)`` on a product page."""
    page = f"https://shop.example/products/sku-{i % 500}"
    body = {
        "event_name": "add_to_cart",
        "event_id": str(uuid.UUID(int=i + (1 << 100))),
        "event_time": int(time.time()),
        "event_source_url": page,
        "data": {
            "value": 24.13,
            "currency": "USD",
            "line_items": [
                {"product_id": f"SKU-{i % 500}", "product_price": 24.13, "product_quantity": 1}
            ],
        },
        "tag": 1,
    }
    return json.dumps(body, separators=(",", ":"))


def raw_request(variant: str, i: int, port: int, traffic: Traffic) -> str:
    """Request ``i`` of ``variant``, as a browser of the traffic's visitor ``i`` sends it."""
    host = f"127.0.0.1:{port}"
    head = [
        f"Host: {host}",
        f"User-Agent: {traffic.agents[i]}",
        f"{IP_HEADER}: {traffic.ips[i]}",
        "Accept-Language: en-US,en;q=0.9",
    ]
    if variant in ("plain", "tracked"):
        head.append("Accept: text/html,application/xhtml+xml,*/*;q=0.8")
        return f"GET /{variant}/{i} HTTP/1.1\r\n" + "\r\n".join(head) + "\r\n\r\n"
    data = beacon(i, traffic)
    head += [
        f"Origin: http://{host}",
        f"Referer: https://shop.example/products/sku-{i % 500}",
        "Content-Type: text/plain;charset=UTF-8",
        f"Content-Length: {len(data.encode())}",
    ]
    path = "/noop" if variant == "noop" else "/dedupkit/events"
    return f"POST {path} HTTP/1.1\r\n" + "\r\n".join(head) + "\r\n\r\n" + data


# -- gunicorn ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_gunicorn(port: int, env: dict[str, str], workers: int, threads: int) -> Iterator[int]:
    """gunicorn on 127.0.0.1:``port``; yields the master's pid; SIGTERM (graceful) on exit."""
    args = [sys.executable, "-m", "gunicorn", "--chdir", str(BENCH), "-b", f"127.0.0.1:{port}"]
    args += ["-w", str(workers), "-k", "gthread", "--threads", str(threads)]
    args += ["--keep-alive", "30", "--log-level", "warning", "_gunicorn_shop:app"]
    process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(worker_pids(process.pid)) < workers or not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("http_load: gunicorn did not start")
            time.sleep(0.1)
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/plain/0", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def worker_pids(master: int) -> list[int]:
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of ``pids`` (all their threads), from ``/proc``."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


# -- one window ----------------------------------------------------------------------------


@dataclass
class Samples:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    exhausted: int = 0


def window(
    port: int,
    connections: int,
    seconds: float,
    requests: Sequence[str],
    workers: Sequence[int],
    out: Samples,
) -> None:
    """One run of the load generator; adds its figures to ``out``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(list(requests), file)
    try:
        cpu = cpu_seconds(workers)
        args = [sys.executable, str(BENCH / "_load_client.py"), str(port), str(connections)]
        done = subprocess.run(
            [*args, str(seconds), file.name], capture_output=True, text=True, check=True
        )
        cpu = cpu_seconds(workers) - cpu
    finally:
        os.unlink(file.name)
    result = json.loads(done.stdout)
    count = len(result["latencies"])
    out.rates.append(count / result["seconds"])
    out.latencies += result["latencies"]
    out.cpu.append(cpu / count * 1e6)
    out.exhausted += bool(result["exhausted"])
    for status, n in result["statuses"].items():
        out.statuses[status] = out.statuses.get(status, 0) + n


# -- the run -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="each window's length")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker")
    args = parser.parse_args(argv)

    per_window = int(CAP_PER_SECOND * args.seconds)
    warmup = 200
    total = len(VARIANTS) * (warmup + args.reps * per_window)
    traffic = realistic(total)
    port = _free_port()
    began = time.monotonic()
    samples = {variant: Samples() for variant in VARIANTS}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dedupkit-http-")))
        server = stack.enter_context(running_server("loopback"))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")]),
            "BENCH_CUSTOMERS": str(total),
            "DEDUPKIT_AD_ACCOUNT_ID": AD_ACCOUNT_ID,
            "DEDUPKIT_CONVERSION_TOKEN": TOKEN,
            "DEDUPKIT_TAG_ID": "2612345678901",
            "DEDUPKIT_API_BASE_URL": server.api_base_url,
            "DEDUPKIT_QUEUE_URL": f"sqlite:///{workdir}/outbox.sqlite3",
            "DEDUPKIT_RATE_LIMIT": "off",
            "DEDUPKIT_CLIENT_IP_HEADER": IP_HEADER,
            "DEDUPKIT_PHONE_REGION": "US",
        }
        master = stack.enter_context(running_gunicorn(port, env, args.workers, args.threads))
        workers = worker_pids(master)
        indices = iter(range(total))

        def take(variant: str, n: int) -> list[str]:
            return [raw_request(variant, next(indices), port, traffic) for _ in range(n)]

        warm = {variant: Samples() for variant in VARIANTS}
        for variant in VARIANTS:  # imports, connections, the senders' threads
            window(port, args.connections, 1.0, take(variant, warmup), workers, warm[variant])
        for _ in range(args.reps):
            for variant in VARIANTS:
                # The senders catch up first: a window's worker CPU is its own requests'.
                wait_delivered(server, sum(queued_by(runs) for runs in (samples, warm)))
                requests = take(variant, per_window)
                window(port, args.connections, args.seconds, requests, workers, samples[variant])
        queued = sum(queued_by(runs) for runs in (samples, warm))
        delivered = wait_delivered(server, queued)
    report(samples, args, time.monotonic() - began)
    odd = {v: s.statuses for v, s in samples.items() if set(s.statuses) - {"200", "202", "204"}}
    if odd or delivered != queued:
        print(f"\nFAILED: unexpected answers {odd}, or {delivered} of {queued} events delivered")
        return 1
    print(f"\nEvery tracked page and accepted beacon was delivered ({queued} events).")
    return 0


def queued_by(runs: dict[str, Samples]) -> int:
    """Events the load queued: tracked pages (200) and accepted beacons (202)."""
    return runs["tracked"].statuses.get("200", 0) + runs["events"].statuses.get("202", 0)


def wait_delivered(server: Server, expected: int, timeout: float = 60.0) -> int:
    """The stand-in's count once it reached ``expected`` (or stopped moving for ``timeout``)."""
    deadline = time.monotonic() + timeout
    while (count := server.events_received()) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def _ms(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(samples: dict[str, Samples], args: argparse.Namespace, elapsed: float) -> None:
    med = statistics.median
    print(
        f"\ngunicorn -w {args.workers} -k gthread --threads {args.threads}, SQLite outbox, "
        f"background senders on; {args.connections} keep-alive connections, "
        f"{args.seconds:g} s windows, {args.reps} interleaved reps; realistic traffic\n"
    )
    print(
        f"  {'variant':<8} {'requests/s':>19}  {'p50 ms':>7} {'p99 ms':>7}  "
        f"{'worker CPU µs/req':>17}  answers"
    )
    for variant, s in samples.items():
        rate = f"{med(s.rates):.0f} ({min(s.rates):.0f}-{max(s.rates):.0f})"
        answers = ", ".join(f"{n} x {status}" for status, n in sorted(s.statuses.items()))
        print(
            f"  {variant:<8} {rate:>19}  {_ms(s.latencies, 0.5):>7.2f} "
            f"{_ms(s.latencies, 0.99):>7.2f}  {med(s.cpu):>17.0f}  {answers}"
        )
        if s.exhausted:
            print(f"  ({variant}: the requests ran out before the window ended {s.exhausted}x)")
    print()
    for base, other in (("plain", "tracked"), ("noop", "events")):
        a, b = samples[base], samples[other]
        print(
            f"  {other} / {base}: throughput {med(b.rates) / med(a.rates):.2f}x, "
            f"p50 {_ms(b.latencies, 0.5) / _ms(a.latencies, 0.5):.2f}x, "
            f"p99 {_ms(b.latencies, 0.99) / _ms(a.latencies, 0.99):.2f}x, "
            f"worker CPU +{med(b.cpu) - med(a.cpu):.0f} µs/request"
        )
    print(f"\n{elapsed:.0f} s in all.")


if __name__ == "__main__":
    sys.exit(main())
