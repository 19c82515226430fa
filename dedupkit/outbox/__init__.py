"""Durable outboxes: where tracked events wait until Pinterest has them."""

from __future__ import annotations

from ..queue_url import parse_queue_url
from .base import Claimed as Claimed
from .base import DeadLetter as DeadLetter
from .base import LedgerEntry as LedgerEntry
from .base import Outbox as Outbox
from .base import OutboxStats as OutboxStats
from .base import Pause as Pause
from .sqlite import SQLiteOutbox as SQLiteOutbox

__all__ = [
    "Claimed",
    "DeadLetter",
    "LedgerEntry",
    "Outbox",
    "OutboxStats",
    "Pause",
    "SQLiteOutbox",
    "open_outbox",
]


def open_outbox(url: str, *, namespace: str | None = None, account: str | None = None) -> Outbox:
    """Open the outbox that ``DEDUPKIT_QUEUE_URL`` names.

    ``sqlite:///relative/path`` and ``sqlite:////absolute/path`` (SQLAlchemy's spelling) open
    a :class:`SQLiteOutbox`; ``redis://`` and ``rediss://`` a ``RedisOutbox``, which needs the
    ``flask-dedupkit[redis]`` extra; ``postgresql+psycopg://`` (also ``postgresql://``) a
    ``PostgresOutbox``, which needs the ``flask-dedupkit[postgres]`` extra.

    :param namespace: the prefix of a Redis outbox's keys, or the account of a PostgreSQL
        outbox's rows, so that several shops share one database without seeing each other's
        events (``"dedupkit"`` when ``None``). A SQLite file belongs to one shop: it ignores
        the namespace.

    :param account: the ad account of the process: the outbox is bound to it (see
        :class:`SQLiteOutbox`), stamps it on every event and claims only its events.

    :raises ConfigurationError: for an unknown scheme or a SQLite URL without a path.
    """
    location = parse_queue_url(url)
    if location.kind == "sqlite":
        assert location.path is not None
        return SQLiteOutbox(location.path, account=account)
    if location.kind == "redis":
        from .redis import RedisOutbox

        if namespace is None:
            return RedisOutbox(url, account=account)
        return RedisOutbox(url, namespace=namespace, account=account)
    from .postgres import PostgresOutbox

    if namespace is None:
        return PostgresOutbox(url, account=account)
    return PostgresOutbox(url, namespace=namespace, account=account)
