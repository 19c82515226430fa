"""The delivery gate: every pause and backoff in one place, as pure arithmetic.

The gate answers one question, "may I send now, and how much?" (:meth:`Gate.permit`), and is
told what became of each request (:meth:`Gate.told`). It never reads a clock, a socket or the
outbox: the sender passes the time and the pause the outbox shares, and carries out what the
gate decides (:class:`Decision`). So a table of answers and times tests all of it.

What it knows about:

- a credentials failure (401, 403, 404): a pause for every process, one minute doubling to
  fifteen, stored with the token's fingerprint; then a one-event *probe*. A process with
  another token probes at once. A request Pinterest judges ends the pause for everyone;
- ``Retry-After`` (429, 503): a pause for every process, capped (:data:`MAX_RETRY_AFTER`,
  ``DEDUPKIT_MAX_RETRY_AFTER``); a later successful request ends it;
- ``x-ratelimit-remaining: 0``: a pause until the window resets, capped the same;
- a request without a verdict (5xx, timeout, network error): this process backs off;
- ``flask dedupkit resume``: the shared pause is gone, and with it the wait of the process
  that started it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from ..outbox.base import Pause
from .retry import RandomSource, RetryPolicy

#: Pause kinds (:attr:`dedupkit.outbox.base.Pause.kind`).
CREDENTIALS = "credentials"
RATE_LIMIT = "rate_limit"
#: The longest pause ``Retry-After`` or ``x-ratelimit-reset`` may impose, by default: a web
#: event more than about an hour late cannot be deduplicated, so one bogus header must not
#: hold delivery for long.
MAX_RETRY_AFTER = 300.0
#: The pause after a credentials failure: one minute, doubling up to fifteen.
CREDENTIALS_BACKOFF = RetryPolicy(base=60.0, factor=2.0, cap=900.0, jitter=0.1)
#: Events sent by the probe that follows a credentials pause.
PROBE_SIZE = 1


class Answer(enum.Enum):
    """What one request came to, as far as pausing is concerned."""

    #: Pinterest judged the request (verdicts, or a refusal of its content): the credentials
    #: work and Pinterest is up.
    JUDGED = "judged"
    #: No verdict: 408, 429, 5xx, a timeout, a network error, an unreadable answer.
    FAILED = "failed"
    #: 401, 403, 404: the token or the ad account is wrong.
    CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True)
class Told:
    """What the gate is told about one request."""

    answer: Answer
    #: ``Retry-After`` in seconds, as given (uncapped).
    retry_after: float | None = None
    #: Seconds until the rate-limit window resets, when ``x-ratelimit-remaining`` was 0.
    exhausted_for: float | None = None
    #: Pinterest's message, for the pause's reason.
    message: str = ""
    #: The HTTP status, for the pause's reason.
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Permit:
    """The gate's answer to "may I send now, and how much?"."""

    #: Seconds before a request may go; ``0.0`` means now.
    wait: float
    #: The most events the next claim may send.
    limit: int
    #: The next request is a probe after a credentials pause.
    probe: bool
    #: Why the gate holds, for logs; ``""`` when it does not.
    why: str = ""

    @property
    def open(self) -> bool:
        return self.wait <= 0


@dataclass(frozen=True, slots=True)
class Decision:
    """What the sender must do after the gate was told of an answer."""

    #: Raise the outbox's shared pause to this.
    share: Pause | None = None
    #: Lift the shared pause when it is of this kind.
    lift: str | None = None
    #: Tell the application that the pause of this kind is over (``delivery_resumed``).
    resumed: str | None = None
    #: Seconds this sender now waits of its own (a backoff), ``0.0`` for none.
    backoff: float = 0.0


