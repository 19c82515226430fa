"""The Conversions API client: one pooled httpx client, one outcome per event.

:meth:`CapiClient.send` never raises for what Pinterest or the network does; it classifies
every event of the batch as delivered, retryable or permanent, keeping Pinterest's message,
and leaves the decision of what to do about it to the sender.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

logger = logging.getLogger("dedupkit.client")

#: Pinterest's production API root.
DEFAULT_API_BASE_URL = "https://api.pinterest.com/v5"
#: ``ConversionEvents.data`` holds at most this many events.
MAX_BATCH_SIZE = 1000
#: Total time for one request; kept well below the outbox lease so a live sender never
#: loses its claim while it waits.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class Outcome(enum.Enum):
    """What became of one event sent to Pinterest."""

    #: Pinterest processed it.
    DELIVERED = "delivered"
    #: Not processed, worth sending again later: timeout, connection error, 429, 5xx.
    RETRYABLE = "retryable"
    #: Pinterest refused it for good: another 4xx, or ``status: failed`` for this event.
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class EventResult:
    """The outcome of one event of a batch, with Pinterest's message when it gave one."""

    outcome: Outcome
    message: str | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one request: a result per event, in the order they were sent."""

    results: tuple[EventResult, ...]
    #: The HTTP status, or ``None`` when no response came back.
    status_code: int | None
    #: Seconds Pinterest asked us to wait (``Retry-After``), if it did.
    retry_after: float | None = None

    @property
    def delivered(self) -> int:
        return sum(r.outcome is Outcome.DELIVERED for r in self.results)


class CapiClient:
    """Sends batches of events to ``POST /ad_accounts/{id}/events``.

    :param ad_account_id: the numeric ad account id.
    :param token: the conversion access token; kept out of ``repr``, logs and errors.
    :param base_url: the API root (a :class:`~dedupkit.testing.FakePinterest` URL in tests).
    :param test_mode: send ``?test=true``: Pinterest validates but records nothing.
    :param timeout: the httpx timeout of one request.
    :param transport: an httpx transport, for tests and custom networking.
    """

    def __init__(
        self,
        *,
        ad_account_id: str,
        token: str,
        base_url: str = DEFAULT_API_BASE_URL,
        test_mode: bool = False,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.ad_account_id = str(ad_account_id)
        self.test_mode = test_mode
        self.url = f"{base_url.rstrip('/')}/ad_accounts/{self.ad_account_id}/events"
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": "dedupkit",
            },
        )

    def __repr__(self) -> str:
        mode = " test" if self.test_mode else ""
        return f"<CapiClient ad_account={self.ad_account_id}{mode} token=***>"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CapiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        """Send one batch and classify each event's outcome.

        :param events: 1 to 1000 CAPI event dicts (:meth:`dedupkit.Event.to_capi`), or their
            JSON text (``Claimed.raw``), which is sent as it is.
        :raises ValueError: for an empty or oversized batch (a programming error).
        """
        if not 1 <= len(events) <= MAX_BATCH_SIZE:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_SIZE} events, got {len(events)}")
        body = encode_batch(events)
        params = {"test": "true"} if self.test_mode else None
        try:
            response = self._http.post(self.url, content=body, params=params)
        except httpx.TimeoutException:
            return _all(len(events), Outcome.RETRYABLE, "timed out waiting for Pinterest", None)
        except httpx.TransportError as exc:
            # str(exc) carries no headers, so the token cannot leak through it.
            return _all(len(events), Outcome.RETRYABLE, f"network error: {exc}", None)
        return classify_response(response, len(events))


# json.dumps builds an encoder on every call with arguments; one batch has many events.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_batch(events: Sequence[Mapping[str, Any] | str]) -> bytes:
    """The request body: compact JSON, UTF-8, non-ASCII kept as is.

    An event given as text must be one JSON object; it is inserted without being checked.
    """
    if not any(isinstance(event, str) for event in events):
        return _ENCODER.encode({"data": list(events)}).encode()
    parts = [event if isinstance(event, str) else _ENCODER.encode(event) for event in events]
    return ('{"data":[' + ",".join(parts) + "]}").encode()


def classify_response(response: httpx.Response, count: int) -> BatchResult:
    """Turn Pinterest's answer into one :class:`EventResult` per event sent."""
    status = response.status_code
    body = _json_or_none(response)
    if status == 200 and isinstance(body, dict):
        return BatchResult(_per_event(body, count), status)
    if status == 422 and isinstance(body, dict) and isinstance(body.get("details"), dict):
        # Pinterest puts the per-event verdicts of a partly invalid batch under "details".
        return BatchResult(_per_event(body["details"], count), status)
    message = _error_message(status, body, response)
    if status == 429 or status >= 500 or status == 408:
        return _all(count, Outcome.RETRYABLE, message, status, parse_retry_after(response))
    return _all(count, Outcome.PERMANENT, message, status)


def parse_retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _per_event(body: Mapping[str, Any], count: int) -> tuple[EventResult, ...]:
    events = body.get("events")
    if not isinstance(events, list) or len(events) != count:
        # Without a verdict per event we cannot tell which ones were processed; sending the
        # whole batch again is safe because Pinterest deduplicates on event_id.
        return _all(count, Outcome.RETRYABLE, "response without a status per event", None).results
    results = []
    for item in events:
        item = item if isinstance(item, dict) else {}
        if item.get("status") == "processed":
            results.append(EventResult(Outcome.DELIVERED, item.get("warning_message") or None))
        else:
            message = item.get("error_message") or "Pinterest reported the event as failed"
            results.append(EventResult(Outcome.PERMANENT, str(message)))
    return tuple(results)


def _error_message(status: int, body: object, response: httpx.Response) -> str:
    if isinstance(body, dict) and "message" in body:
        code = body.get("code")
        return f"HTTP {status} (code {code}): {body['message']}"
    text = response.text[:200].strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _all(
    count: int,
    outcome: Outcome,
    message: str,
    status: int | None,
    retry_after: float | None = None,
) -> BatchResult:
    return BatchResult((EventResult(outcome, message),) * count, status, retry_after)
