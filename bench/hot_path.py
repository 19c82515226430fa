"""What tracking costs a request, on a real shop's traffic and on one repeated visitor.

Run ``.venv/bin/python bench/hot_path.py [--requests N] [--reps R] [--profile]``.

Two traffic modes, measured side by side in one run, interleaved (A B C … A B C …), medians
over the reps:

* **realistic**: every request has a different real browser user agent (the browser corpus
  that PyPI ``fake-useragent`` ships; past its ~840 strings, the last number of each is
  changed so that none repeats), a different IP and a different customer (e-mail, phone in
  the formats people type, first and last name, zip);
* **repeated**: one user agent, one IP and one customer for every request (what caches love).

Order ids differ in both modes, so no event is a duplicate. Figures, each next to its target:

* ``is_bot``: µs per user agent never seen before (and, for reference, on the crawler corpus'
  instances, with the corpus' own ``is_crawler`` and, when installed, ``user_agents.parse``,
  which dedupkit used before);
* ``hash``: µs to normalise and hash one checkout's PII with ``UserDataHasher``;
* ``enqueue``: µs per ``SQLiteOutbox.put`` of a built event, CPU and wall, in a fresh file
  with the outbox's own durability settings;
* ``view``: CPU µs per request of a trivial Flask view through the test client, without and
  with ``kit.track("checkout", …)`` (public API only: ``DedupKit(app)``, ``kit.track``;
  SQLite outbox; background sender off, so only the request path is counted). The overhead
  is the difference; its realistic ÷ repeated ratio shows how kind the repeated mode is.

``--profile`` adds a cProfile of the realistic tracked view: where ``track()`` spends its time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

# Targets of issue 12.
TARGET_TRACK_US = 100.0
TARGET_RATIO = 1.3
TARGET_UA_US = 20.0
TARGET_HASH_US = 20.0
TARGET_ENQUEUE_US = 25.0

FIRST_NAMES = ["Jane", "John", "María", "Wei", "Olga", "Émile", "Aisha", "Zoë", "Kenji", "Liam"]
PHONE_FORMATS = ["+1 {a} {b} {c}", "({a}) {b}-{c}", "{a}.{b}.{c}", "+1{a}{b}{c}", "{a}-{b}-{c}"]


# -- the traffic ---------------------------------------------------------------------------


def browser_user_agents(count: int) -> list[str]:
    """``count`` distinct real browser user agents."""
    lines = files("fake_useragent").joinpath("data", "browsers.jsonl").read_text("utf-8")
    corpus = sorted({json.loads(line)["useragent"] for line in lines.splitlines() if line})
    agents = []
    for i in range(count):
        agent, round_ = corpus[i % len(corpus)], i // len(corpus)
        if round_:  # a later build of the same browser: same shape, never seen before
            agent = re.sub(r"\d+(?=\D*$)", lambda m, r=round_: f"{m.group()}{r}", agent)
        agents.append(agent)
    return agents


def crawler_user_agents() -> list[str]:
    data = files("crawleruseragents").joinpath("crawler-user-agents.json").read_text("utf-8")
    return [ua for entry in json.loads(data) for ua in entry.get("instances", [])]


def customers(count: int, seed: int = 12) -> list[dict[str, str]]:
    """``count`` distinct customers: what a checkout form collects."""
    rng = random.Random(seed)
    people = []
    for i in range(count):
        area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
        phone = rng.choice(PHONE_FORMATS).format(a=area, b=exchange, c=f"{line:04d}")
        people.append(
            {
                "email": f"{rng.choice(FIRST_NAMES)}.Customer{i}@Example.com",
                "phone": phone,
                "first_name": rng.choice(FIRST_NAMES),
                "last_name": f"Smith-{i}",
                "zip": f"{rng.randint(1000, 99999):05d}",
            }
        )
    return people


@dataclass(frozen=True)
class Traffic:
    """One request per index: its user agent, IP and customer."""

    agents: Sequence[str]
    ips: Sequence[str]
    people: Sequence[dict[str, str]]


def realistic(count: int) -> Traffic:
    ips = [f"198.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(count)]
    return Traffic(browser_user_agents(count), ips, customers(count))


def repeated(count: int) -> Traffic:
    agent = browser_user_agents(1)[0]
    person = customers(1)[0]
    return Traffic([agent] * count, ["198.51.100.7"] * count, [person] * count)


# -- measuring -----------------------------------------------------------------------------


def per_call(fn: Callable[[Any], object], items: Sequence[Any]) -> tuple[float, float]:
    """(CPU µs, wall µs) per item of ``fn(item)`` over ``items``."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for item in items:
        fn(item)
    return (
        (time.process_time() - cpu) / len(items) * 1e6,
        (time.perf_counter() - wall) / len(items) * 1e6,
    )


