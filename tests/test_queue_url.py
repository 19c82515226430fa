"""The one reading of DEDUPKIT_QUEUE_URL, shared by the settings check and open_outbox."""

from __future__ import annotations

import pytest

from dedupkit import ConfigurationError
from dedupkit.queue_url import parse_queue_url


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("sqlite:///instance/outbox.sqlite3", "sqlite", "instance/outbox.sqlite3"),
        ("sqlite:////var/lib/shop/outbox.sqlite3", "sqlite", "/var/lib/shop/outbox.sqlite3"),
        ("redis://127.0.0.1:6379/0", "redis", None),
        ("rediss://user:pw@cache.example:6380/1", "redis", None),
        ("postgresql+psycopg://shop:pw@db/shop", "postgresql", None),
        ("postgres://shop@db/shop", "postgresql", None),
    ],
)
def test_each_spelling_names_its_outbox(url: str, kind: str, path: str | None) -> None:
    location = parse_queue_url(url)
    assert (location.kind, location.path, location.url) == (kind, path, url)


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite://host/x", "sqlite:///x?mode=ro", "mysql://u:s3cret@db/x", "x"]
)
def test_anything_else_is_refused_without_quoting_a_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="DEDUPKIT_QUEUE_URL") as refused:
        parse_queue_url(url)
    assert "s3cret" not in str(refused.value)
