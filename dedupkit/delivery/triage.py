"""Triage: what became of each event of a request, and what the gate is told about it.

Pure: the answer, the time and the retry policy in, one outcome per event out. The sender
stores the outcomes; the gate learns from :attr:`Triage.told`.

==========================================  ==========================================
the answer                                  each event
==========================================  ==========================================
a verdict per event                         delivered, dead with Pinterest's message, or
                                            retried with backoff
refused as a whole (400, 413, 422)          the request is halved (:attr:`Triage.split`)
                                            until the events at fault are alone
an unexpected answer (a proxy's page, a     retried as a batch once, then halved as a
status Pinterest does not send)             refusal is
no verdict (408, 429, 5xx, timeout)         retried with backoff; dead as ``expired`` at
                                            once when the retry would come after the
                                            window, unless Pinterest asked to wait
credentials refused (401, 403, 404)         held: no attempt counted, sent after the pause
==========================================  ==========================================
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..outbox.base import Claimed, event_time_of
from .client import BatchResult, Outcome
from .gate import Answer, Told
from .retry import RandomSource, RetryPolicy

#: The dead-letter reason of an event not delivered within the retry window.
EXPIRED = "expired"
#: How long after ``event_time`` an event replayed as ``offline`` (``flask dedupkit dead
#: --replay --as-offline``) is still sent: Pinterest refuses events older than seven days
#: (pinterest.md §4).
OFFLINE_MAX_AGE = 7 * 24 * 3600.0

#: Times a batch is retried whole after an unexpected answer before it is halved: a proxy's
#: passing error page should not cost a request per event.
UNEXPECTED_RETRIES = 1

# Pinterest's own refusals of a request's content: halved at once.
_REFUSALS = frozenset({400, 413, 422})
# The stored text of an event replayed as offline (the outbox encodes compact JSON).
_OFFLINE_MARK = '"action_source":"offline"'


@dataclass
class Triage:
    """The outcome of each event of one request."""

    delivered: list[Claimed] = field(default_factory=list)
    #: Refused for good, by Pinterest's message.
    refused: defaultdict[str, list[Claimed]] = field(default_factory=lambda: defaultdict(list))
    #: Retried, by ``(not_before, message)``.
    retried: defaultdict[tuple[float, str], list[Claimed]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: Past their window by the time a retry could go.
    expired: list[Claimed] = field(default_factory=list)
    #: Kept for after a credentials pause, no attempt counted.
    held: list[Claimed] = field(default_factory=list)
    #: Refused as a whole: send the events again in two halves.
    split: bool = False
    #: What the gate is told.
    told: Told = field(default_factory=lambda: Told(Answer.FAILED))


def deadline(entry: Claimed, retry_window: float) -> float:
    """When ``entry`` expires: its retry window, or seven days for an explicit offline replay."""
    value = entry.event_time if entry.event_time is not None else event_time_of(entry.payload)
    if value is None:
        # Pinterest will refuse an event without a usable time: let it say so.
        return float("inf")
    offline = _OFFLINE_MARK in entry.raw and entry.payload.get("action_source") == "offline"
    return value + (OFFLINE_MAX_AGE if offline else retry_window)


def partition(
    entries: Iterable[Claimed], now: float, retry_window: float
) -> tuple[list[Claimed], list[Claimed]]:
    """``(sendable, expired)``: the entries still inside their window at ``now``, and the rest."""
    sendable: list[Claimed] = []
    expired: list[Claimed] = []
    for entry in entries:
        (sendable if now < deadline(entry, retry_window) else expired).append(entry)
    return sendable, expired


def triage(
    group: Sequence[Claimed],
    result: BatchResult,
    *,
    now: float,
    policy: RetryPolicy,
    retry_window: float,
    rng: RandomSource = random,
) -> Triage:
    """Sort the events of one request by what its answer ``result`` says of each.

    :param now: when the answer came.
    :param policy: the backoff of a retried event, by its attempts so far.
    :param retry_window: seconds after ``event_time`` an event may still be sent.
    """
    out = Triage()
    whole = result.whole
    credentials = whole is Outcome.CREDENTIALS
    exhausted = result.rate_limit is not None and result.rate_limit.exhausted
    judged = False
    if credentials:
        out.held += group
    elif whole is Outcome.SPLIT and len(group) > 1 and _retry_first(group, result):
        # No verdict from Pinterest: maybe nobody's fault. The batch goes again as it is.
        for entry in group:
            not_before = now + policy.delay(entry.attempts, rng=rng)
            if not_before >= deadline(entry, retry_window):
                out.expired.append(entry)
            else:
                out.retried[(not_before, result.message or "unexpected answer")].append(entry)
    elif whole is Outcome.SPLIT and len(group) > 1:
        out.split = True
        judged = result.status_code is not None and result.status_code < 500
    else:
        judged = _sort(out, group, result, now, policy, retry_window, rng)
    out.told = Told(
        _answer(result.status_code, judged=judged, credentials=credentials),
        retry_after=result.retry_after,
        exhausted_for=(result.rate_limit.reset if exhausted and result.rate_limit else None),
        message=result.message or "",
        status=result.status_code,
    )
    return out


def _sort(
    out: Triage,
    group: Sequence[Claimed],
    result: BatchResult,
    now: float,
    policy: RetryPolicy,
    retry_window: float,
    rng: RandomSource,
) -> bool:
    """Sort each event by its verdict; ``True`` when Pinterest judged some of them."""
    # Pinterest asked to wait: the shared pause holds these events, and does not expire them
    # by itself; their window is judged when they are claimed again.
    asked_to_wait = result.retry_after is not None or result.status_code == 429
    delays: dict[int, float] = {}
    judged = False
    for entry, verdict in zip(group, result.results, strict=True):
        message = verdict.message
        if verdict.outcome is Outcome.DELIVERED:
            out.delivered.append(entry)
            judged = True
        elif verdict.outcome in (Outcome.PERMANENT, Outcome.SPLIT):
            out.refused[message or "refused by Pinterest"].append(entry)
            judged = True
        elif verdict.outcome is Outcome.CREDENTIALS:
            out.held.append(entry)
        else:
            if entry.attempts not in delays:
                delays[entry.attempts] = policy.delay(entry.attempts, rng=rng)
            not_before = now + delays[entry.attempts]
            if not asked_to_wait and not_before >= deadline(entry, retry_window):
                out.expired.append(entry)
            else:
                out.retried[(not_before, message or "retryable error")].append(entry)
    return judged


def _retry_first(group: Sequence[Claimed], result: BatchResult) -> bool:
    """An unexpected answer to a batch not yet retried that often: retry it whole."""
    unexpected = result.status_code not in _REFUSALS
    return unexpected and min(entry.attempts for entry in group) < UNEXPECTED_RETRIES


def _answer(status: int | None, *, judged: bool, credentials: bool) -> Answer:
    if credentials:
        return Answer.CREDENTIALS
    if judged and status is not None and status < 500 and status not in (408, 429):
        return Answer.JUDGED
    return Answer.FAILED