class Shop:
    """A Flask app with a trivial thank-you view, untracked and tracked."""

    def __init__(self, workdir: Path, name: str, traffic: Traffic) -> None:
        from flask import Flask

        from dedupkit import DedupKit

        app = Flask(name)
        app.config.update(
            DEDUPKIT_AD_ACCOUNT_ID="549755885175",
            DEDUPKIT_CONVERSION_TOKEN="pina_bench",
            DEDUPKIT_TAG_ID="2612345678901",
            DEDUPKIT_QUEUE_URL=f"sqlite:///{workdir}/{name}.sqlite3",
            DEDUPKIT_API_BASE_URL="http://127.0.0.1:9/v5",
            DEDUPKIT_BACKGROUND_SENDER=False,
            DEDUPKIT_PHONE_REGION="US",
        )
        kit = DedupKit(app)
        people = traffic.people
        self.orders = 0

        @app.get("/thanks/<int:i>")
        def thanks(i: int) -> str:
            people[i]  # the same lookup as the tracked view, so the difference is track()
            return "thank you"

        @app.get("/tracked/<int:i>")
        def tracked(i: int) -> str:
            self.orders += 1
            kit.track(
                "checkout",
                order_id=f"{name}-{self.orders}",
                value="72.39",
                currency="USD",
                user=people[i],
            )
            return "thank you"

        self.queue = workdir / f"{name}.sqlite3"
        self.client = app.test_client()
        self.traffic = traffic

    def run(self, path: str, indices: range) -> float:
        """CPU µs per request of GET ``path/<i>`` for the requests ``indices`` of the traffic."""
        client, traffic = self.client, self.traffic

        def request(i: int) -> None:
            response = client.get(
                f"{path}/{i}",
                headers={"User-Agent": traffic.agents[i]},
                environ_base={"REMOTE_ADDR": traffic.ips[i]},
            )
            if response.status_code != 200:
                raise SystemExit(f"{path} answered {response.status_code}")

        return per_call(request, indices)[0]

    def pending(self) -> int:
        from dedupkit.outbox import SQLiteOutbox

        outbox = SQLiteOutbox(self.queue)
        try:
            return outbox.stats().pending
        finally:
            outbox.close()


def enqueue_run(path: Path, first: Any, payloads: Sequence[Any]) -> tuple[float, float]:
    """(CPU µs, wall µs) per ``SQLiteOutbox.put`` of ``payloads`` into a new file at ``path``."""
    from dedupkit.outbox import SQLiteOutbox

    outbox = SQLiteOutbox(path)
    try:
        outbox.put(first)  # creates the file and schema: not what is measured
        return per_call(outbox.put, payloads)
    finally:
        outbox.close()


def payloads_for(traffic: Traffic, mode: str) -> list[Any]:
    from dedupkit.event.model import build_event
    from dedupkit.event.user_data import UserDataHasher

    hasher = UserDataHasher(phone_region="US")
    return [
        build_event(
            "checkout",
            {"order_id": f"{mode}-{i}", "value": "72.39", "currency": "USD"},
            user={
                **person,
                "client_ip_address": traffic.ips[i],
                "client_user_agent": traffic.agents[i],
            },
            hasher=hasher,
        ).to_capi()
        for i, person in enumerate(traffic.people)
    ]


