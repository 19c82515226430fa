"""An app configured from DEDUPKIT_* environment variables, as in a deployment.

For subprocesses: `flask --app tests.support.env_app dedupkit …`, `flask --app
tests.support.env_app track-checkout` (a web process's track() and background delivery) and
`gunicorn 'tests.support.env_app:create_app()'`. ``APP_LOGGING=basic`` configures logging
the way an app that routes its logs would (``logging.basicConfig`` with an ``APP`` prefix);
``APP_INSTANCE_PATH`` keeps the instance folder (the memory fallback's spill file) per test.
"""

from __future__ import annotations

import logging
import os

import click
from flask import Flask

from dedupkit import DedupKit
from dedupkit.state import get_state
from tests.support.agents import CHROME_UA

#: A desktop Chrome: a shopper, not a bot.


def create_app() -> Flask:
    if os.environ.get("APP_LOGGING") == "basic":
        logging.basicConfig(format="APP %(levelname)s %(name)s: %(message)s")
    app = Flask("cli_shop", instance_path=os.environ.get("APP_INSTANCE_PATH"))
    for key, value in os.environ.items():
        if key.startswith("DEDUPKIT_") and key not in ("DEDUPKIT_CONVERSION_TOKEN",):
            app.config[key] = value
    app.config["DEDUPKIT_BACKGROUND_SENDER"] = os.environ.get("DEDUPKIT_BACKGROUND_SENDER") == "1"
    app.config["DEDUPKIT_FLUSH_INTERVAL"] = float(os.environ.get("DEDUPKIT_FLUSH_INTERVAL", "1"))
    kit = DedupKit(app)

    @app.cli.command("track-checkout")
    @click.argument("order_ids", nargs=-1)
    def track_checkout(order_ids: tuple[str, ...]) -> None:
        """Track checkouts as a view would, then stop the background sender (it sends first)."""
        for order_id in order_ids:
            kit.track(
                "checkout",
                order_id=order_id,
                value=10,
                currency="USD",
                user={"client_ip_address": "198.51.100.7", "client_user_agent": CHROME_UA},
            )
        get_state(app).background.stop(timeout=20)

    return app
