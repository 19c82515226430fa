"""One verdict per event, in the words a merchant reads: did Pinterest count it once?

- *paired*: the API delivered it and the browser said the tag call was made, with the same
  name and id: Pinterest keeps one;
- *server only*: delivered, the tag blocked, absent, or not known to have fired: counted
  once, by the API;
- *tag only*: the server deliberately skipped it (consent, bot, no identity): only the tag
  may count it;
- *pending*: not delivered yet, with the time left before the one-hour dedup deadline;
- *failed*: a dead letter, with Pinterest's message and what to do;
- *test*: delivered with ``?test=true``: Pinterest validated it and recorded nothing.

Test mode is known per entry: the sender stores its client's mode with each ack
(``ack(ids, test=…)``). Entries acked without it (older versions) take the current
``DEDUPKIT_TEST_MODE``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ..outbox.base import LedgerEntry, Skip
from ..vocabulary import EventState, SkipReason

#: Pinterest deduplicates a tag event and an API event with the same name and id when they
#: arrive within this many seconds of each other.
DEDUP_WINDOW = 3600.0


class Verdict(enum.Enum):
    PAIRED = "paired"
    SERVER_ONLY = "server only"
    TAG_ONLY = "tag only"
    PENDING = "pending"
    FAILED = "failed"
    TEST = "test"


#: What each verdict means, for the page's legend and the documentation.
MEANINGS = {
    Verdict.PAIRED: "tag and API sent it with the same name and id: Pinterest counts one",
    Verdict.SERVER_ONLY: "the tag was blocked or did not fire: counted once, by the API",
    Verdict.TAG_ONLY: "the server skipped it on purpose: only the tag may count it",
    Verdict.PENDING: "waiting to be sent, before the one-hour dedup deadline",
    Verdict.FAILED: "Pinterest refused it, or it was not delivered in time",
    Verdict.TEST: "sent with ?test=true: Pinterest checked it and recorded nothing",
}

#: What each state means, beside its count (its name is the vocabulary's label).
STATE_MEANINGS = {
    EventState.PENDING: "waiting for the sender",
    EventState.SENDING: "being sent right now",
    EventState.DELIVERED: "Pinterest accepted it",
    EventState.DEAD: "Pinterest refused it or it ran out of time: see what to do",
}

# What to do about a dead letter, by the words of its message (first match wins).
_ADVICE = (
    (
        re.compile(r"conversion token|unauthori[sz]ed|\b401\b|access token|authenticat", re.I),
        "token expired or revoked — renew it in Ads Manager and set DEDUPKIT_CONVERSION_TOKEN",
    ),
    (
        re.compile(r"ad account|DEDUPKIT_AD_ACCOUNT_ID|\b40[34]\b", re.I),
        "check DEDUPKIT_AD_ACCOUNT_ID and that the token may use that ad account",
    ),
    (
        re.compile(r"^expired$"),
        "not delivered within the retry window; if the tag never fired, "
        "`flask dedupkit dead --replay --as-offline` sends it",
    ),
    (
        re.compile(r"event_time|timestamp", re.I),
        "the event time was refused: check the server clock and the time passed to track()",
    ),
    (
        re.compile(r"larger than a request", re.I),
        "the event is too large: send less custom data",
    ),
    (
        re.compile(r"user_data|\bem\b|\bph\b|hash", re.I),
        "an identity field was refused: check what is passed as user data",
    ),
)
_DEFAULT_ADVICE = "fix the cause, then `flask dedupkit dead --replay` sends it again"


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    #: A short plain sentence: the reason, the time left, the tag evidence.
    detail: str
    #: What to do, for a failed event.
    advice: str | None = None
    #: Seconds before the dedup deadline, for a pending event (negative once passed).
    time_left: float | None = None


def judge(entry: LedgerEntry, *, now: float, test_mode: bool = False) -> Judgement:
    """The verdict on one outbox entry; ``test_mode`` stands in for an unrecorded test flag."""
    if entry.state in (EventState.PENDING, EventState.SENDING):
        born = entry.event_time if entry.event_time is not None else entry.created_at
        left = DEDUP_WINDOW - (now - (born if born is not None else entry.updated_at))
        detail = (
            f"{_duration(left)} left before the dedup deadline"
            if left > 0
            else "past the one-hour dedup deadline: Pinterest may count the tag's too"
        )
        return Judgement(Verdict.PENDING, detail, time_left=left)
    if entry.state is EventState.DEAD:
        message = entry.last_error or "refused"
        return Judgement(Verdict.FAILED, message, advice=advice_for(message))
    tested = entry.test if entry.test is not None else test_mode
    if tested:
        return Judgement(Verdict.TEST, "sent with ?test=true: not recorded by Pinterest")
    if entry.tag:
        return Judgement(Verdict.PAIRED, "tag fired and API delivered: Pinterest counts one")
    if entry.tag is False:
        return Judgement(Verdict.SERVER_ONLY, "tag blocked or absent: counted by the API")
    return Judgement(Verdict.SERVER_ONLY, "no tag evidence: counted by the API")


def judge_skip(skip: Skip) -> Judgement:
    """The verdict on an event the server skipped: *tag only*, with the reason."""
    reason = SkipReason.label_of(skip.reason)
    return Judgement(Verdict.TAG_ONLY, f"not sent by the server: {reason}")


def advice_for(message: str) -> str:
    """What a merchant should do about a dead letter with this message."""
    for pattern, advice in _ADVICE:
        if pattern.search(message):
            return advice
    return _DEFAULT_ADVICE


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes else f"{int(seconds)} s"