# -- the run -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per variant")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the tracked view")
    args = parser.parse_args()
    n = args.requests

    from dedupkit.event.user_data import UserDataHasher
    from dedupkit.intake.bots import is_bot

    # Index 0 is the warm-up request; then each rep gets n requests for the views and n
    # others for the direct measurements: in the realistic mode no user agent or customer
    # comes back, whatever caches there are.
    total = 1 + 2 * n * args.reps
    modes = {"realistic": realistic(total), "repeated": repeated(total)}
    crawlers = crawler_user_agents()
    hasher = UserDataHasher(phone_region="US")
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    references = reference_classifiers(args.reps)

    with tempfile.TemporaryDirectory(prefix="dedupkit-hot-path-") as tmp:
        workdir = Path(tmp)
        shops = {mode: Shop(workdir, mode, traffic) for mode, traffic in modes.items()}
        payloads = {mode: payloads_for(traffic, mode) for mode, traffic in modes.items()}
        for shop in shops.values():  # warm-up: imports, first connections, compiled regexes
            for path in ("/thanks/0", "/tracked/0"):
                shop.client.get(path, headers={"User-Agent": shop.traffic.agents[0]})
        gc.freeze()

        for rep in range(args.reps):
            requests = range(1 + 2 * rep * n, 1 + (2 * rep + 1) * n)
            probes = slice(requests.stop, requests.stop + n)
            for mode, traffic in modes.items():
                add(f"is_bot {mode}", per_call(is_bot, traffic.agents[probes])[0])
                add(f"hash {mode}", per_call(hasher.hash, traffic.people[probes])[0])
                events = payloads[mode][probes]
                path = workdir / f"enqueue-{mode}-{rep}.sqlite3"
                cpu_us, wall_us = enqueue_run(path, payloads[mode][0], events)
                add(f"enqueue {mode}", cpu_us)
                add(f"enqueue wall {mode}", wall_us)
                add(f"view {mode}", shops[mode].run("/thanks", requests))
                add(f"tracked view {mode}", shops[mode].run("/tracked", requests))
            add("is_bot crawlers", per_call(is_bot, crawlers)[0])
            for name, (classify, agents) in references.items():
                fresh = agents[rep * REFERENCE_AGENTS : (rep + 1) * REFERENCE_AGENTS]
                add(name, per_call(classify, fresh)[0])

        queued = {mode: shop.pending() for mode, shop in shops.items()}
        # The profile replays the last rep's requests: caches may flatter it, not the table.
        profile = profile_tracked(shops["realistic"], requests) if args.profile else ""

    report(samples, n, args.reps)
    views = 1 + n * args.reps  # the warm-up and every rep's tracked requests
    missing = {mode: views - count for mode, count in queued.items()}
    if any(missing.values()):
        print(f"\nNOT QUEUED (skipped or lost): {missing}")
        return 1
    print(f"\nEvery tracked request was queued ({views} per mode).")
    if profile:
        print("\ncProfile of the realistic tracked view (cumulative, dedupkit frames):\n")
        print(profile)
    return 0


REFERENCE_AGENTS = 200


def reference_classifiers(reps: int) -> dict[str, tuple[Callable[[str], object], list[str]]]:
    """What bot detection cost before, for comparison only: on 200 unseen browsers per rep.

    ``user_agents`` caches what it parsed, so each rep gets user agents not seen before.
    """
    agents = browser_user_agents(REFERENCE_AGENTS * reps)
    found: dict[str, tuple[Callable[[str], object], list[str]]] = {}
    from crawleruseragents import is_crawler

    found["ref: crawleruseragents.is_crawler"] = (is_crawler, agents)
    try:
        from user_agents import parse
    except ImportError:
        print("(user_agents is not installed: its reference row is skipped)")
    else:
        found["ref: user_agents.parse (before)"] = (lambda ua: parse(ua).is_bot, agents)
    return found


def profile_tracked(shop: Shop, requests: range) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    shop.run("/tracked", requests)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(r"dedupkit|flask/testing|werkzeug/test", 30)
    return out.getvalue()


def report(samples: dict[str, list[float]], n: int, reps: int) -> None:
    def med(name: str) -> float:
        return statistics.median(samples[name])

    def row(label: str, name: str, target: float | None = None) -> None:
        values = samples[name]
        goal = ""
        if target is not None:
            goal = f"<= {target:g}  {'ok' if med(name) <= target else 'MISSED'}"
        spread = f"{min(values):8.1f} - {max(values):8.1f}"
        print(f"  {label:44s} {med(name):9.1f}   {spread}   {goal}")

    print(f"\n{n} requests per variant, {reps} reps, medians (min - max); µs per item\n")
    print(f"  {'':44s} {'median':>9s}   {'min - max':^19s}   target")
    for mode in ("realistic", "repeated"):
        print(f"\n {mode}")
        row("is_bot of the request's user agent (CPU)", f"is_bot {mode}", TARGET_UA_US)
        row("hash a checkout's PII (CPU)", f"hash {mode}", TARGET_HASH_US)
        row("durable enqueue, SQLite (CPU)", f"enqueue {mode}", TARGET_ENQUEUE_US)
        row("durable enqueue, SQLite (wall)", f"enqueue wall {mode}")
        row("trivial view (CPU per request)", f"view {mode}")
        row("same view + kit.track (CPU per request)", f"tracked view {mode}")
        tracked, plain = samples[f"tracked view {mode}"], samples[f"view {mode}"]
        # Each rep's difference: the two views ran back to back, under the same load.
        samples[f"overhead {mode}"] = [t - v for t, v in zip(tracked, plain, strict=True)]
        row("track() overhead", f"overhead {mode}", TARGET_TRACK_US)
    print("\n reference")
    row("is_bot on the crawler corpus' instances", "is_bot crawlers", TARGET_UA_US)
    for name in samples:
        if name.startswith("ref: "):
            row(name[5:], name)
    ratio = med("overhead realistic") / med("overhead repeated")
    view_ratio = med("tracked view realistic") / med("tracked view repeated")
    verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"\n  track() overhead, realistic / repeated: {ratio:.2f}  "
        f"(target <= {TARGET_RATIO:g}: {verdict}); tracked view: {view_ratio:.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
