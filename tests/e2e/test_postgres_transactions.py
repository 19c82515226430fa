"""The conversion commits with the order: ``kit.track(..., session=db.session)`` on a real
PostgreSQL, with real sender processes and a fake Pinterest."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from dedupkit.errors import ConfigurationError
from dedupkit.outbox import open_outbox
from dedupkit.outbox.postgres import PostgresOutbox, metadata
from dedupkit.state import get_state
from dedupkit.testing import FakePinterest

from ..conftest import AppFactory, kit_for, shopper_request
from ..support.payloads import capi_event
from ..support.polling import wait_until
from ..support.postgres_server import PostgresServer
from ..support.postgres_shop import checkout, close, create_app, create_tables

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "549764982399"


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    """A database of its own: the apps here use their default, per-account outboxes."""
    return postgres_server.new_database()


@pytest.fixture
def shop(database: str, fake: FakePinterest) -> Iterator[Flask]:
    """A shop with its sender in the web process."""
    app = create_app(
        database,
        ad_account_id=fake.ad_account_id,
        CONVERSION_TOKEN=fake.token,
        API_BASE_URL=fake.api_base_url,
        FLUSH_INTERVAL=0.05,
    )
    create_tables(app)
    yield app
    close(app)


def test_the_outbox_tables_are_metadata_alembic_can_see() -> None:
    names = set(metadata.tables)
    assert {"dedupkit_outbox", "dedupkit_counters", "dedupkit_meta"} <= names
    assert all(name.startswith("dedupkit_") for name in names)


def test_a_declined_order_sends_nothing_and_a_paid_one_is_sent_once_it_commits(
    shop: Flask, fake: FakePinterest
) -> None:
    assert checkout(shop, "1001", fail=True).status_code == 402
    answer = checkout(shop, "1002")
    assert answer.status_code == 201
    assert answer.text == "checkout-1002"
    assert fake.wait_for_capi_events(1)
    outbox = get_state(shop).outbox
    assert wait_until(lambda: outbox.stats().delivered == 1)
    assert [e["event_id"] for e in fake.capi_events] == ["checkout-1002"]
    assert [e.event_id for e in outbox.recent()] == ["checkout-1002"]


def test_the_event_is_invisible_until_commit_gone_after_rollback_and_wakes_after_commit(
    make_app: AppFactory, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(QUEUE_URL=database)
    kit = kit_for(app)
    engine = sa.create_engine(database)
    state = get_state(app)
    other = open_outbox(database, namespace=state.settings.outbox_namespace())
    # What another connection sees each time the sender is woken.
    seen_at_wake: list[int] = []
    monkeypatch.setattr(
        state.background, "wake", lambda: seen_at_wake.append(other.stats().pending)
    )
    try:
        with Session(engine) as session, shopper_request(app, "/thanks"):
            kit.track("checkout", order_id="r-1", value=5, currency="USD", session=session)
            # Another host's sender cannot see an order still being written.
            assert other.claim(10) == []
            session.rollback()
        assert other.claim(10) == []
        assert state.outbox.stats().pending == 0
        assert seen_at_wake == []

        with Session(engine) as session, shopper_request(app, "/thanks"):
            kit.track("checkout", order_id="s-1", value=5, currency="USD", session=session)
            assert seen_at_wake == []
            session.commit()
        # Woken once, after the commit: the sender finds the event.
        assert seen_at_wake == [1]
        assert [c.payload["event_id"] for c in other.claim(10)] == ["checkout-s-1"]

        # A bare Connection works the same way.
        with engine.connect() as conn, shopper_request(app, "/thanks"):
            with conn.begin():
                kit.track("checkout", order_id="c-1", value=5, currency="USD", session=conn)
                assert other.claim(10) == []
            [claimed] = other.claim(10)
        assert claimed.payload["event_id"] == "checkout-c-1"
    finally:
        other.close()
        state.outbox.close()
        engine.dispose()


def test_a_duplicate_in_a_transaction_is_counted_once_committed(
    make_app: AppFactory, database: str
) -> None:
    app = make_app(QUEUE_URL=database)
    kit = kit_for(app)
    engine = sa.create_engine(database)
    try:
        for _ in range(2):
            with Session(engine) as session, shopper_request(app, "/thanks"):
                kit.track("checkout", order_id="d-1", value=5, currency="USD", session=session)
                session.commit()
        stats = get_state(app).outbox.stats()
        assert (stats.pending, stats.duplicates) == (1, 1)
    finally:
        get_state(app).outbox.close()
        engine.dispose()


def test_a_session_needs_the_outbox_in_its_own_database(
    make_app: AppFactory, database: str, postgres_server: PostgresServer
) -> None:
    sqlite_app = make_app()
    engine = sa.create_engine(database)
    try:
        with (
            Session(engine) as session,
            shopper_request(sqlite_app, "/thanks"),
            pytest.raises(ConfigurationError, match="DEDUPKIT_QUEUE_URL=postgresql"),
        ):
            kit_for(sqlite_app).track("checkout", order_id="1", value=5, session=session)

        elsewhere = make_app(QUEUE_URL=postgres_server.new_database())
        with (
            Session(engine) as session,
            shopper_request(elsewhere, "/thanks"),
            pytest.raises(ConfigurationError, match="the session must use") as info,
        ):
            kit_for(elsewhere).track("checkout", order_id="1", value=5, session=session)
        assert database.rpartition("/")[2] in str(info.value)
        # Still refused once the session's database has dedupkit tables of its own.
        here = PostgresOutbox(database)
        here.put(capi_event("elsewhere"))
        here.close()
        with (
            Session(engine) as session,
            shopper_request(elsewhere, "/thanks"),
            pytest.raises(ConfigurationError, match="not the same database"),
        ):
            kit_for(elsewhere).track("checkout", order_id="1", value=5, session=session)
        with shopper_request(elsewhere, "/thanks"), pytest.raises(TypeError, match="Session"):
            kit_for(elsewhere).track("checkout", order_id="1", value=5, session="db")
    finally:
        get_state(elsewhere).outbox.close()
        engine.dispose()


def test_the_same_database_under_another_host_name_is_the_same_database(
    make_app: AppFactory, database: str
) -> None:
    app = make_app(QUEUE_URL=database)
    engine = sa.create_engine(database.replace("@127.0.0.1:", "@localhost:"))
    try:
        with Session(engine) as session, shopper_request(app, "/thanks"):
            kit_for(app).track("checkout", order_id="h-1", value=5, session=session)
            session.commit()
        assert get_state(app).outbox.stats().pending == 1
    finally:
        get_state(app).outbox.close()
        engine.dispose()


def test_an_order_committed_then_killed_before_any_sender_loses_nothing(
    database: str, fake: FakePinterest
) -> None:
    setup = create_app(database, ad_account_id=ACCOUNT)
    create_tables(setup)
    close(setup)
    child = subprocess.run(
        [sys.executable, "-m", "tests.support.postgres_shop", "commit-then-die", database, "k-9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.strip() == "committed"

    app = create_app(
        database,
        ad_account_id=ACCOUNT,
        CONVERSION_TOKEN=fake.token,
        API_BASE_URL=fake.api_base_url,
        FLUSH_INTERVAL=0.05,
    )
    try:
        get_state(app).start_delivery()
        assert fake.wait_for_capi_events(1)
        assert [e["event_id"] for e in fake.capi_events] == ["checkout-k-9"]
    finally:
        close(app)


def start_sender(database: str, fake: FakePinterest) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.support.sender_process", database, fake.api_base_url),
            *("--namespace", f"dedupkit:{ACCOUNT}", "--batch-size", "20"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop_sender(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    return int(out.strip().removeprefix("sent "))


def test_two_hosts_deliver_each_committed_order_once_under_load(
    database: str, fake: FakePinterest
) -> None:
    # The web process sends nothing itself: two other "hosts" share the queue.
    app = create_app(database, ad_account_id=ACCOUNT, BACKGROUND_SENDER=False)
    create_tables(app)
    # Slow answers keep one sender from draining everything before the other looks.
    fake.delay_next(0.02, times=10_000)
    senders = [start_sender(database, fake), start_sender(database, fake)]
    committed: list[str] = []
    failures: list[BaseException] = []

    def shopper(n: int) -> None:
        try:
            for i in range(100):
                number = f"{n}-{i}"
                declined = i % 5 == 4
                answer = checkout(app, number, fail=declined)
                assert answer.status_code == (402 if declined else 201)
                if not declined:
                    committed.append(f"checkout-{number}")
        except BaseException as exc:  # reported from the test thread
            failures.append(exc)

    try:
        threads = [threading.Thread(target=shopper, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
        assert len(committed) == 320
        assert fake.wait_for(lambda: len(fake.capi_events) >= len(committed), 60)
    finally:
        sent = [stop_sender(proc) for proc in senders]
        close(app)
    copies = Counter(e["event_id"] for e in fake.capi_events)
    assert set(copies) == set(committed)
    assert set(copies.values()) == {1}
    assert sum(sent) == len(committed)
    assert all(sent), f"one host did nothing: {sent}"


def delivered(outbox: PostgresOutbox, count: int) -> bool:
    return outbox.stats().delivered == count


def test_two_apps_from_one_factory_on_one_database_keep_each_shop_to_its_account(
    database: str,
) -> None:
    with (
        FakePinterest(ad_account_id="111111", ad_account_ids={"111111"}, token="a" * 20) as one,
        FakePinterest(ad_account_id="222222", ad_account_ids={"222222"}, token="b" * 20) as two,
    ):
        apps = [
            create_app(
                database,
                ad_account_id=fake.ad_account_id,
                CONVERSION_TOKEN=fake.token,
                API_BASE_URL=fake.api_base_url,
                FLUSH_INTERVAL=0.05,
            )
            for fake in (one, two)
        ]
        create_tables(apps[0])
        try:
            for app in apps:
                # The same order number in both shops: neither may swallow the other's.
                assert checkout(app, "1001").status_code == 201
            assert checkout(apps[0], "1002").status_code == 201
            assert one.wait_for_capi_events(2)
            assert two.wait_for_capi_events(1)
            for app, count in zip(apps, (2, 1), strict=True):
                outbox = get_state(app).outbox
                assert isinstance(outbox, PostgresOutbox)
                assert wait_until(partial(delivered, outbox, count))
        finally:
            for app in apps:
                close(app)
        assert sorted(e["event_id"] for e in one.capi_events) == ["checkout-1001", "checkout-1002"]
        assert [e["event_id"] for e in two.capi_events] == ["checkout-1001"]
        assert all(r.status == 200 for r in [*one.requests, *two.requests])