class Gate:
    """The pause and backoff state of one sender.

    :param token_id: the fingerprint of the sender's token (stored with a credentials pause).
    :param batch_size: events per request when nothing holds delivery back.
    :param policy: the backoff after a request without a verdict.
    :param max_retry_after: the longest pause ``Retry-After`` or the rate-limit headers impose.
    :param credentials_backoff: the pause after a credentials failure.
    :param rng: the source of jitter, seeded in tests.
    :raises ValueError: for a ``batch_size`` or ``max_retry_after`` below 1.
    """

    def __init__(
        self,
        *,
        token_id: str = "",
        batch_size: int = 1000,
        policy: RetryPolicy = RetryPolicy(),  # noqa: B008 (frozen, so sharing it is safe)
        max_retry_after: float = MAX_RETRY_AFTER,
        credentials_backoff: RetryPolicy = CREDENTIALS_BACKOFF,
        rng: RandomSource = random,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not max_retry_after >= 1:
            raise ValueError(f"max_retry_after must be at least 1 s, got {max_retry_after}")
        self.token_id = token_id
        self.batch_size = batch_size
        self.policy = policy
        self.max_retry_after = max_retry_after
        self.credentials_backoff = credentials_backoff
        self.rng = rng
        #: Nothing is sent before this time: this sender's backoff after failed requests.
        self.backoff_until = 0.0
        #: ... nor before this one: its own credentials pause, which ``resume`` ends.
        self.credentials_until = 0.0
        #: Requests in a row without a verdict.
        self.failures = 0
        #: Credentials failures in a row.
        self.credential_failures = 0
        #: The next request is a one-event probe.
        self.probing = False
        # The kind of the shared pause this gate started and has not yet seen end.
        self._started: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Gate backoff_until={self.backoff_until} failures={self.failures} "
            f"probing={self.probing} started={self._started}>"
        )

    def permit(self, now: float, shared: Pause | None) -> Permit:
        """May a request go at ``now``, given the outbox's ``shared`` pause in force?

        A credentials pause stored for another token does not hold this sender (its token
        was rotated): it probes at once. A pause this gate started that is gone before its
        time was lifted (``flask dedupkit resume``): its own wait ends with it.
        """
        if shared is not None and shared.kind == CREDENTIALS:
            self.probing = True
        elif shared is None and self._started == CREDENTIALS:
            # Lifted or over: either way this sender's own wait for it is over too.
            self.credentials_until = 0.0
        hold, why = self.backoff_until, "backing off after a failed request"
        if self.credentials_until > hold:
            hold, why = self.credentials_until, "credentials refused; waiting to probe"
        if shared is not None and not self.other_token(shared) and shared.until > hold:
            hold, why = shared.until, shared.reason or f"{shared.kind.replace('_', ' ')} pause"
        limit = PROBE_SIZE if self.probing else self.batch_size
        wait = max(0.0, hold - now)
        return Permit(wait, limit, self.probing, why if wait > 0 else "")

    def other_token(self, pause: Pause) -> bool:
        """``pause`` is a credentials pause of another token than this sender's."""
        return (
            pause.kind == CREDENTIALS
            and bool(pause.token_id and self.token_id)
            and pause.token_id != self.token_id
        )

    def told(self, now: float, told: Told) -> Decision:
        """Learn what a request answered at ``now``; say what to do about it."""
        if told.answer is Answer.CREDENTIALS:
            return self._credentials(now, told)
        share: Pause | None = None
        lift: str | None = None
        resumed: str | None = None
        if told.answer is Answer.JUDGED:
            self.failures = 0
            self.backoff_until = self.credentials_until = 0.0
            self.credential_failures = 0
            if self.probing:
                # The probe worked: the credentials pause is over for every process.
                self.probing = False
                lift = resumed = CREDENTIALS
            else:
                # Pinterest takes requests again: a rate-limit pause left in force (a bogus
                # Retry-After, one raised while this request was on its way) is over.
                lift = RATE_LIMIT
            resumed = resumed or self._started
            self._started = None
        else:
            self.backoff_until = now + self.policy.delay(self.failures, rng=self.rng)
            self.failures += 1
        if told.retry_after is not None:
            wait = min(told.retry_after, self.max_retry_after)
            capped = (
                f" (capped at {self.max_retry_after:.0f} s)"
                if told.retry_after > self.max_retry_after
                else ""
            )
            status = f" (HTTP {told.status})" if told.status is not None else ""
            reason = (
                f"Pinterest asked to wait {told.retry_after:.0f} s{status}{capped}; "
                "no request before then"
            )
            share = Pause(now + wait, reason, RATE_LIMIT, "")
        elif told.exhausted_for is not None:
            wait = min(told.exhausted_for, self.max_retry_after)
            reason = (
                "Pinterest's rate limit is used up (x-ratelimit-remaining: 0); next request "
                f"when it resets in {wait:.0f} s"
            )
            share = Pause(now + wait, reason, RATE_LIMIT, "")
        if share is not None:
            self._started = RATE_LIMIT
            if lift == RATE_LIMIT:
                lift = None  # this answer's own pause replaces the old one
            if resumed == RATE_LIMIT:
                resumed = None
        backoff = max(0.0, self.backoff_until - now, self.credentials_until - now)
        return Decision(share=share, lift=lift, resumed=resumed, backoff=backoff)

    def _credentials(self, now: float, told: Told) -> Decision:
        delay = self.credentials_backoff.delay(self.credential_failures, rng=self.rng)
        self.credential_failures += 1
        self.probing = True
        # This sender waits too, even when another token's longer pause is in force.
        self.credentials_until = now + delay
        self._started = CREDENTIALS
        reason = told.message or "Pinterest refused the credentials"
        share = Pause(now + delay, reason, CREDENTIALS, self.token_id)
        return Decision(share=share, backoff=delay)
