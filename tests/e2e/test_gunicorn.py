"""Under gunicorn with several workers on one SQLite outbox, each event reaches Pinterest once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from dedupkit.delivery.client import CapiClient
from dedupkit.delivery.sender import Sender
from dedupkit.outbox import open_outbox
from dedupkit.testing import FakePinterest

from ..conftest import CHROME_UA
from ..support.network import free_port
from ..support.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


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
        # One test client posts hundreds of beacons from one address.
        "DEDUPKIT_RATE_LIMIT": "off",
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

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {process.communicate()[0]}")
        try:
            return httpx.get(f"{url}/dedupkit/dedupkit.js", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    if wait_until(serving, timeout=20, every=0.05):
        return process, url
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
        wait_until(lambda: outbox.stats().pending == outbox.stats().in_flight == 0)
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
        sender = Sender(outbox, client)
        # Claims nothing until the leases left by the stopped workers run out.
        wait_until(lambda: sender.run_once() == 0 and outbox.stats().delivered == len(ids), 20)
    assert set(e["event_id"] for e in fake.capi_events) == set(ids)
