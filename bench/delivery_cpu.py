"""Client-side CPU per event, from ``track()`` to acknowledged delivery, against baselines.

Run ``.venv/bin/python bench/delivery_cpu.py [--events N] [--reps R] [--server fake]``.

Every variant sends the same N checkout events, in batches of 1000, to a server in another
process on 127.0.0.1 (so its CPU is not counted), and is timed with ``time.process_time()``.
Variants run interleaved (A B C … A B C …) and the median per event is reported:

* ``track->ack``: ``kit.track()`` N times (build, hash, enqueue in a fresh SQLite outbox),
  then ``Sender.run_once()`` until the outbox is empty (claim, encode, POST, classify, ack).
* ``stages``: the same work, called piece by piece with a timer around each piece.
* ``send path``: ``Event.to_capi()`` + ``CapiClient.send()`` (encode, POST, classify) on
  events built beforehand: what delivery costs once the event exists.
* ``json.dumps``: ``json.dumps({"data": batch})`` of the same payloads: the floor.
* ``json+httpx``: that body POSTed with a bare ``httpx.Client`` and the answer parsed: the
  floor of any client that sends the payloads over HTTP.
* ``SDK``: ``Conversion.create_conversion_event`` + ``Conversion.send_conversion_events`` of
  ``pinterest-api-sdk``, in a long-lived worker process (its own virtualenv, see README.md)
  that reports its own CPU time. It gets the payloads already hashed.

The SDK worker is this file run as ``--sdk-worker`` by the SDK's interpreter, so the imports
at the top are the standard library only.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from _loopback_pinterest import AD_ACCOUNT_ID, TOKEN, Server, running_server  # noqa: E402

BATCH = 1000
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
SDK_VENV_PYTHON = BENCH / ".venv" / "bin" / "python"
TARGET_DUMPS_RATIO = 2.0
TARGET_SDK_RATIO = 25.0


# -- the workload ------------------------------------------------------------------------


def checkout_inputs(count: int, event_time: int) -> list[dict[str, Any]]:
    """The arguments of ``kit.track("checkout", **args)`` for ``count`` distinct orders."""
    inputs = []
    for i in range(count):
        inputs.append(
            {
                "event_time": event_time,
                "event_source_url": f"https://shop.example/thanks/B{i:06d}",
                "user": {
                    "email": f"Customer.{i}@Example.com",
                    "phone": f"+1 415 555 {i % 10000:04d}",
                    "first_name": "Jane",
                    "last_name": "Doe",
                    "zip": "94107",
                    "country": "US",
                    "client_ip_address": f"203.0.{i // 256 % 256}.{i % 256}",
                    "client_user_agent": USER_AGENT,
                    "click_id": f"dj0yJnU9{i:08d}",
                    "external_id": f"visitor-{i}",
                },
                "order_id": f"B{i:06d}",
                "value": "72.39",
                "currency": "USD",
                "line_items": [
                    {
                        "product_id": "SKU-1",
                        "product_name": "Mug",
                        "product_price": "24.13",
                        "product_quantity": 1,
                    },
                    {"product_id": "SKU-2", "product_price": "48.26", "product_quantity": 1},
                ],
            }
        )
    return inputs


def batches(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of this process (all threads) spent in ``fn()``."""
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


# -- the variants ------------------------------------------------------------------------


