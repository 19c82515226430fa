"""The bodies Pinterest answers with, and its per-event verdicts (pinterest.md §4, §5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..spec import load_request_schema

#: Older events are refused. Not an official figure: third-party docs say seven days.
MAX_EVENT_AGE = 7 * 24 * 3600
#: Events this far ahead of the fake's clock are refused (a millisecond timestamp, say).
MAX_CLOCK_SKEW = 5 * 60

#: ``(code, message)`` of the spec's error examples, by HTTP status.
ERRORS: Mapping[int, tuple[int, str]] = {
    400: (4196, "The request was invalid."),
    401: (2, "Authentication failed."),
    403: (29, "You are not permitted to access that resource."),
    429: (
        8,
        "This request exceeded a rate limit. This can happen if the client exceeds one\n"
        "of the published rate limits within a short time window.",
    ),
    503: (4197, "The endpoint has been ramped down and is currently not accepting any traffic."),
}
#: The 422 of a partly invalid batch, as observed from the real API.
PARTIAL_FAILURE = (
    953,
    "The action could not be processed properly due to some or all data provided being invalid.",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of one event of a batch."""

    processed: bool
    error_message: str | None = None
    warning_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "processed" if self.processed else "failed",
            "error_message": self.error_message,
            "warning_message": self.warning_message,
        }


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The ``Error`` body for ``status``; statuses without a spec example get a generic one."""
    code, default = ERRORS.get(status, (status, "Unexpected errors"))
    return {"code": code, "message": message or default}


def batch_body(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The ``ConversionApiResponse`` (the 200 body, and a 422's ``details``)."""
    return {
        "num_events_received": len(verdicts),
        "num_events_processed": sum(v.processed for v in verdicts),
        "events": [v.to_json() for v in verdicts],
    }


def partial_failure_body(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The 422 ``DetailedError`` with the per-event verdicts under ``details``."""
    code, message = PARTIAL_FAILURE
    return {"code": code, "message": message, "details": batch_body(verdicts)}


def judge(event: Mapping[str, Any], now: float) -> Verdict:
    """Pinterest's verdict on one schema-valid event received at ``now``."""
    event_time = int(event["event_time"])
    current = int(now)
    if event_time < current - MAX_EVENT_AGE or event_time > current + MAX_CLOCK_SKEW:
        side = "past" if event_time < current else "future"
        return Verdict(
            False,
            f"Invalid event_timestamp parameter. Given timestamp is in the {side}. "
            f"Current timestamp: {current}, Given event_timestamp: {event_time}",
        )
    unknown = sorted(set(event["user_data"]) - _user_data_fields())
    if unknown:
        # The schema lets user_data carry any key; Pinterest warns about non-standard fields.
        return Verdict(True, warning_message="Unknown user_data fields: " + ", ".join(unknown))
    return Verdict(True)


@cache
def _user_data_fields() -> frozenset[str]:
    properties = load_request_schema()["$defs"]["ConversionEventsUserDataProperties"]
    return frozenset(properties["properties"])
