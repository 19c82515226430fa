"""A process that enqueues one event and exits: its BackgroundSender must send it at exit.

``python -m tests.support.exit_flush DB API_BASE_URL EVENT_JSON``. The delivery thread has
already looked at the empty outbox and would wait a minute before looking again, so only the
flush at interpreter exit can deliver the event.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from dedupkit.delivery.client import CapiClient
from dedupkit.delivery.sender import BackgroundSender, Sender
from dedupkit.outbox.base import Claimed
from dedupkit.outbox.sqlite import SQLiteOutbox

looked = threading.Event()


class WatchedOutbox(SQLiteOutbox):
    def claim(self, limit: int, *, now: float | None = None, lease: float = 30.0) -> list[Claimed]:
        try:
            return super().claim(limit, now=now, lease=lease)
        finally:
            looked.set()


def main() -> None:
    db, api_base_url, payload = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    outbox = WatchedOutbox(db)

    def make_sender() -> Sender:
        client = CapiClient(ad_account_id="549764982399", token="test-token", base_url=api_base_url)
        return Sender(outbox, client)

    background = BackgroundSender(make_sender, flush_interval=60)
    background.ensure_started()
    if not looked.wait(10):
        sys.exit("the sender never looked at the outbox")
    event: dict[str, Any] = payload
    outbox.put(event)
    background.wake()


if __name__ == "__main__":
    main()
