"""Delivery proven by a model: arbitrary answers, outages, restarts and traffic, real outboxes.

A Hypothesis state machine drives real senders (the real gate, triage and client, over a
scripted transport) and a real outbox (a SQLite file, a real redis-server) on a simulated
clock, through any sequence of Pinterest's answers, outages of any length, restarts with a
new token, ``flask dedupkit resume``, new traffic and a second process. After every step:

- every event is delivered, pending, or dead with a reason: never lost, never sent under
  another id, never claimed after its step (no claim outlives the run that made it);
- no request carried an event past its window, and no event counts an attempt that no
  request made;
- once Pinterest answers normally, every event still inside its window is delivered within
  one backoff period plus one batch interval, whatever happened before.

``make test`` runs a CI-sized number of examples. The nightly profile runs many more::

    DEDUPKIT_HYPOTHESIS_PROFILE=nightly .venv/bin/pytest -p no:cacheprovider \\
        tests/delivery/test_delivery_model.py
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dedupkit.delivery.retry import RetryPolicy
from dedupkit.delivery.sender import Sender
from dedupkit.delivery.triage import EXPIRED
from dedupkit.outbox import Outbox, SQLiteOutbox

from ..support.scripted_pinterest import KINDS, ScriptedPinterest

T0 = 1_750_000_000.0
WINDOW = 3600.0
POLICY = RetryPolicy(base=1.0, factor=2.0, cap=30.0, jitter=0.2)
BATCH = 20
#: The batch interval of the worker (DEDUPKIT_FLUSH_INTERVAL's default).
FLUSH = 1.0

settings.register_profile(
    "delivery-ci",
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "delivery-nightly",
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = "delivery-" + os.environ.get("DEDUPKIT_HYPOTHESIS_PROFILE", "ci")


class DeliveryModel(RuleBasedStateMachine):
    """One shop: an outbox, two processes, Pinterest, and the time."""

    open_outbox: Callable[[], Outbox]

    def __init__(self) -> None:
        super().__init__()
        self.outbox = self.open_outbox()
        self.pinterest = ScriptedPinterest(now=T0, tokens={"pina_token-0-aaaaaaaa"})
        self.tokens = 0
        self.events: dict[str, float] = {}  # event_id -> event_time
        self.seq = 0
        self.senders = [self._sender("pina_token-0-aaaaaaaa") for _ in range(2)]
        # The second process runs only when the model starts it.
        self.running = [True, False]

    @property
    def now(self) -> float:
        return self.pinterest.now

    def _sender(self, token: str) -> Sender:
        client = self.pinterest.client(token)
        return Sender(
            self.outbox,
            client,
            policy=POLICY,
            retry_window=WINDOW,
            batch_size=BATCH,
            clock=lambda: self.now,
            rng=random.Random(len(self.events)),
        )

    def teardown(self) -> None:
        for sender in self.senders:
            sender.client.close()  # type: ignore[attr-defined]
        self.outbox.close()

    # -- traffic and time ---------------------------------------------------------------

    @initialize(
        expired=st.integers(0, 3 * BATCH),
        fresh=st.integers(0, BATCH),
        left=st.sampled_from(["none", "own token", "old token", "rate limit"]),
    )
    def start(self, expired: int, fresh: int, left: str) -> None:
        """Any morning, a Monday after a long outage included: a backlog of events past their
        window ahead of fresh ones, and the pause the last process left."""
        self.pinterest.now = T0
        self.traffic(expired, 2 * WINDOW)
        self.traffic(fresh, 60.0)
        if left == "own token":
            sender = self.senders[0]
            self.outbox.set_pause_until(T0 + 900, reason="HTTP 401", kind="credentials",
                                        token_id=sender.token_id)  # fmt: skip
        elif left == "old token":
            self.outbox.set_pause_until(T0 + 900, reason="HTTP 401", kind="credentials",
                                        token_id="friday")  # fmt: skip
        elif left == "rate limit":
            self.outbox.set_pause_until(T0 + 300, reason="HTTP 429", kind="rate_limit")

    @rule(count=st.integers(1, 45), age=st.sampled_from([0.0, 60.0, 3000.0, 3590.0, 7200.0]))
    def traffic(self, count: int, age: float) -> None:
        """``count`` events whose ``event_time`` is ``age`` seconds ago."""
        for _ in range(count):
            self.seq += 1
            event_id = f"ev-{self.seq:05d}"
            event_time = int(self.now - age)
            self.outbox.put(
                {
                    "event_name": "checkout",
                    "event_id": event_id,
                    "event_time": event_time,
                    "action_source": "web",
                    "user_data": {"client_ip_address": "203.0.113.7"},
                },
                now=self.now,
            )
            self.events[event_id] = float(event_time)

    @rule(seconds=st.sampled_from([0.5, 1.0, 5.0, 30.0, 120.0, 900.0, 4000.0, 3 * 86400.0]))
    def time_passes(self, seconds: float) -> None:
        self.pinterest.now += seconds

    @rule(running=st.booleans())
    def second_process(self, running: bool) -> None:
        self.running[1] = running

    @rule(which=st.integers(0, 1))
    def deliver(self, which: int) -> None:
        if not self.running[which]:
            return
        sender = self.senders[which]
        for _ in range(20):  # as the worker does: again at once while more is waiting
            sender.run_once()
            if not sender.more_waiting():
                break

    # -- what Pinterest does ------------------------------------------------------------

    @rule(kind=st.sampled_from(KINDS), retry_after=st.sampled_from([0.0, 5.0, 120.0, 1e7]))
    def next_answer(self, kind: str, retry_after: float) -> None:
        self.pinterest.next_answer(kind, retry_after)

    @rule(
        kind=st.sampled_from(["401", "403", "404", "503", "timeout", "reset", "429"]),
        seconds=st.sampled_from([10.0, 600.0, 7200.0, 3 * 86400.0]),
    )
    def outage(self, kind: str, seconds: float) -> None:
        self.pinterest.outage = (kind, self.now + seconds)

    @rule()
    def token_revoked(self) -> None:
        self.pinterest.tokens.clear()

    @rule(which=st.integers(0, 1))
    def restart_with_a_new_token(self, which: int) -> None:
        self.tokens += 1
        token = f"pina_token-{self.tokens}-bbbbbbbb"
        self.pinterest.tokens = {token}
        self.senders[which].client.close()  # type: ignore[attr-defined]
        self.senders[which] = self._sender(token)

    @rule()
    def resume(self) -> None:
        self.outbox.clear_pause()

    # -- the proof of liveness ------------------------------------------------------------

    @precondition(lambda self: bool(self.events))
    @rule()
    def pinterest_recovers(self) -> None:
        """Pinterest answers normally from now on: within one backoff period plus one batch
        interval, every event inside its window is delivered."""
        p = self.pinterest
        p.script.clear()
        p.outage = None
        p.tokens |= {str(s.client._secrets[0]) for s in self.senders}  # type: ignore[attr-defined]
        start = self.now
        already_dead = {k for k, (state, _) in self._states().items() if state == "dead"}
        pause = self.outbox.pause(now=start)
        # One backoff period, from what every process can see: the shared pause left, or
        # the longest backoff of a failed request (an event's own retry waits no longer).
        backoff = max(pause.until - start if pause else 0.0, POLICY.cap)
        end = start + backoff + FLUSH
        while True:
            for sender in self.senders:
                self.deliver(self.senders.index(sender))
            if self.now >= end:
                break
            running = [s for s, on in zip(self.senders, self.running, strict=True) if on]
            next_try = min(self.now + s.held_for() for s in running)
            p.now = min(end, max(next_try, self.now + FLUSH))
        states = self._states()
        for event_id, event_time in self.events.items():
            state, reason = states[event_id]
            if state == "delivered" or event_id in already_dead:
                continue
            assert state == "dead", (event_id, state, self.now - event_time)
            if reason == EXPIRED:
                # Only what was past its window by the end may have missed it.
                assert event_time + WINDOW <= self.now, (event_id, reason)

    # -- invariants -----------------------------------------------------------------------

    def _states(self) -> dict[str, tuple[str, str | None]]:
        entries = self.outbox.recent(100_000)
        return {e.event_id: (e.state.value, e.last_error) for e in entries}

    @invariant()
    def nothing_lost_nothing_claimed_forever(self) -> None:
        stats = self.outbox.stats(now=self.now)
        assert stats.in_flight == 0  # every claim ends with its run
        total = stats.pending + stats.delivered + stats.dead
        assert total == len(self.events)

    @invariant()
    def every_dead_letter_says_why_and_attempts_are_requests(self) -> None:
        carried = self.pinterest.carried
        for entry in self.outbox.recent(100_000):
            assert entry.event_id in self.events
            assert entry.attempts <= carried[entry.event_id], entry
            if entry.state.value == "dead":
                assert entry.last_error

    @invariant()
    def no_request_carried_an_expired_event(self) -> None:
        for received in self.pinterest.processed:
            assert received.event_id in self.events  # never under another id
            assert received.at < received.event_time + WINDOW


def _run(open_outbox: Callable[[], Outbox]) -> None:
    machine = type("Model", (DeliveryModel,), {"open_outbox": staticmethod(open_outbox)})
    run_state_machine_as_test(machine, settings=settings.get_profile(PROFILE))


def test_delivery_model_on_sqlite(tmp_path: Path) -> None:
    def open_outbox() -> Outbox:
        return SQLiteOutbox(tmp_path / f"{uuid.uuid4().hex}.sqlite3")

    _run(open_outbox)


@pytest.mark.redis
def test_delivery_model_on_redis(request: pytest.FixtureRequest) -> None:
    from dedupkit.outbox.redis import RedisOutbox

    url = request.getfixturevalue("redis_server").url

    def open_outbox() -> Outbox:
        return RedisOutbox(url, namespace=f"model-{uuid.uuid4().hex}")

    _run(open_outbox)
