"""The PostgreSQL outbox beside SQLite and Redis: enqueue cost inside the shop's transaction,
and the drain rate of 1, 2 and 4 senders sharing one queue.

Run ``.venv/bin/python bench/postgres.py [--events N] [--drain-events N] [--reps R]
[--backends postgres,sqlite,redis]``.

A throwaway PostgreSQL (``initdb`` in a temporary directory, run as ``nobody`` when we are
root, on a free loopback port, with the server's defaults: ``fsync`` and
``synchronous_commit`` on, as a shop runs it) and a throwaway ``redis-server`` (no
persistence) are started and stopped here. Everything shares this machine's cores.

**Enqueue** (per event, median over the reps of the mean over ``--events``, wall and this
process's CPU; the variants interleaved, A B C … A B C …):

* ``sqlite put``, ``redis put``, ``postgres put``: ``outbox.put(event)`` in its own commit,
  what ``kit.track()`` does without ``session=``;
* ``order commit``: the shop's own transaction, ``INSERT`` of one order row and ``COMMIT``,
  on a SQLAlchemy ``Connection`` (no ORM): the baseline;
* ``order + put_in``: the same transaction with ``PostgresOutbox.put_in(conn, event)``
  before the ``COMMIT``: what ``kit.track(..., session=…)`` adds to a checkout is the
  difference to the baseline;
* ``order, then sqlite/redis put``: the baseline followed by a put in another store: two
  commits, what a shop tracking "after the order" pays (and what a crash between them loses).

``… sync off`` rows repeat the PostgreSQL ones with ``SET LOCAL synchronous_commit = off``
(the commit does not wait for the WAL flush; a server crash, not a process crash, may lose
the last commits): what SQLite's ``synchronous=NORMAL`` in WAL mode and a Redis without
persistence promise.

**Drain** (events/s acknowledged by the stand-in Pinterest, from the senders' start to the
last event; median over the reps): ``--drain-events`` events are put in a fresh outbox, then
1, 2 or 4 sender processes (each a :class:`~dedupkit.sender.Sender` calling ``run_once`` in a
loop, batches of 1,000) drain it together; backends and sender counts interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from _loopback_pinterest import AD_ACCOUNT_ID, TOKEN, running_server  # noqa: E402
from delivery_cpu import checkout_inputs  # noqa: E402
from throughput import running_redis  # noqa: E402

SENDERS = (1, 2, 4)
#: Puts before the clock starts (connections, statement caches).
WARMUP = 50
#: The unprivileged user PostgreSQL runs as when we are root.
NOBODY = 65534


# -- a throwaway PostgreSQL ----------------------------------------------------------------


def _bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    initdb = found[0] if found else shutil.which("initdb")
    if not initdb:
        raise FileNotFoundError("initdb (apt-get install postgresql)")
    return os.path.dirname(os.path.realpath(initdb))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """``initdb`` + ``postgres`` with the server's default durability; yields a URL."""
    bin_dir = _bin_dir()
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    prefix = prefix if os.geteuid() == 0 else []
    directory = tempfile.mkdtemp(prefix="dedupkit-bench-postgres-")
    if prefix:
        os.chown(directory, NOBODY, NOBODY)
    data = os.path.join(directory, "data")
    init = [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust"]
    subprocess.run(
        [*prefix, *init, "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True
    )
    port = _free_port()
    args = [os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(port)]
    args += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
    log = open(os.path.join(directory, "server.log"), "ab")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([*prefix, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        ready = [os.path.join(bin_dir, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        deadline = time.monotonic() + 30
        while subprocess.run(ready, check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postgres did not start")
            time.sleep(0.05)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        process.send_signal(2)  # fast shutdown
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


# -- enqueue ---------------------------------------------------------------------------------


def payloads(count: int) -> list[dict[str, Any]]:
    """``count`` realistic checkout events (hashed PII, line items), distinct event ids."""
    from dedupkit import build_event
    from dedupkit.event.user_data import UserDataHasher

    hasher = UserDataHasher(phone_region="US")
    built = []
    for args in checkout_inputs(count, int(time.time())):
        data = {
            k: v for k, v in args.items() if k not in ("user", "event_time", "event_source_url")
        }
        built.append(
            build_event(
                "checkout",
                data,
                user=args["user"],
                hasher=hasher,
                event_time=args["event_time"],
                event_source_url=args["event_source_url"],
            ).to_capi()
        )
    return built


Step = Callable[[dict[str, Any], int], None]


class Enqueue:
    """The stores of one run and one step per variant: each stores one event (or order)."""

    def __init__(self, pg_url: str, redis_url: str, directory: Path) -> None:
        import sqlalchemy as sa

        from dedupkit.outbox.postgres import PostgresOutbox
        from dedupkit.outbox.redis import RedisOutbox
        from dedupkit.outbox.sqlite import SQLiteOutbox

        self.sqlite = SQLiteOutbox(directory / "outbox.sqlite3")
        self.redis = RedisOutbox(redis_url, namespace=f"bench-{uuid.uuid4().hex}")
        self.postgres = PostgresOutbox(pg_url, namespace=f"bench-{uuid.uuid4().hex}")
        self.shop = sa.create_engine(pg_url)
        with self.shop.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE IF NOT EXISTS bench_orders (id TEXT PRIMARY KEY, total NUMERIC)"
                )
            )
        self.order = sa.text("INSERT INTO bench_orders (id, total) VALUES (:id, 72.39)")
        self.sync_off = sa.text("SET LOCAL synchronous_commit = off")
        self.steps: dict[str, Step] = {
            "sqlite put": lambda event, n: self.sqlite.put(event) and None,
            "redis put": lambda event, n: self.redis.put(event) and None,
            "postgres put": lambda event, n: self.postgres.put(event) and None,
            "order commit": self.order_only,
            "order + put_in": self.order_with_event,
            "order, then sqlite put": self.order_then(self.sqlite),
            "order, then redis put": self.order_then(self.redis),
            "order commit, sync off": lambda e, n: self.order_only(e, n, sync=False),
            "order + put_in, sync off": lambda e, n: self.order_with_event(e, n, sync=False),
        }

    def order_only(self, event: dict[str, Any], n: int, sync: bool = True) -> None:
        with self.shop.begin() as conn:
            if not sync:
                conn.execute(self.sync_off)
            conn.execute(self.order, {"id": event["event_id"]})

    def order_with_event(self, event: dict[str, Any], n: int, sync: bool = True) -> None:
        with self.shop.begin() as conn:
            if not sync:
                conn.execute(self.sync_off)
            conn.execute(self.order, {"id": event["event_id"]})
            self.postgres.put_in(conn, event)

    def order_then(self, outbox: Any) -> Step:
        def step(event: dict[str, Any], n: int) -> None:
            self.order_only(event, n)
            outbox.put(event)

        return step

    def close(self) -> None:
        for box in (self.sqlite, self.redis, self.postgres):
            box.close()
        self.shop.dispose()


def measure_enqueue(
    enqueue: Enqueue, events: Sequence[dict[str, Any]], reps: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Per variant: the mean wall and CPU µs per event of each rep."""
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in enqueue.steps}
    serial = 0

    def fresh(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal serial
        serial += 1
        return {**event, "event_id": f"{event['event_id']}-{serial}"}

    for step in enqueue.steps.values():  # warm every connection and statement
        for event in events[:WARMUP]:
            step(fresh(event), 0)
    for _ in range(reps):
        for name, step in enqueue.steps.items():
            batch = [fresh(event) for event in events]
            wall, cpu = time.perf_counter(), time.process_time()
            for n, event in enumerate(batch):
                step(event, n)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[name][0].append(wall / len(batch) * 1e6)
            results[name][1].append(cpu / len(batch) * 1e6)
    return results


# -- drain -----------------------------------------------------------------------------------


def sender_process(
    url: str, namespace: str, api_base_url: str, ready: Any, go: Any, stop: Any
) -> None:
    """One host's sender: ``run_once`` in a loop until ``stop``."""
    from dedupkit.delivery.client import CapiClient
    from dedupkit.delivery.sender import Sender
    from dedupkit.outbox import open_outbox

    outbox = open_outbox(url, namespace=namespace)
    client = CapiClient(ad_account_id=AD_ACCOUNT_ID, token=TOKEN, base_url=api_base_url)
    sender = Sender(outbox, client, batch_size=1000)
    outbox.stats()  # connect (and create nothing) before the clock starts
    ready.set()
    go.wait()
    while not stop.is_set():
        if sender.run_once() == 0:
            stop.wait(0.002)
    client.close()
    outbox.close()


def fill(url: str, namespace: str, events: Sequence[dict[str, Any]]) -> None:
    from dedupkit.outbox import open_outbox

    outbox = open_outbox(url, namespace=namespace)
    try:
        for event in events:
            outbox.put(event)
    finally:
        outbox.close()


def measure_drain(url: str, events: Sequence[dict[str, Any]], senders: int, server: Any) -> float:
    """Events/s of ``senders`` processes draining ``events`` from a fresh outbox."""
    namespace = f"drain-{uuid.uuid4().hex}"
    run = uuid.uuid4().hex[:8]
    fill(url, namespace, [{**e, "event_id": f"{e['event_id']}-{run}"} for e in events])
    ctx = mp.get_context("spawn")
    go, stop = ctx.Event(), ctx.Event()
    readies = [ctx.Event() for _ in range(senders)]
    processes = [
        ctx.Process(
            target=sender_process,
            args=(url, namespace, server.api_base_url, r, go, stop),
            daemon=True,
        )
        for r in readies
    ]
    for process in processes:
        process.start()
    try:
        for ready in readies:
            if not ready.wait(60):
                raise SystemExit("postgres bench: a sender did not start")
        before = server.events_received()
        started = time.perf_counter()
        go.set()
        deadline = time.monotonic() + 300
        while server.events_received() - before < len(events):
            if time.monotonic() > deadline:
                raise SystemExit("postgres bench: the senders did not deliver every event")
            time.sleep(0.01)
        return len(events) / (time.perf_counter() - started)
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
                process.join()


# -- the run -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="events per enqueue rep")
    parser.add_argument("--drain-events", type=int, default=5_000, help="events per drain")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", default="postgres,sqlite,redis", help="drain backends")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    events = payloads(max(args.events, args.drain_events))
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="dedupkit-bench-") as tmp,
        running_postgres() as pg_url,
        running_redis(Path(tmp)) as redis_url,
        running_server("loopback") as server,
    ):
        enqueue = Enqueue(pg_url, redis_url, Path(tmp))
        try:
            timings = measure_enqueue(enqueue, events[: args.events], args.reps)
        finally:
            enqueue.close()
        urls = {"postgres": pg_url, "redis": redis_url}
        rates: dict[tuple[str, int], list[float]] = {}
        for rep in range(args.reps):
            for backend in backends:
                for senders in SENDERS:
                    # A SQLite outbox is one file per shop: a fresh file per drain.
                    url = urls.get(backend) or f"sqlite:///{tmp}/drain-{rep}-{senders}.sqlite3"
                    rate = measure_drain(url, events[: args.drain_events], senders, server)
                    rates.setdefault((backend, senders), []).append(rate)
    report(timings, rates, backends, args, time.monotonic() - started)
    return 0


def report(
    timings: dict[str, tuple[list[float], list[float]]],
    rates: dict[tuple[str, int], list[float]],
    backends: Sequence[str],
    args: argparse.Namespace,
    seconds: float,
) -> None:
    print(
        f"postgres.py: {args.events} events x {args.reps} reps, "
        f"drains of {args.drain_events} ({seconds:.0f} s)"
    )
    print()
    print(f"{'enqueue, per event':<28} {'wall µs':>9} {'CPU µs':>9}")
    wall = {name: statistics.median(w) for name, (w, _) in timings.items()}
    for name, (w, c) in timings.items():
        print(f"{name:<28} {statistics.median(w):>9.0f} {statistics.median(c):>9.0f}")
    base, base_off = wall["order commit"], wall["order commit, sync off"]
    print()
    print(
        f"put_in inside the order's transaction adds {wall['order + put_in'] - base:.0f} µs "
        f"({wall['order + put_in, sync off'] - base_off:.0f} µs with sync off); a put after "
        f"the order's commit adds {wall['order, then sqlite put'] - base:.0f} µs (SQLite), "
        f"{wall['order, then redis put'] - base:.0f} µs (Redis)"
    )
    print()
    print(
        f"{'drain, events/s':<16}"
        + "".join(f"{f'{n} sender' + ('s' if n > 1 else ''):>12}" for n in SENDERS)
        + f"{'4 ÷ 1':>8}"
    )
    for backend in backends:
        medians = [statistics.median(rates[(backend, n)]) for n in SENDERS]
        print(
            f"{backend:<16}"
            + "".join(f"{m:>12,.0f}" for m in medians)
            + f"{medians[-1] / medians[0]:>8.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
