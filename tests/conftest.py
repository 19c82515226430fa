"""Shared fixtures: a Flask app with dedupkit on a real SQLite outbox in tmp_path."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from dedupkit import DedupKit
from dedupkit.outbox import Outbox
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from .support.agents import CHROME_UA
from .support.browser import chromium
from .support.postgres_server import PostgresServer, running_postgres_server
from .support.redis_server import RedisServer, running_redis_server

AD_ACCOUNT_ID = "549764982399"
TOKEN = "test-token"
TAG_ID = "2612345678901"

AppFactory = Callable[..., Flask]

#: The DedupKit each test app was built with, as the app's own code would keep it.
_KITS: weakref.WeakKeyDictionary[Flask, DedupKit] = weakref.WeakKeyDictionary()


def kit_for(app: Flask) -> DedupKit:
    """The :class:`DedupKit` that ``make_app`` registered on ``app``."""
    return _KITS[app]


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    """Build an app with dedupkit; keyword arguments are DEDUPKIT_* settings without prefix."""

    def factory(**settings: Any) -> Flask:
        app = Flask("shop", instance_path=str(tmp_path / "instance"))
        app.config.update(
            TESTING=True,
            SECRET_KEY="test",
            DEDUPKIT_AD_ACCOUNT_ID=AD_ACCOUNT_ID,
            DEDUPKIT_CONVERSION_TOKEN=TOKEN,
            DEDUPKIT_TAG_ID=TAG_ID,
            DEDUPKIT_QUEUE_URL=f"sqlite:///{tmp_path}/outbox.sqlite3",
            # Unit tests read the outbox themselves; delivery has its own tests.
            DEDUPKIT_BACKGROUND_SENDER=False,
            DEDUPKIT_API_BASE_URL="http://127.0.0.1:9/v5",
        )
        app.config.update({f"DEDUPKIT_{key}": value for key, value in settings.items()})
        _KITS[app] = DedupKit(app)
        return app

    return factory


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


def queued(app: Flask) -> list[dict[str, Any]]:
    """Every event waiting in the app's outbox (claims them)."""
    outbox: Outbox = get_state(app).outbox
    return [dict(entry.payload) for entry in outbox.claim(1000, lease=60.0)]


@pytest.fixture
def outbox(app: Flask) -> Iterator[Outbox]:
    yield get_state(app).outbox


def shopper_request(app: Flask, path: str = "/", **kwargs: Any) -> Any:
    """A request context as a browser would make it: a user agent and a client address."""
    kwargs.setdefault("headers", {"User-Agent": CHROME_UA})
    kwargs.setdefault("environ_base", {"REMOTE_ADDR": "198.51.100.7"})
    return app.test_request_context(path, **kwargs)


@pytest.fixture
def fake() -> Iterator[FakePinterest]:
    """A fake Pinterest on a loopback port, for one test."""
    with FakePinterest() as fake:
        yield fake


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium, for the browser tests of one module."""
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the whole session."""
    with running_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port, for the whole session (initdb costs
    seconds: tests share it and keep apart by database or by account)."""
    with running_postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A database of the session's server that tests share, each with accounts of its own."""
    return postgres_server.new_database()
