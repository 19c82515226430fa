"""What only the PostgreSQL outbox does, against a real server: accounts sharing one
database, its tables and their version, timeouts and failures. The behaviour every outbox
shares is in test_outbox_contract.py; transactions with the shop's own in
test_postgres_transactions.py."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask

from dedupkit import DedupKit
from dedupkit.errors import ConfigurationError, OutboxError
from dedupkit.outbox import open_outbox
from dedupkit.outbox.postgres import SCHEMA_VERSION, PostgresOutbox, metadata

from ..support.network import free_port
from ..support.payloads import capi_event
from ..support.postgres_server import PostgresServer

pytestmark = pytest.mark.postgres

T0 = 1_750_000_000.0


def event(event_id: str, **extra: Any) -> dict[str, Any]:
    return capi_event(event_id, event_time=T0, **extra)


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database()


@pytest.fixture
def outbox(postgres_url: str) -> Iterator[PostgresOutbox]:
    box = PostgresOutbox(postgres_url, namespace=f"test-{uuid.uuid4().hex}")
    yield box
    box.close()


def test_two_shops_on_one_database_never_see_each_other(postgres_url: str) -> None:
    shops = [
        PostgresOutbox(postgres_url, namespace=f"dedupkit:{n}-{uuid.uuid4().hex[:8]}")
        for n in ("111111", "222222")
    ]
    try:
        # Both shops number their orders from 1: the same (event_name, event_id).
        for n, shop in enumerate(shops):
            for order in range(3):
                assert shop.put(event(f"order-{order}", custom_data={"value": str(n)}), now=T0)
            shop.record_skip("bot", event_name="checkout", event_id=f"skip-{n}", now=T0)
            shop.record_tag("checkout", "order-0", n == 0, now=T0)
        for n, shop in enumerate(shops):
            claimed = shop.claim(10, now=T0)
            assert [c.payload["event_id"] for c in claimed] == ["order-0", "order-1", "order-2"]
            assert {c.payload["custom_data"]["value"] for c in claimed} == {str(n)}
            shop.ack([c.id for c in claimed[:2]])
            shop.dead([claimed[2].id], reason=f"refused {n}", now=T0)
        for n, shop in enumerate(shops):
            stats = shop.stats(now=T0)
            assert (stats.delivered, stats.dead, stats.skipped) == (2, 1, {"bot": 1})
            assert [d.reason for d in shop.dead_letters()] == [f"refused {n}"]
            assert [s.event_id for s in shop.recent_skips()] == [f"skip-{n}"]
            tags = {e.event_id: e.tag for e in shop.recent()}
            assert tags["order-0"] is (n == 0)
        # Ids from another shop's claims touch nothing here.
        letter = shops[0].dead_letters()[0].id
        assert shops[1].replay_dead([letter]) == 0
        assert shops[0].replay_dead([letter]) == 1
        shops[0].set_pause_until(time.time() + 60, reason="HTTP 429")
        assert shops[1].pause() is None
    finally:
        for shop in shops:
            shop.close()


def test_a_timed_put_gives_up_on_a_table_another_connection_locked(
    outbox: PostgresOutbox, postgres_url: str
) -> None:
    assert outbox.put(event("before"), timeout=0.05)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text("LOCK TABLE dedupkit_outbox IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            with pytest.raises(OutboxError, match="store an event") as info:
                outbox.put(event("during"), timeout=0.05)
            assert time.monotonic() - started < 1.0
            assert "timeout" in str(info.value)
    finally:
        engine.dispose()
    # The limit was the transaction's only: the next puts work, timed or not.
    assert outbox.put(event("after"), timeout=0.05) is True
    assert outbox.put(event("later")) is True
    assert outbox.stats().pending == 3


def test_a_database_that_is_down_fails_fast_and_never_shows_the_password() -> None:
    url = f"postgresql+psycopg://shop:pw-s3cret@127.0.0.1:{free_port()}/shop"
    box = PostgresOutbox(url, namespace="down")
    try:
        with pytest.raises(OutboxError) as info:
            box.put(event("e1"), timeout=0.05)
        message = str(info.value)
        assert "pw-s3cret" not in message
        assert "PostgreSQL runs" in message
        assert "127.0.0.1" in message
        # While it was just unreachable, a page does not try again.
        started = time.monotonic()
        with pytest.raises(OutboxError, match="not tried again") as again:
            box.put(event("e2"), timeout=0.05)
        assert time.monotonic() - started < 0.5
        assert "Connection refused" in str(again.value)
        assert "pw-s3cret" not in repr(box)
    finally:
        box.close()


def test_an_outbox_written_by_a_newer_dedupkit_is_refused(database: str) -> None:
    first = PostgresOutbox(database)
    first.put(event("e1"))
    first.close()
    engine = sa.create_engine(database)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE dedupkit_meta SET value = :v WHERE key = 'schema_version'"),
                {"v": str(SCHEMA_VERSION + 1)},
            )
    finally:
        engine.dispose()
    newer = PostgresOutbox(database)
    try:
        with pytest.raises(OutboxError, match="newer dedupkit") as info:
            newer.claim(1)
        assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value)
        assert "upgrade flask-dedupkit" in str(info.value)
    finally:
        newer.close()


def test_tables_made_by_the_shops_migrations_are_used_as_they_are(database: str) -> None:
    # What Alembic does with target_metadata = [db.metadata, dedupkit's metadata].
    engine = sa.create_engine(database)
    try:
        metadata.create_all(engine)
        box = PostgresOutbox(database, engine=engine)
        assert box.put(event("e1"))
        assert [c.payload["event_id"] for c in box.claim(1)] == ["e1"]
        box.close()
        assert set(sa.inspect(engine).get_table_names()) == set(metadata.tables)
    finally:
        engine.dispose()


def test_processes_starting_at_once_create_the_tables_once(database: str) -> None:
    boxes = [PostgresOutbox(database, namespace=f"shop-{n}") for n in range(6)]
    start = threading.Barrier(len(boxes))
    failures: list[BaseException] = []

    def first_put(box: PostgresOutbox) -> None:
        try:
            start.wait(timeout=10)
            box.put(event("e1"))
        except BaseException as exc:  # reported from the test thread
            failures.append(exc)

    threads = [threading.Thread(target=first_put, args=(box,)) for box in boxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert failures == []
        assert all(box.stats().pending == 1 for box in boxes)
    finally:
        for box in boxes:
            box.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://{auth}127.0.0.1:{port}/{db}",
        "postgres://{auth}127.0.0.1:{port}/{db}",
        "postgresql+psycopg://{auth}127.0.0.1:{port}/{db}",
    ],
)
def test_every_spelling_of_a_postgres_url_opens_it_with_psycopg_3(
    url: str, postgres_server: PostgresServer, postgres_url: str
) -> None:
    db = postgres_url.rpartition("/")[2]
    box = open_outbox(
        url.format(auth="postgres@", port=postgres_server.port, db=db), namespace="spelling"
    )
    try:
        assert isinstance(box, PostgresOutbox)
        assert box.engine.dialect.driver == "psycopg"
        assert box.namespace == "spelling"
        box.put(event(f"e-{uuid.uuid4().hex}"))
    finally:
        box.close()


def shop_config(tmp_path: Path, queue_url: str) -> Flask:
    app = Flask("shop", instance_path=str(tmp_path))
    app.config.update(
        DEDUPKIT_AD_ACCOUNT_ID="549764982399",
        DEDUPKIT_CONVERSION_TOKEN="test-token",
        DEDUPKIT_QUEUE_URL=queue_url,
    )
    return app


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgresql+psycopg2://u:pw-s3cret@db/shop", "runs on psycopg 3"),
        ("postgresql+psycopg://u:pw-s3cret@db", "names a host and a database"),
        ("postgresql:///shop", "names a host and a database"),
    ],
)
def test_a_postgres_url_dedupkit_cannot_use_fails_at_init_app(
    tmp_path: Path, url: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError, match=fix) as info:
        DedupKit(shop_config(tmp_path, url))
    assert "pw-s3cret" not in str(info.value)


@pytest.mark.parametrize("module", ["psycopg", "sqlalchemy"])
def test_a_postgres_queue_without_the_extra_fails_at_init_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError
    with pytest.raises(ConfigurationError) as info:
        DedupKit(shop_config(tmp_path, "postgresql+psycopg://u@db/shop"))
    assert "pip install 'flask-dedupkit[postgres]'" in str(info.value)


def test_the_driver_is_psycopg_3() -> None:
    # The extra installs psycopg 3; SQLAlchemy's "postgresql://" alone would want psycopg2.
    assert psycopg.__version__.split(".")[0] == "3"
