"""An app configured from DEDUPKIT_* environment variables, as in a deployment.

For subprocesses: `flask --app tests.support.env_app dedupkit …` and
`gunicorn 'tests.support.env_app:create_app()'`.
"""

from __future__ import annotations

import os

from flask import Flask

from dedupkit import DedupKit


def create_app() -> Flask:
    app = Flask("cli_shop")
    for key, value in os.environ.items():
        if key.startswith("DEDUPKIT_") and key not in ("DEDUPKIT_CONVERSION_TOKEN",):
            app.config[key] = value
    app.config["DEDUPKIT_BACKGROUND_SENDER"] = os.environ.get("DEDUPKIT_BACKGROUND_SENDER") == "1"
    app.config["DEDUPKIT_FLUSH_INTERVAL"] = float(os.environ.get("DEDUPKIT_FLUSH_INTERVAL", "1"))
    DedupKit(app)
    return app
