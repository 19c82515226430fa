"""Under gunicorn with several workers on one SQLite outbox, each event reaches Pinterest once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dedupkit.client import CapiClient
from dedupkit.outbox import open_outbox
from dedupkit.sender import Sender
from dedupkit.testing import FakePinterest

from .conftest import CHROME_UA
from .support.network import free_port

ROOT = Path(__file__).resolve().parent.parent


def start_gunicorn(fake: FakePinterest, queue_url: str, *, preload: bool) -> tuple[Any, str]:
    port = free_port()
    env = {
        **os.environ,
        "DEDUPKIT_AD_ACCOUNT_ID": fake.ad_account_id,
        "DEDUPKIT_CONVERSION_TOKEN": fake.token,
        "DEDUPKIT_API_BASE_URL": fake.api_base_url,
        "DEDUPKIT_QUEUE_URL": queue_url,
        "DEDUPKIT_BACKGROUND_SENDER": "1",
        "DEDUPKIT_FLUSH_INTERVAL": "0.05",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        "--threads",
        "4",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
    ]
    if preload:
        command.append("--preload")
    command.append("tests.support.env_app:create_app()")
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {process.communicate()[0]}")
        try:
            if httpx.get(f"{url}/dedupkit/dedupkit.js", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)  # polling for the port to open, with a deadline
    process.kill()
    raise AssertionError("gunicorn did not start")


def beacon(event_id: str) -> str:
    return json.dumps(
        {
            "event_name": "add_to_cart",
            "event_id": event_id,
            "event_source_url": "https://shop.example/p",
            "data": {"value": 3, "currency": "USD"},
        }
    )


def post_beacons(url: str, ids: list[str]) -> None:
    # No keep-alive: every beacon is a new connection, so both workers get requests.
    headers = {"User-Agent": CHROME_UA, "Content-Type": "text/plain"}
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(headers=headers, limits=limits) as http:
        for event_id in ids:
            response = http.post(f"{url}/dedupkit/events", content=beacon(event_id))
            assert response.status_code == 202, response.text


def stop(process: Any) -> str:
    process.send_signal(signal.SIGTERM)
    output: str = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    return output


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_two_workers_deliver_each_event_once(
    tmp_path: Path, fake: FakePinterest, preload: bool
) -> None:
    queue_url = f"sqlite:///{tmp_path}/outbox.sqlite3"
    process, url = start_gunicorn(fake, queue_url, preload=preload)
    ids = [f"g-{i}" for i in range(300)]
    try:
        post_beacons(url, ids + ids[:50])  # 50 beacons sent twice, as a flaky network does
        # Delivered by the workers' own background senders, not by anything in this test.
        assert fake.wait_for_capi_events(len(ids), timeout=30)
        outbox = open_outbox(queue_url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = outbox.stats()
            if stats.pending == stats.in_flight == 0:
                break
            time.sleep(0.05)  # polling with a deadline
    finally:
        if process.poll() is None:
            stop(process)
    assert outbox.stats().delivered == len(ids)
    assert sorted(e["event_id"] for e in fake.capi_events) == sorted(ids)


def test_stopping_gunicorn_mid_delivery_loses_nothing(tmp_path: Path, fake: FakePinterest) -> None:
    queue_url = f"sqlite:///{tmp_path}/outbox.sqlite3"
    process, url = start_gunicorn(fake, queue_url, preload=False)
    ids = [f"s-{i}" for i in range(200)]
    fake.delay_next(0.5, times=2)  # slow answers: deliveries are in flight at SIGTERM
    try:
        post_beacons(url, ids)
    finally:
        stop(process)

    outbox = open_outbox(queue_url)
    stats = outbox.stats()
    assert stats.dead == 0
    assert stats.delivered + stats.pending + stats.in_flight == len(ids)
    # Whatever the workers left behind, any later sender finishes, with the same ids.
    with CapiClient(
        ad_account_id=fake.ad_account_id, token=fake.token, base_url=fake.api_base_url
    ) as client:
        sender = Sender(outbox, client, lease=0.5)
        deadline = time.monotonic() + 20
        while outbox.stats().delivered < len(ids) and time.monotonic() < deadline:
            if sender.run_once() == 0:
                time.sleep(0.05)  # waiting out a lease left by a stopped worker
    assert set(e["event_id"] for e in fake.capi_events) == set(ids)
