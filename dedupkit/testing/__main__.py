"""``python -m dedupkit.testing``: run :class:`~dedupkit.testing.FakePinterest` until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from .fake import FakePinterest

#: A tag id to paste (the fake accepts any string of digits).
SUGGESTED_TAG_ID = "2612345678901"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dedupkit.testing",
        description="An offline stand-in for Pinterest's Conversions API and tag.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--token", default="test-token", help="conversion token to accept")
    parser.add_argument("--ad-account-id", default="549764982399", help="the ad account")
    args = parser.parse_args(argv)

    # Stop cleanly on SIGTERM too, as when a supervisor (or `make demo`) ends us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        fake = FakePinterest(
            token=args.token,
            ad_account_id=args.ad_account_id,
            host=args.host,
            port=args.port,
            log_requests=True,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        with fake:
            print(f"api_base_url  {fake.api_base_url}", flush=True)
            print(f"pintrk_src    {fake.pintrk_src}", flush=True)
            print(f"pixel_url     {fake.pixel_url}", flush=True)
            print(f"token         {fake.token}", flush=True)
            print(f"ad_account_id {fake.ad_account_id}", flush=True)
            # The fake takes any tag id; this is the one the README's Quickstart pastes.
            print(f"tag_id        {SUGGESTED_TAG_ID}", flush=True)
            print(f"state         {fake.base_url}/_fake/state", flush=True)
            print("Ctrl-C to stop.", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