class Bench:
    """Holds what the variants share: the inputs, the reference payloads, the clients."""

    def __init__(self, server: Server, events: int, workdir: Path) -> None:
        import httpx

        from dedupkit.delivery.client import CapiClient
        from dedupkit.event.model import build_event
        from dedupkit.event.user_data import UserDataHasher

        self.server = server
        self.workdir = workdir
        self.inputs = checkout_inputs(events, int(time.time()))
        hasher = UserDataHasher()
        self.events = [
            build_event("checkout", **self._build_args(args), hasher=hasher) for args in self.inputs
        ]
        #: What every variant sends: the CAPI dicts dedupkit builds from the inputs.
        self.payloads = [event.to_capi() for event in self.events]
        self.client = CapiClient(
            ad_account_id=AD_ACCOUNT_ID, token=TOKEN, base_url=server.api_base_url
        )
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        )
        self.stage_times: list[dict[str, float]] = []
        self._runs = 0

    @staticmethod
    def _build_args(args: dict[str, Any]) -> dict[str, Any]:
        args = dict(args)
        return {
            "event_time": args.pop("event_time"),
            "event_source_url": args.pop("event_source_url"),
            "user": args.pop("user"),
            "data": args,
        }

    def close(self) -> None:
        self.client.close()
        self.http.close()

    def _fresh_dir(self) -> Path:
        self._runs += 1
        path = self.workdir / f"run{self._runs}"
        path.mkdir()
        return path

    def track_to_ack(self) -> float:
        """A: the public path, ``kit.track()`` then the sender, as an app runs it."""
        from flask import Flask

        from dedupkit import DedupKit
        from dedupkit.state import get_state

        directory = self._fresh_dir()
        app = Flask("bench", instance_path=str(directory))
        app.config.update(
            DEDUPKIT_AD_ACCOUNT_ID=AD_ACCOUNT_ID,
            DEDUPKIT_CONVERSION_TOKEN=TOKEN,
            DEDUPKIT_API_BASE_URL=self.server.api_base_url,
            DEDUPKIT_QUEUE_URL=f"sqlite:///{directory}/outbox.sqlite3",
            DEDUPKIT_BACKGROUND_SENDER=False,
        )
        kit = DedupKit(app)
        with app.app_context():
            state = get_state()
            state.outbox.pause()  # open the database and create the schema untimed
            sender = state.make_sender()
            inputs = self.inputs

            def run() -> None:
                for args in inputs:
                    kit.track("checkout", **args)
                while sender.run_once():
                    pass

            seconds = cpu(run)
            delivered = state.outbox.stats().delivered
            sender.client.close()
            state.outbox.close()
        _check(delivered == len(inputs), f"track->ack delivered {delivered}/{len(inputs)}")
        shutil.rmtree(directory)
        return seconds

    def stages(self) -> float:
        """B: the same work as A, piece by piece, each piece timed on its own."""
        from dedupkit.delivery.client import Outcome, classify_response, encode_batch
        from dedupkit.event.model import build_event
        from dedupkit.event.user_data import UserDataHasher
        from dedupkit.outbox import SQLiteOutbox

        directory = self._fresh_dir()
        outbox = SQLiteOutbox(directory / "outbox.sqlite3")
        outbox.pause()
        hasher = UserDataHasher()
        client = self.client
        times = dict.fromkeys(
            ("build+hash", "to_capi", "enqueue", "claim", "encode", "HTTP", "classify", "ack"),
            0.0,
        )
        clock = time.process_time
        gc.collect()
        total_start = clock()
        # In chunks, so that no more events are alive at once than in one batch: track()
        # keeps none, and the garbage collector's work grows with what is alive.
        for chunk in batches(self.inputs):
            start = clock()
            built = [build_event("checkout", **self._build_args(a), hasher=hasher) for a in chunk]
            times["build+hash"] += clock() - start
            start = clock()
            payloads = [event.to_capi() for event in built]
            times["to_capi"] += clock() - start
            start = clock()
            for payload in payloads:
                outbox.put(payload)
            times["enqueue"] += clock() - start
            del built, payloads
        delivered = 0
        while True:
            start = clock()
            claimed = outbox.claim(BATCH)
            times["claim"] += clock() - start
            if not claimed:
                break
            start = clock()
            # As the sender does: the stored JSON text goes out unchanged.
            body = encode_batch([entry.raw for entry in claimed])
            times["encode"] += clock() - start
            start = clock()
            response = client._http.post(client.url, content=body)
            times["HTTP"] += clock() - start
            start = clock()
            result = classify_response(response, len(claimed))
            times["classify"] += clock() - start
            start = clock()
            outbox.ack([entry.id for entry in claimed])
            times["ack"] += clock() - start
            delivered += sum(r.outcome is Outcome.DELIVERED for r in result.results)
        seconds = clock() - total_start
        outbox.close()
        _check(delivered == len(self.inputs), f"stages delivered {delivered}/{len(self.inputs)}")
        shutil.rmtree(directory)
        self.stage_times.append(times)
        return seconds

    def send_path(self) -> float:
        """C: delivery of events that exist: ``to_capi()`` and ``CapiClient.send()``."""
        client, events = self.client, self.events
        delivered = 0

        def run() -> None:
            nonlocal delivered
            for batch in batches(events):
                delivered += client.send([event.to_capi() for event in batch]).delivered

        seconds = cpu(run)
        _check(delivered == len(events), f"send path delivered {delivered}/{len(events)}")
        return seconds

    def dumps(self) -> float:
        """D: the floor, ``json.dumps`` of the same payloads in the same batches."""
        payloads = self.payloads

        def run() -> None:
            for batch in batches(payloads):
                json.dumps({"data": batch})

        return cpu(run)

    def dumps_httpx(self) -> float:
        """E: ``json.dumps`` and a bare httpx POST of it, answer parsed."""
        payloads, http = self.payloads, self.http
        url = self.client.url
        processed = 0

        def run() -> None:
            nonlocal processed
            for batch in batches(payloads):
                response = http.post(url, content=json.dumps({"data": batch}).encode())
                processed += response.json()["num_events_processed"]

        seconds = cpu(run)
        _check(processed == len(payloads), f"json+httpx processed {processed}/{len(payloads)}")
        return seconds


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"delivery_cpu: {message}")


