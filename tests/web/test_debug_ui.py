"""The dedup ledger dashboard (``GET /dedupkit/debug``) and the outboxes' ``recent()``."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Request, url_for
from werkzeug.test import TestResponse

from dedupkit import DedupKit
from dedupkit.outbox import Outbox, SQLiteOutbox
from dedupkit.outbox.base import LedgerEntry
from dedupkit.redaction import REDACTED
from dedupkit.state import get_state
from dedupkit.vocabulary import EventState

from ..conftest import CHROME_UA, TOKEN, AppFactory, kit_for, shopper_request
from ..support.payloads import capi_event
from ..support.redis_server import RedisServer, running_redis_server

EMAIL = "Jane.Roe@Example.com"
PHONE = "+1 650 555 0134"
PHONE_DIGITS = "16505550134"
#: Put times well in the past, so that acks and retries (stamped with the real clock) are newer.
T0 = time.time() - 10_000


def page(app: Flask, path: str = "/dedupkit/debug", **kw: Any) -> TestResponse:
    return app.test_client().get(path, headers={"User-Agent": CHROME_UA, **kw.pop("headers", {})})


def track_checkout(app: Flask, order_id: str = "A-1001") -> str:
    """A server-tracked checkout with raw PII and a click id, from a shopper's request."""
    kit: DedupKit = kit_for(app)
    with shopper_request(app, "/checkout?epik=dj0yJnU9abc"):
        event = kit.track(
            "checkout",
            order_id=order_id,
            value=42.5,
            currency="USD",
            user={"email": EMAIL, "phone": PHONE},
        )
    return event.event_id


def dead_letter(app: Flask, event_id: str, reason: str) -> None:
    outbox = get_state(app).outbox
    outbox.put(capi_event(event_id, name="lead"))
    [claimed] = outbox.claim(1)
    outbox.dead([claimed.id], reason=reason)


# -- access ---------------------------------------------------------------------------------


def test_is_off_by_default_with_a_json_404(app: Flask) -> None:
    response = page(app)
    assert response.status_code == 404
    assert response.is_json
    assert "error" in response.get_json()
    assert page(app, "/dedupkit/debug?format=json").status_code == 404


@pytest.mark.parametrize("value", [False, None, 0, "", "0", "false", "off"])
def test_falsy_settings_keep_it_closed(make_app: AppFactory, value: object) -> None:
    assert page(make_app(DEBUG_UI=value)).status_code == 404


@pytest.mark.parametrize("value", [True, 1, "1", "true", "on"])
def test_truthy_settings_open_it(make_app: AppFactory, value: object) -> None:
    assert page(make_app(DEBUG_UI=value)).status_code == 200


def test_a_callable_is_asked_on_every_request(make_app: AppFactory) -> None:
    asked: list[str] = []

    def is_admin(request: Request) -> bool:
        asked.append(request.path)
        return request.headers.get("X-Admin") == "yes"

    app = make_app(DEBUG_UI=is_admin)
    assert page(app).status_code == 404
    allowed = page(app, headers={"X-Admin": "yes"})
    assert allowed.status_code == 200
    assert allowed.mimetype == "text/html"
    assert page(app, headers={"X-Admin": "no"}).status_code == 404
    assert asked == ["/dedupkit/debug"] * 3


def test_a_hook_that_raises_denies_and_is_logged(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Request) -> bool:
        raise LookupError("no user loader")

    response = page(make_app(DEBUG_UI=broken))
    assert response.status_code == 404
    assert "DEDUPKIT_DEBUG_UI raised" in caplog.text


def test_the_endpoint_follows_the_prefix(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True, URL_PREFIX="/t")
    with app.test_request_context():
        assert url_for("dedupkit.debug") == "/t/debug"
    assert page(app, "/t/debug").status_code == 200


# -- the page -------------------------------------------------------------------------------


