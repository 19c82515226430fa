"""The one reading of ``DEDUPKIT_QUEUE_URL``: which outbox it names, and where.

Settings check it at start-up and :func:`dedupkit.outbox.open_outbox` opens what it names;
both read it here, so the two can never disagree on what a URL means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from .errors import ConfigurationError

#: URL schemes (before any ``+driver``) of a PostgreSQL outbox.
POSTGRES_SCHEMES = ("postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class QueueURL:
    """What a queue URL names: the kind of outbox and, for SQLite, the file."""

    kind: Literal["sqlite", "redis", "postgresql"]
    url: str
    #: The SQLite file (relative to the working directory unless absolute).
    path: str | None = None


def parse_queue_url(url: str) -> QueueURL:
    """The outbox ``url`` names.

    ``sqlite:///relative/path`` and ``sqlite:////absolute/path`` (SQLAlchemy's spelling),
    ``redis://`` or ``rediss://``, ``postgresql+psycopg://`` (also ``postgresql://`` and
    ``postgres://``).

    :raises ConfigurationError: for an unknown scheme or a SQLite URL without a path; the
        message quotes only the scheme, never the rest (it may hold a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # urlsplit keeps one "/" of "sqlite:///x" before a relative path, two of "sqlite:////x".
        path = parts.path[1:]
        if parts.netloc or not path or parts.query or parts.fragment:
            raise ConfigurationError(
                "DEDUPKIT_QUEUE_URL: a SQLite outbox URL is sqlite:///relative/path or "
                "sqlite:////absolute/path, with no host and no query"
            )
        return QueueURL("sqlite", url, path)
    if scheme in REDIS_SCHEMES:
        return QueueURL("redis", url)
    if scheme.partition("+")[0] in POSTGRES_SCHEMES:
        return QueueURL("postgresql", url)
    problem = f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme"
    raise ConfigurationError(
        f"DEDUPKIT_QUEUE_URL has {problem}; use sqlite:///path/to/file, redis://host:port/db "
        "or postgresql+psycopg://user:password@host:5432/database"
    )
