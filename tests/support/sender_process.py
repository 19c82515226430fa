"""One dedupkit sender in its own process, for the reliability tests.

``python -m tests.support.sender_process QUEUE_URL API_BASE_URL [options]`` prints ``ready`` once
it runs, delivers from the outbox at ``QUEUE_URL`` (SQLite, Redis or PostgreSQL) until SIGTERM
(or a kill), then prints ``sent N``: how many events Pinterest reported as processed to it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dedupkit.delivery.client import BatchResult, CapiClient
from dedupkit.delivery.retry import RetryPolicy
from dedupkit.delivery.sender import Sender
from dedupkit.outbox import open_outbox


class CountingClient:
    """A :class:`CapiClient` that counts the events Pinterest processed."""

    def __init__(self, client: CapiClient) -> None:
        self.client = client
        # The sender compares it with a credentials pause's, to probe at once after a rotation.
        self.token_id = client.token_id
        self.sent = 0

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        result = self.client.send(events)
        self.sent += result.delivered
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("queue_url")
    parser.add_argument("api_base_url")
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--ad-account-id", default="549764982399")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--flush-interval", type=float, default=0.05)
    parser.add_argument("--max-idle", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--namespace", default=None, help="a Redis prefix or PostgreSQL account")
    args = parser.parse_args(argv)

    outbox = open_outbox(args.queue_url, namespace=args.namespace)
    client = CountingClient(
        CapiClient(
            ad_account_id=args.ad_account_id,
            token=args.token,
            base_url=args.api_base_url,
            timeout=args.timeout,
        )
    )
    sender = Sender(
        outbox,
        client,
        policy=RetryPolicy(base=0.05, cap=0.5),
        batch_size=args.batch_size,
        lease=args.lease,
    )
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        stop.set()
        sender.interrupt()

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    try:
        sender.run(stop, flush_interval=args.flush_interval, max_idle=args.max_idle)
    finally:
        client.client.close()
        outbox.close()
    print(f"sent {client.sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
