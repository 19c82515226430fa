"""A shop on PostgreSQL with Flask-SQLAlchemy, built by an app factory: the order and its
conversion are written in one transaction (``kit.track(..., session=db.session)``).

``python -m tests.support.postgres_shop commit-then-die DATABASE_URL ORDER_ID`` commits one
order with its conversion, prints ``committed`` and kills itself with SIGKILL before any
sender runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from dedupkit import DedupKit
from dedupkit.state import get_state

from .agents import CHROME_UA

db = SQLAlchemy()
kit = DedupKit()


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "shop_orders"
    shop: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    total: Mapped[Any] = mapped_column(Numeric(10, 2))


def create_app(database_url: str, *, ad_account_id: str, **settings: Any) -> Flask:
    """One shop; ``settings`` are DEDUPKIT_* keys without the prefix."""
    app = Flask(f"shop-{ad_account_id}")
    app.config.update(
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        DEDUPKIT_AD_ACCOUNT_ID=ad_account_id,
        DEDUPKIT_CONVERSION_TOKEN="test-token",
        DEDUPKIT_QUEUE_URL=database_url,
        DEDUPKIT_API_BASE_URL="http://127.0.0.1:9/v5",
    )
    app.config.update({f"DEDUPKIT_{key}": value for key, value in settings.items()})
    db.init_app(app)
    kit.init_app(app)

    @app.post("/checkout")
    def checkout() -> tuple[str, int]:
        number = request.form["order"]
        db.session.add(Order(shop=ad_account_id, number=number, total=request.form["total"]))
        event = kit.track(
            "checkout",
            order_id=number,
            value=request.form["total"],
            currency="USD",
            session=db.session,
        )
        if request.form.get("fail"):
            # Payment declined after the conversion was tracked: nothing may be sent.
            db.session.rollback()
            return "declined", 402
        db.session.commit()
        return event.event_id, 201

    return app


def close(app: Flask) -> None:
    """Stop the app's sender and close its connections (its outbox's and its own)."""
    state = get_state(app)
    state.background.stop()
    state.outbox.close()
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def create_tables(app: Flask) -> None:
    with app.app_context():
        db.create_all()


def checkout(app: Flask, number: str, total: str = "25.00", *, fail: bool = False) -> Any:
    """POST one checkout as a shopper's browser would."""
    data = {"order": number, "total": total, **({"fail": "1"} if fail else {})}
    return app.test_client().post(
        "/checkout",
        data=data,
        headers={"User-Agent": CHROME_UA},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )


def main(argv: Sequence[str]) -> int:
    command, url, number = argv
    assert command == "commit-then-die"
    app = create_app(url, ad_account_id="549764982399", BACKGROUND_SENDER=False)
    answer = checkout(app, number)
    assert answer.status_code == 201, answer.text
    print("committed", flush=True)
    # No atexit, no sender, no spill: the process is gone the instant it committed.
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