def test_shows_queued_and_dead_events_without_pii_or_token(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    dead_letter(app, "lead-77", f"Invalid parameter; token {TOKEN} rejected")
    checkout_id = track_checkout(app)

    response = page(app)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Robots-Tag"] == "noindex"
    text = response.get_data(as_text=True)
    assert checkout_id in text and "checkout-A-1001" in text
    assert "lead-77" in text
    assert f"Invalid parameter; token {REDACTED} rejected" in text
    # Counts, each beside what it means: one pending checkout, one dead lead.
    counts = {
        key: re.search(rf'<tr id="count-{key}">.*?<td class="num">(\d+)</td>', text, re.S)
        for key in ("pending", "dead", "delivered")
    }
    assert {k: m and m.group(1) for k, m in counts.items()} == {
        "pending": "1",
        "dead": "1",
        "delivered": "0",
    }
    assert "waiting for the sender" in text
    assert 'id="status" data-level="attention"' in text  # a failure is news
    # Names of the identity fields in plain words, never their values.
    assert "IP address, user agent, click id, e-mail, phone" in text
    assert "em, ph" not in text
    for secret in (
        EMAIL,
        EMAIL.lower(),
        PHONE,
        PHONE_DIGITS,
        TOKEN,
        "198.51.100.7",  # the shopper's IP
        "dj0yJnU9abc",  # the click id
        hashlib.sha256(EMAIL.lower().encode()).hexdigest(),
    ):
        assert secret not in text, secret


def test_lists_the_tag_name_state_attempts_and_click_id(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    track_checkout(app)
    outbox = get_state(app).outbox
    [claimed] = outbox.claim(10)
    outbox.retry([claimed.id], not_before=time.time() + 60, error="503 Service Unavailable")

    [entry] = page(app, "/dedupkit/debug?format=json").get_json()["entries"]
    assert entry["event_name"] == "checkout"
    assert entry["tag_name"] == "checkout"
    assert entry["state"] == "pending"
    assert entry["attempts"] == 1
    assert entry["has_click_id"] is True
    assert entry["last_error"] == "503 Service Unavailable"
    assert {"em", "ph", "client_ip_address", "client_user_agent", "click_id"} <= set(
        entry["user_fields"]
    )
    assert 0 <= entry["age"] < 60


def test_json_has_the_same_data(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    checkout_id = track_checkout(app)
    get_state(app).outbox.record_skip("bot")
    response = page(app, "/dedupkit/debug?format=json")
    assert response.status_code == 200
    assert response.is_json
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Robots-Tag"] == "noindex"
    data = response.get_json()
    assert data["counts"] == {"pending": 1, "sending": 0, "delivered": 0, "dead": 0}
    assert data["skipped"] == {
        "bot": 1,
        "no_consent": 0,
        "no_identity": 0,
        "gpc_opt_out": 0,
        "lost_memory_full": 0,
        "lost_unreadable": 0,
    }
    assert data["outbox"] == "SQLite, the file outbox.sqlite3 outside the instance folder"
    assert "sqlite:" not in response.get_data(as_text=True).lower()  # no path
    assert data["oldest_pending_age"] is not None
    assert data["paused_until"] is None
    assert data["last_errors"] == []
    assert [e["event_id"] for e in data["entries"]] == [checkout_id]
    raw = response.get_data(as_text=True)
    assert EMAIL.lower() not in raw and TOKEN not in raw and PHONE_DIGITS not in raw


def test_the_outbox_in_the_instance_folder_is_described_so(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True, QUEUE_URL=None)
    text = page(app).get_data(as_text=True)
    assert "Events wait in: SQLite in the instance folder" in text
    assert app.instance_path not in text


def test_bad_query_parameters_are_json_400s(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    for query in ("format=xml", "limit=many"):
        response = page(app, f"/dedupkit/debug?{query}")
        assert response.status_code == 400
        assert response.is_json


def test_limit_caps_the_entries(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    for n in range(5):
        track_checkout(app, order_id=f"O-{n}")
    data = page(app, "/dedupkit/debug?format=json&limit=2").get_json()
    assert [e["event_id"] for e in data["entries"]] == ["checkout-O-4", "checkout-O-3"]
    assert data["counts"]["pending"] == 5


def test_shows_the_retry_after_pause_and_skips(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    outbox = get_state(app).outbox
    outbox.set_pause_until(
        time.time() + 120, reason="Pinterest asked to wait 120 s (HTTP 429)", kind="rate_limit"
    )
    outbox.record_skip("no_consent")
    text = page(app).get_data(as_text=True)
    assert "paused (rate limit)" in text
    assert "Pinterest asked to wait 120 s (HTTP 429)" in text
    assert "skipped: no consent" in text and "skipped: bots" not in text  # no empty rows
    data = page(app, "/dedupkit/debug?format=json").get_json()
    assert 60 < data["pause_remaining"] <= 120
    assert data["pause"]["kind"] == "rate_limit"
    assert data["pause"]["reason"] == "Pinterest asked to wait 120 s (HTTP 429)"


def test_everything_is_escaped(make_app: AppFactory) -> None:
    app = make_app(DEBUG_UI=True)
    outbox = get_state(app).outbox
    outbox.put(capi_event("<script>alert(1)</script>", name="page_visit"))
    [claimed] = outbox.claim(1)
    outbox.dead([claimed.id], reason='<img src=x onerror="alert(2)">')
    text = page(app).get_data(as_text=True)
    assert "<script>alert" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script" not in text  # no JavaScript at all


def test_an_outbox_failure_is_a_json_503(make_app: AppFactory, tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    app = make_app(DEBUG_UI=True, QUEUE_URL=f"sqlite:///{tmp_path}/not-a-dir/outbox.sqlite3")
    response = page(app)
    assert response.status_code == 503
    assert "could not open the dedupkit outbox" in response.get_json()["error"]


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis_server(tmp_path_factory.mktemp("redis-pw"), password="s3cret-pw") as srv:
        yield srv


@pytest.mark.redis
def test_the_redis_url_is_shown_without_its_password(
    make_app: AppFactory, password_redis: RedisServer
) -> None:
    app = make_app(DEBUG_UI=True, QUEUE_URL=password_redis.url)
    checkout_id = track_checkout(app, order_id=f"R-{time.time_ns()}")
    for path in ("/dedupkit/debug", "/dedupkit/debug?format=json"):
        text = page(app, path).get_data(as_text=True)
        assert "s3cret-pw" not in text
        assert "127.0.0.1" not in text and "redis://" not in text
        assert "Redis, namespace dedupkit:" in text
        assert "Redis keeps delivered events for about a day" in text
        assert checkout_id in text
        assert EMAIL.lower() not in text and TOKEN not in text
    get_state(app).outbox.close()


# -- recent(): the contract of both outboxes ------------------------------------------------


@pytest.fixture
def sqlite_box(tmp_path: Path) -> Iterator[SQLiteOutbox]:
    box = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    yield box
    box.close()


@pytest.fixture
def redis_box(redis_server: RedisServer) -> Iterator[Outbox]:
    import redis

    from dedupkit.outbox.redis import RedisOutbox

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    box = RedisOutbox(redis_server.url)
    yield box
    box.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def box(request: pytest.FixtureRequest) -> Outbox:
    outbox: Outbox = request.getfixturevalue(f"{request.param}_box")
    return outbox


def ev(event_id: str, name: str = "checkout", **user: Any) -> dict[str, Any]:
    payload = capi_event(event_id, name=name, event_time=T0)
    payload["user_data"] = {
        "em": ["a" * 64],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": "Mozilla/5.0",
        **user,
    }
    return payload


def ids(entries: list[LedgerEntry]) -> list[str]:
    return [e.event_id for e in entries]


def test_recent_is_newest_first_and_bounded(box: Outbox) -> None:
    assert box.recent() == []
    for n in range(5):
        box.put(ev(f"e{n}"), now=T0 + n)
    assert ids(box.recent()) == ["e4", "e3", "e2", "e1", "e0"]
    assert ids(box.recent(2)) == ["e4", "e3"]
    assert box.recent(0) == []


def test_recent_entries_carry_field_names_not_values(box: Outbox) -> None:
    box.put(ev("with-click", click_id="dj0yJnU9secret"), now=T0)
    box.put(ev("no-click"), now=T0 + 1)
    no_click, with_click = box.recent()
    assert with_click == LedgerEntry(
        event_name="checkout",
        event_id="with-click",
        state=EventState.PENDING,
        attempts=0,
        event_time=float(int(T0)),
        updated_at=T0,
        last_error=None,
        has_click_id=True,
        user_fields=("em", "client_ip_address", "client_user_agent", "click_id"),
        created_at=T0,
        value=10.0,
        currency="USD",
    )
    assert no_click.has_click_id is False
    assert no_click.user_fields == ("em", "client_ip_address", "client_user_agent")
    assert "dj0yJnU9secret" not in repr(box.recent())
    assert "a" * 64 not in repr(box.recent())


def test_recent_follows_claim_retry_dead_and_ack(box: Outbox) -> None:
    for n, name in enumerate(["retried", "dead", "acked", "waiting"]):
        box.put(ev(name), now=T0 + n)
    claimed = {c.payload["event_id"]: c.id for c in box.claim(3, now=T0 + 10)}
    assert set(claimed) == {"retried", "dead", "acked"}
    before = {e.event_id: e for e in box.recent()}
    assert before["retried"].state is EventState.SENDING
    assert before["waiting"].state is EventState.PENDING
    # A claim is not a change of its own: the order stays the order of enqueueing.
    assert before["retried"].updated_at == T0
    assert ids(box.recent()) == ["waiting", "acked", "dead", "retried"]

    box.retry([claimed["retried"]], not_before=T0 + 100, error="503 from Pinterest")
    box.dead([claimed["dead"]], reason="Pinterest: invalid em", now=T0 + 20)
    box.ack([claimed["acked"]])

    entries = {e.event_id: e for e in box.recent()}
    assert entries["retried"].state is EventState.PENDING
    assert entries["retried"].attempts == 1
    assert entries["retried"].last_error == "503 from Pinterest"
    assert entries["dead"].state is EventState.DEAD
    assert entries["dead"].last_error == "Pinterest: invalid em"
    assert entries["dead"].updated_at == T0 + 20
    assert entries["waiting"].state is EventState.PENDING
    # Delivered entries are listed (SQLite until pruned, Redis for a day), with the
    # delivering request counted as an attempt.
    assert entries["acked"].state is EventState.DELIVERED
    assert entries["acked"].last_error is None
    assert entries["acked"].attempts == 1
    assert entries["acked"].user_fields == ("em", "client_ip_address", "client_user_agent")
    assert entries["dead"].attempts == 1
    if isinstance(box, SQLiteOutbox):
        # Ordered by their last change (ack and retry use the real clock).
        assert ids(box.recent()) == ["acked", "retried", "dead", "waiting"]
    else:
        # Live entries keep their enqueue time; the ack is dated by the real clock.
        assert box.stats().delivered == 1
        assert ids(box.recent()) == ["acked", "dead", "waiting", "retried"]
        assert ids(box.recent(2)) == ["acked", "dead"]


def test_recent_merges_dead_and_live_entries_by_time(box: Outbox) -> None:
    for n in range(4):
        box.put(ev(f"live{n}"), now=T0 + n)
        box.put(ev(f"dead{n}", name="lead"), now=T0 + n)
    claimed = {c.payload["event_id"]: c.id for c in box.claim(100, now=T0 + 5)}
    for n in range(4):
        # live0 … live3 stay in flight; dead0 … dead3 die later and later.
        box.dead([claimed[f"dead{n}"]], reason="failed", now=T0 + 10 + n)
    assert ids(box.recent(3)) == ["dead3", "dead2", "dead1"]
    in_flight = [e for e in box.recent(100) if e.state is EventState.SENDING]
    assert len(in_flight) == 4


def test_recent_after_a_replay(box: Outbox) -> None:
    box.put(ev("d"), now=T0)
    [claimed] = box.claim(1, now=T0 + 1)
    box.dead([claimed.id], reason="expired", now=T0 + 2)
    assert box.replay_dead(now=T0 + 3) == 1
    [entry] = box.recent()
    assert entry.state is EventState.PENDING
    assert entry.last_error is None
    assert entry.attempts == 0


def test_sqlite_recent_reads_through_an_index(sqlite_box: SQLiteOutbox) -> None:
    from dedupkit.outbox.sqlite import _RECENT

    sqlite_box.put(ev("x"), now=T0)
    plan = sqlite_box._conn().execute("EXPLAIN QUERY PLAN " + _RECENT, (10,)).fetchall()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX outbox_changed" in detail
    assert "TEMP B-TREE" not in detail


def test_a_newcomers_few_events_are_shown_open_and_many_are_collapsed(
    make_app: AppFactory,
) -> None:
    app = make_app(DEBUG_UI=True)
    track_checkout(app, order_id="O-1")
    assert '<details id="recent" open>' in page(app).get_data(as_text=True)
    for n in range(2, 7):
        track_checkout(app, order_id=f"O-{n}")
    assert '<details id="recent">' in page(app).get_data(as_text=True)
