"""``python -m demo_site [--host HOST] [--port PORT]``: the shop and a fake Pinterest, offline.

With ``DEDUPKIT_QUEUE_URL=postgresql+psycopg://…`` in the environment the orders and the
outbox live in that PostgreSQL database, and each order's conversion commits with it.

Host and port default to ``DEMO_HOST`` / ``DEMO_PORT`` from the environment, else
127.0.0.1:5000 (``PORT=5001 make demo`` passes ``--port``). The fake Pinterest listens on a
free loopback port. A port already taken is said in one line, with how to pick another,
before anything starts.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from werkzeug.serving import run_simple

from dedupkit.settings import redacted_url
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest
from dedupkit.testing.blockers import typical_blockers

from . import QUEUE_FILE, create_app, dashboard_path, uses_postgres


def _exit(signum: int, frame: object) -> None:
    # SIGTERM (``timeout``, ``docker stop``) ends the process like Ctrl-C: cleanly.
    sys.exit(0)


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, ``None`` when it can.

    Bound with ``SO_REUSEADDR`` as werkzeug's server is, so a port in TIME_WAIT is free.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use by another program"
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo_site",
        description="dedupkit's demo storefront with an embedded fake Pinterest.",
    )
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "5000")))
    parser.add_argument(
        "--no-tag-blockers",
        action="store_true",
        help="let every visitor load the tag (by default the fake refuses it to Firefox, "
        "Safari and Brave, as their tracking protection does, so the ledger shows where the "
        "tag is lost)",
    )
    args = parser.parse_args(argv)
    problem = port_taken(args.host, args.port)
    if problem is not None:
        other = args.port + 1
        print(
            f"dedupkit demo: {problem}. Pick another port: PORT={other} make demo "
            f"(or python -m demo_site --port {other})",
            file=sys.stderr,
        )
        return 1

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
    if not args.no_tag_blockers:
        fake.block_tag(typical_blockers)
    app = None
    try:
        app = create_app({"DEMO_FAKE_PINTEREST": fake})
        queue_url = app.config["DEDUPKIT_QUEUE_URL"]
        if not uses_postgres(queue_url):
            # The fake starts empty and order ids start again at A-1001: a queue left by an
            # earlier run would hold those event ids already and swallow the new events.
            # (On PostgreSQL the orders are kept too, and their numbers go on.)
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
            f"  queue                 {redacted_url(queue_url)}",
            *(
                []
                if args.no_tag_blockers
                else [
                    "  The fake blocks the tag for Firefox, Safari and Brave (--no-tag-blockers)."
                ]
            ),
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