# -- the SDK, in its own interpreter -----------------------------------------------------


class SdkWorker:
    """Drives ``--sdk-worker`` in the SDK's interpreter over stdin/stdout."""

    def __init__(self, python: str, server: Server, payload_file: Path, workdir: Path) -> None:
        args = [python, str(Path(__file__).resolve()), "--sdk-worker"]
        args += ["--url", server.api_base_url, "--payloads", str(payload_file)]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=workdir,  # the SDK reads a config.json or .env from its working directory
        )
        self.version = self._reply()["version"]

    def run(self) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self._reply()["cpu"])

    def _reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"delivery_cpu: the SDK worker died ({self.process.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=30)
        if self.process.stdout:
            self.process.stdout.close()


def sdk_worker(url: str, payload_file: str) -> None:
    """Send the payloads with pinterest-api-sdk on each ``run`` line; print its CPU time."""
    os.environ["PINTEREST_API_URI"] = url  # read by pinterest.config at import
    from importlib.metadata import version

    from openapi_generated.pinterest_client.model.conversion_events_custom_data_contents import (
        ConversionEventsCustomDataContents,
    )
    from pinterest.ads.conversion_events import Conversion
    from pinterest.client import PinterestSDKClient

    client = PinterestSDKClient.create_client_with_token(TOKEN)
    payloads = json.loads(Path(payload_file).read_text())

    def event(payload: dict[str, Any]) -> Any:
        custom = dict(payload.get("custom_data") or {})
        if "contents" in custom:
            custom["contents"] = [
                ConversionEventsCustomDataContents(**c) for c in custom["contents"]
            ]
        optional = ("event_source_url", "partner_name", "language", "opt_out")
        return Conversion.create_conversion_event(
            event_name=payload["event_name"],
            action_source=payload["action_source"],
            event_time=payload["event_time"],
            event_id=payload["event_id"],
            user_data=payload["user_data"],
            custom_data=custom,
            **{key: payload[key] for key in optional if key in payload},
        )

    def send_all(items: list[dict[str, Any]]) -> None:
        for batch in batches(items):
            response = Conversion.send_conversion_events(
                ad_account_id=AD_ACCOUNT_ID,
                conversion_events=[event(p) for p in batch],
                client=client,
            )
            if response.num_events_processed != len(batch):
                raise SystemExit("the SDK's batch was not processed")

    send_all(copy.deepcopy(payloads[:BATCH]))  # warm up, untimed
    gc.collect()
    gc.freeze()  # as in the parent: the fixtures are not the SDK's garbage
    print(json.dumps({"version": version("pinterest-api-sdk")}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        items = copy.deepcopy(payloads)  # the SDK converts lists in place
        seconds = cpu(lambda items=items: send_all(items))
        print(json.dumps({"cpu": seconds}), flush=True)


def find_sdk_python(explicit: str | None) -> str | None:
    """An interpreter that can import pinterest-api-sdk, or None."""
    candidates = [explicit] if explicit else [str(SDK_VENV_PYTHON), sys.executable]
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run(
                [python, "-c", "import pinterest.ads.conversion_events"],
                capture_output=True,
                cwd=tempfile.gettempdir(),
            )
            if probe.returncode == 0:
                return python
    return None


# -- the report --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="client CPU per delivered event")
    parser.add_argument("--events", type=int, default=5000, help="events per variant and rep")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument(
        "--server",
        choices=("loopback", "fake"),
        default="loopback",
        help="the minimal stand-in (default) or the validating FakePinterest",
    )
    parser.add_argument("--sdk-python", help="interpreter with pinterest-api-sdk installed")
    parser.add_argument("--sdk-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--payloads", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sdk_worker:
        sdk_worker(args.url, args.payloads)
        return 0
    if args.events < 1 or args.reps < 1:
        parser.error("--events and --reps must be positive")

    sdk_python = find_sdk_python(args.sdk_python)
    with (
        tempfile.TemporaryDirectory(prefix="dedupkit-bench-") as tmp,
        running_server(args.server) as server,
    ):
        workdir = Path(tmp)
        bench = Bench(server, args.events, workdir)
        variants: dict[str, Callable[[], float]] = {
            "track->ack": bench.track_to_ack,
            "stages": bench.stages,
            "send path": bench.send_path,
            "json.dumps": bench.dumps,
            "json+httpx": bench.dumps_httpx,
        }
        sdk: SdkWorker | None = None
        if sdk_python:
            payload_file = workdir / "payloads.json"
            payload_file.write_text(json.dumps(bench.payloads))
            sdk = SdkWorker(sdk_python, server, payload_file, workdir)
            variants["SDK"] = sdk.run
        try:
            for run in variants.values():  # warm up: imports, connections, caches
                run()
            bench.stage_times.clear()
            # The fixtures (inputs, payloads, prebuilt events) stay alive throughout: keep the
            # garbage collector from walking them in every variant.
            gc.collect()
            gc.freeze()
            results: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.reps):
                for name, run in variants.items():
                    results[name].append(run())
            received = server.events_received()
        finally:
            bench.close()
            if sdk:
                sdk.close()
    # Every variant but json.dumps sends N events per run, the SDK worker one more batch.
    expected = args.events * (args.reps + 1) * (len(variants) - 1)
    expected += min(BATCH, args.events) if sdk else 0
    _check(received == expected, f"the server received {received} events, expected {expected}")

    report(args, bench, results, sdk)
    return 0


def report(
    args: argparse.Namespace, bench: Bench, results: dict[str, list[float]], sdk: SdkWorker | None
) -> None:
    n = args.events
    per_event = {name: [s / n * 1e6 for s in runs] for name, runs in results.items()}
    median = {name: statistics.median(values) for name, values in per_event.items()}
    size = len(json.dumps({"data": bench.payloads}).encode()) / n
    print(
        f"dedupkit delivery CPU — {n} checkout events x {args.reps} interleaved reps, "
        f"batches of {BATCH}, server: {bench.server.kind} (own process, CPU not counted)"
    )
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{size:.0f} bytes of JSON per event, client CPU = time.process_time()"
    )
    if sdk:
        print(f"pinterest-api-sdk {sdk.version} (own process and virtualenv)")
    else:
        print("pinterest-api-sdk not found: SDK skipped (see bench/README.md)")
    print()
    print(f"{'variant':<12} {'median µs/event':>16} {'min':>8} {'max':>8}")
    for name, values in per_event.items():
        print(f"{name:<12} {median[name]:>16.1f} {min(values):>8.1f} {max(values):>8.1f}")

    print()
    print("where the time goes (stages, median µs/event):")
    stage_median = {
        stage: statistics.median(t[stage] / n * 1e6 for t in bench.stage_times)
        for stage in bench.stage_times[0]
    }
    total = sum(stage_median.values())
    for stage, value in stage_median.items():
        print(f"  {stage:<11} {value:>7.1f}  {value / total:>4.0%}")
    print(f"  {'sum':<11} {total:>7.1f}")

    send, floor, dumps = median["send path"], median["json+httpx"], median["json.dumps"]
    full = median["track->ack"]
    print()
    print("ratios (medians):")
    _ratio(
        "send path / (json.dumps + httpx POST)",
        send / floor,
        f"<= {TARGET_DUMPS_RATIO:g}",
        send / floor <= TARGET_DUMPS_RATIO,
    )
    _ratio("send path / json.dumps alone", send / dumps)
    _ratio("track->ack / json.dumps alone", full / dumps)
    _ratio("track->ack / (json.dumps + httpx POST)", full / floor)
    if sdk:
        sdk_cpu = median["SDK"]
        _ratio(
            "SDK / track->ack",
            sdk_cpu / full,
            f">= {TARGET_SDK_RATIO:g}",
            sdk_cpu / full >= TARGET_SDK_RATIO,
        )
        _ratio("SDK / send path", sdk_cpu / send)


def _ratio(label: str, value: float, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else f"  target {target}: {'met' if met else 'NOT met'}"
    print(f"  {label:<40} {value:>6.2f}x{verdict}")


if __name__ == "__main__":
    sys.exit(main())
