"""``python -m demo_site [--host HOST] [--port PORT]``: the shop and a fake Pinterest, offline.

Host and port default to ``DEMO_HOST`` / ``DEMO_PORT`` from the environment, else
127.0.0.1:5000. The fake Pinterest listens on a free loopback port.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from werkzeug.serving import run_simple

from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from . import QUEUE_FILE, create_app, dashboard_path


def _exit(signum: int, frame: object) -> None:
    # SIGTERM (``timeout``, ``docker stop``) ends the process like Ctrl-C: cleanly.
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo_site",
        description="dedupkit's demo storefront with an embedded fake Pinterest.",
    )
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "5000")))
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Request lines show the beacons arriving (POST /dedupkit/events 202), as werkzeug prints them.
    requests = logging.StreamHandler()
    requests.setFormatter(logging.Formatter("%(message)s"))
    werkzeug_logger = logging.getLogger("werkzeug")
    werkzeug_logger.setLevel(logging.INFO)
    werkzeug_logger.addHandler(requests)
    werkzeug_logger.propagate = False
    signal.signal(signal.SIGTERM, _exit)

    fake = FakePinterest().start()
    app = None
    try:
        app = create_app({"DEMO_FAKE_PINTEREST": fake})
        # The fake starts empty and order ids start again at A-1001: a queue left by an
        # earlier run would hold those event ids already and swallow the new events.
        for suffix in ("", "-wal", "-shm"):
            Path(app.instance_path, QUEUE_FILE + suffix).unlink(missing_ok=True)

        shop = f"http://{args.host}:{args.port}"
        ledger = dashboard_path(app)
        lines = [
            "dedupkit demo storefront",
            f"  shop                  {shop}/",
            f"  simulate an ad click  {shop}/?epik=demo-click",
            f"  what Pinterest saw    {shop}/pinterest",
            *([f"  dedup ledger          {shop}{ledger}"] if ledger else []),
            f"  fake Pinterest        {fake.base_url}  (state: {fake.base_url}/_fake/state)",
            f"  queue                 {app.config['DEDUPKIT_QUEUE_URL']}",
            "Offline: nothing leaves this machine. Ctrl-C to stop.",
        ]
        print("\n".join(lines), flush=True)
        run_simple(args.host, args.port, app, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        if app is not None:
            # Deliver what is queued while the fake still listens.
            get_state(app).background.stop()
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
