"""No resource grows with traffic: the SQLite outbox's descriptors stay flat however many
threads come and go (a thread-per-request server starts one per request)."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, request
from werkzeug.serving import BaseWSGIServer, make_server

from dedupkit import DedupKit
from dedupkit.outbox import SQLiteOutbox

from ..support.agents import CHROME_UA
from ..support.payloads import capi_event

#: How many more descriptors than before the traffic are tolerated (pooled connections,
#: a socket being closed): a leak of one per request is thousands.
SLACK = 8


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _needs_proc() -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts descriptors in /proc/self/fd (Linux)")


def in_threads(count: int, concurrently: int, work: Callable[[int], object]) -> None:
    """Run ``work(n)`` for n < count, each in a new thread, ``concurrently`` at a time."""
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # reported from the test thread
            failures.append(exc)

    for start in range(0, count, concurrently):
        threads = [
            threading.Thread(target=run, args=(n,))
            for n in range(start, min(count, start + concurrently))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []


def test_puts_from_short_lived_threads_leave_no_descriptor_behind(tmp_path: Path) -> None:
    box = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    try:
        in_threads(100, 4, lambda n: box.put(capi_event(f"warm-{n}")))
        before = open_descriptors()
        # One at a time: concurrent writers would spend the test in SQLite's busy sleeps.
        in_threads(10_000, 1, lambda n: box.put(capi_event(f"e{n}")))
        assert open_descriptors() - before <= SLACK
        assert box.stats().pending == 10_100
    finally:
        box.close()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[BaseWSGIServer, DedupKit]]:
    """A shop whose page tracks a visit, served by Werkzeug with a thread per request."""
    app = Flask("shop")
    app.config.update(
        DEDUPKIT_AD_ACCOUNT_ID="549764982399",
        DEDUPKIT_CONVERSION_TOKEN="test-token",
        DEDUPKIT_TAG_ID="2612345678901",
        DEDUPKIT_QUEUE_URL=f"sqlite:///{tmp_path}/outbox.sqlite3",
        DEDUPKIT_BACKGROUND_SENDER=False,
        DEDUPKIT_API_BASE_URL="http://127.0.0.1:9/v5",
    )
    kit = DedupKit(app)

    @app.get("/visit/<int:n>")
    def visit(n: int) -> str:
        event = kit.track("page_visit", event_id=f"visit-{n}", user={"email": "jane@example.com"})
        return event.event_id + request.path

    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield server, kit
    finally:
        server.shutdown()
        server.server_close()
        serving.join(10)


def test_thread_per_request_traffic_leaves_no_descriptor_behind(
    shop: tuple[BaseWSGIServer, DedupKit],
) -> None:
    server, _ = shop

    def get(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        try:
            conn.request("GET", f"/visit/{n}", headers={"User-Agent": CHROME_UA})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, f"visit-{n}/visit/{n}".encode())
        finally:
            conn.close()

    in_threads(100, 4, get)
    before = open_descriptors()
    # Each client thread makes one request, which the server answers in a new thread.
    in_threads(10_000, 2, lambda n: get(100 + n))
    assert open_descriptors() - before <= SLACK
    # Every request did reach the outbox (a skipped event would write nothing).
    queue_url = server.app.config["DEDUPKIT_QUEUE_URL"]  # type: ignore[attr-defined]
    outbox = SQLiteOutbox(Path(queue_url.removeprefix("sqlite:///")))
    try:
        assert outbox.stats().pending == 10_100
    finally:
        outbox.close()
