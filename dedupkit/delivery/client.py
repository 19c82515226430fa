"""The Conversions API client: one pooled httpx client, one outcome per event.

:meth:`CapiClient.send` never raises for what Pinterest or the network does; it classifies
the answer and leaves the decision of what to do about it to the sender:

==============================================  =============================================
answer                                          outcome of each event
==============================================  =============================================
200 (or 422 with ``details``), per event        ``DELIVERED`` or ``PERMANENT`` (its message)
400, 413, 422 without verdicts                  ``SPLIT`` (``PERMANENT`` for one event alone)
200 whose body is not Pinterest's JSON          ``SPLIT`` (``RETRYABLE`` for one event alone)
any other status (a proxy's, say)               ``SPLIT`` (``RETRYABLE`` for one event alone)
401, 403, 404 (unknown ad account)              ``CREDENTIALS``
408, 429, 5xx, timeout, network error           ``RETRYABLE`` (with ``Retry-After``)
an answer that cannot be read (corrupt gzip)    ``RETRYABLE``
==============================================  =============================================

Each request has one deadline for all of it, connecting, writing and reading (``timeout``):
an answer that trickles in slowly is a timeout, so that a slow proxy never keeps a request
open past the outbox lease.

The token never leaves this module: every message built from a response (an upstream error
page may echo the ``Authorization`` header) is redacted and truncated before it is returned.
"""

from __future__ import annotations

import enum
import hashlib
import html
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ..event.limits import MAX_BATCH_SIZE as MAX_BATCH_SIZE
from ..event.wire import encode_batch as encode_batch
from ..redaction import MAX_MESSAGE as MAX_MESSAGE
from ..redaction import REDACTED as REDACTED
from ..redaction import redact as redact
from ..settings import DEFAULT_API_BASE_URL as DEFAULT_API_BASE_URL

logger = logging.getLogger("dedupkit.client")

#: The largest request body sent. Pinterest publishes no figure (UNCONFIRMED); 2 MiB is the
#: smallest limit other conversion APIs document, and 1000 ordinary events weigh about 600 KB.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Total time for one request, connecting, writing and reading; kept well below the outbox
#: lease so a live sender never loses its claim while it waits.
DEFAULT_TIMEOUT = 10.0
#: The longest a request may take to connect, within the total deadline.
CONNECT_TIMEOUT = 5.0
#: Requests left behind at their deadline that may still be finishing their last read; one
#: more waits its turn and, at its own deadline, times out without having been sent.
MAX_REQUESTS_IN_FLIGHT = 4

# Statuses that judge the request as a whole: a smaller batch may pass.
_WHOLE_BATCH_REFUSALS = frozenset({400, 413, 422})
# Statuses that say the token or the ad account is wrong: no event is at fault.
_CREDENTIALS = frozenset({401, 403, 404})
# How much of a body is read to build a message: bounded work for a huge error page.
_BODY_PREFIX = 4000
_TAGS = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>|<[^>]*>")
_SPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"[0-9]{1,12}")
_LEADING_INT = re.compile(r"\s*([0-9]{1,12})")
# Headers about the body as it travelled, wrong for the decoded body kept.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
# An x-ratelimit-reset above this is a Unix time rather than seconds from now.
_EPOCH_THRESHOLD = 1e9


class Outcome(enum.Enum):
    """What became of one event sent to Pinterest."""

    #: Pinterest processed it.
    DELIVERED = "delivered"
    #: Not processed, worth sending again later: timeout, connection error, 408, 429, 5xx.
    RETRYABLE = "retryable"
    #: Pinterest refused it for good: ``status: failed`` for this event, or a refused
    #: request that held only this event.
    PERMANENT = "permanent"
    #: The request of several events was refused as a whole (400, 413) or answered with
    #: something that is not Pinterest's JSON: send the events in smaller batches.
    SPLIT = "split"
    #: The token or the ad account is wrong (401, 403, 404): no event is at fault; keep them
    #: and pause until the credentials work.
    CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True)
class EventResult:
    """The outcome of one event of a batch, with Pinterest's message when it gave one."""

    outcome: Outcome
    message: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Pinterest's ``x-ratelimit-*`` headers; a missing or unreadable one is ``None``."""

    #: ``x-ratelimit-limit``: requests allowed in the window (its first number).
    limit: int | None
    #: ``x-ratelimit-remaining``: requests left in the window.
    remaining: int | None
    #: ``x-ratelimit-reset``: seconds until the window resets.
    reset: float | None

    @property
    def exhausted(self) -> bool:
        """No request is left before the reset."""
        return self.remaining == 0 and self.reset is not None and self.reset > 0


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one request: a result per event, in the order they were sent."""

    results: tuple[EventResult, ...]
    #: The HTTP status, or ``None`` when no response came back.
    status_code: int | None
    #: Seconds Pinterest asked us to wait (``Retry-After``), if it did; uncapped.
    retry_after: float | None = None
    #: The ``x-ratelimit-*`` headers, ``None`` when the answer had none.
    rate_limit: RateLimit | None = None

    @property
    def delivered(self) -> int:
        return sum(r.outcome is Outcome.DELIVERED for r in self.results)

    @property
    def whole(self) -> Outcome | None:
        """The outcome every event shares (e.g. ``SPLIT``), ``None`` when they differ."""
        outcomes = {r.outcome for r in self.results}
        return outcomes.pop() if len(outcomes) == 1 else None

    @property
    def message(self) -> str | None:
        """The first message of the batch, e.g. why the whole request failed."""
        return next((r.message for r in self.results if r.message), None)


def token_fingerprint(token: str) -> str:
    """A short id of ``token`` that is safe to store and show: 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class CapiClient:
    """Sends batches of events to ``POST /ad_accounts/{id}/events``.

    :param ad_account_id: the numeric ad account id.
    :param token: the conversion access token; kept out of ``repr``, logs, errors and every
        message returned.
    :param base_url: the API root (a :class:`~dedupkit.testing.FakePinterest` URL in tests).
    :param test_mode: send ``?test=true``: Pinterest validates but records nothing.
    :param timeout: seconds for the whole of one request (connect, write, read); the
        request is given up, as timed out, when they are spent.
    :param transport: an httpx transport, for tests and custom networking.
    :raises ValueError: for a timeout that is not a positive number.
    """

    def __init__(
        self,
        *,
        ad_account_id: str,
        token: str,
        base_url: str = DEFAULT_API_BASE_URL,
        test_mode: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        #: Seconds one request may take in all.
        self.timeout = float(timeout)
        self.ad_account_id = str(ad_account_id)
        self.test_mode = test_mode
        self.url = f"{base_url.rstrip('/')}/ad_accounts/{self.ad_account_id}/events"
        #: :func:`token_fingerprint` of the token, stored with a credentials pause.
        self.token_id = token_fingerprint(token)
        self._secrets = (token,)
        # Every step is bounded by the whole deadline too; _exchange checks what is left.
        step = httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout))
        self._executor: tuple[int, ThreadPoolExecutor] | None = None
        self._executor_lock = threading.Lock()
        self._http = httpx.Client(
            timeout=step,
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
        executor, self._executor = self._executor, None
        if executor is not None and executor[0] == os.getpid():
            executor[1].shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> CapiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, events: Sequence[Mapping[str, Any] | str]) -> BatchResult:
        """Send one batch and classify each event's outcome (see the module's table).

        :param events: 1 to 1000 CAPI event dicts (:meth:`dedupkit.Event.to_capi`), or their
            JSON text (``Claimed.raw``), which is sent as it is.
        :raises ValueError: for an empty or oversized batch (a programming error).
        """
        if not 1 <= len(events) <= MAX_BATCH_SIZE:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_SIZE} events, got {len(events)}")
        body = encode_batch(events)
        params = {"test": "true"} if self.test_mode else None
        deadline = time.monotonic() + self.timeout
        gave_up = threading.Event()
        future: Future[httpx.Response] | None
        try:
            future = self._requests().submit(self._exchange, body, params, deadline, gave_up)
        except RuntimeError:
            # At interpreter exit no thread may start: the last batch is sent from here, each
            # step of it still bounded by the deadline.
            future = None
        try:
            if future is None:
                response = self._exchange(body, params, deadline, gave_up)
            else:
                response = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except (FutureTimeout, httpx.TimeoutException):
            gave_up.set()
            if future is not None:
                _discard(future)
            message = f"timed out: no complete answer from Pinterest within {self.timeout:g} s"
            return _all(len(events), Outcome.RETRYABLE, message, None)
        except httpx.DecodingError as exc:
            # A 200 whose gzip is corrupt may have been processed: sending again is safe
            # because Pinterest deduplicates on event_id.
            message = redact(f"an answer that could not be decoded: {exc}", self._secrets)
            return _all(len(events), Outcome.RETRYABLE, message, None)
        except httpx.HTTPError as exc:
            message = redact(f"network error: {exc}", self._secrets)
            return _all(len(events), Outcome.RETRYABLE, message, None)
        return classify_response(
            response, len(events), secrets=self._secrets, ad_account_id=self.ad_account_id
        )

    def _requests(self) -> ThreadPoolExecutor:
        """This process's request threads (a forked child builds its own)."""
        with self._executor_lock:
            if self._executor is None or self._executor[0] != os.getpid():
                executor = ThreadPoolExecutor(MAX_REQUESTS_IN_FLIGHT, "dedupkit-capi")
                self._executor = (os.getpid(), executor)
            return self._executor[1]

    def _exchange(
        self,
        body: bytes,
        params: dict[str, str] | None,
        deadline: float,
        gave_up: threading.Event,
    ) -> httpx.Response:
        """POST ``body`` and read the whole answer, or raise once ``deadline`` has passed.

        Runs in a request thread, so that :meth:`send` returns at the deadline whatever the
        network does; this thread stops at its next chunk after it.
        """
        request = self._http.build_request("POST", self.url, content=body, params=params)
        response = self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if gave_up.is_set() or time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer took longer than the deadline")
        finally:
            response.close()
        # The body was decoded as it came: keep the decoded bytes without decoding again.
        return httpx.Response(
            response.status_code,
            headers=[(k, v) for k, v in response.headers.items() if k not in _BODY_HEADERS],
            content=b"".join(chunks),
            request=request,
        )


def _discard(future: Future[httpx.Response]) -> None:
    """Cancel ``future``, or drop its late outcome once it comes (nobody waits for it)."""
    if not future.cancel():
        future.add_done_callback(lambda done: done.exception())


def classify_response(
    response: httpx.Response,
    count: int,
    *,
    secrets: Iterable[str] = (),
    ad_account_id: str = "",
    now: float | None = None,
) -> BatchResult:
    """Turn Pinterest's answer to a batch of ``count`` events into one result per event.

    :param secrets: strings no message may contain (the token).
    :param ad_account_id: named in the advice of a 403 or 404.
    :param now: the current time, to read an HTTP-date ``Retry-After``.
    """
    secrets = tuple(secrets)
    status = response.status_code
    body = _json_or_none(response)
    retry_after = parse_retry_after(response, now=now)
    rate_limit = parse_rate_limit(response, now=now)

    def every(outcome: Outcome, message: str) -> BatchResult:
        return _all(count, outcome, message, status, retry_after, rate_limit)

    if status == 200 and isinstance(body, dict):
        return BatchResult(_per_event(body, count, secrets), status, retry_after, rate_limit)
    if status == 422 and isinstance(body, dict) and isinstance(body.get("details"), dict):
        # Pinterest puts the per-event verdicts of a partly invalid batch under "details".
        results = _per_event(body["details"], count, secrets)
        return BatchResult(results, status, retry_after, rate_limit)
    message = _error_message(status, body, response, secrets)
    if status in _CREDENTIALS:
        return every(Outcome.CREDENTIALS, f"{_advice(status, ad_account_id)} ({message})")
    if status == 408 or status == 429 or status >= 500:
        return every(Outcome.RETRYABLE, message)
    if status in _WHOLE_BATCH_REFUSALS:
        return every(Outcome.SPLIT if count > 1 else Outcome.PERMANENT, message)
    # A proxy's page, a body cut short, a status Pinterest does not send: no verdict, and
    # maybe one event's fault. Halved until each event is alone, then retried, never dead.
    return every(Outcome.SPLIT if count > 1 else Outcome.RETRYABLE, message)


def parse_retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns the value as given, however large; ``None`` when absent or unreadable.
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if _DIGITS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def parse_rate_limit(response: httpx.Response, *, now: float | None = None) -> RateLimit | None:
    """Pinterest's ``x-ratelimit-limit``, ``-remaining`` and ``-reset`` headers.

    A value may be a list (``"100, 100;w=1"``): its first number counts. A reset larger than
    about 30 years of seconds is taken as a Unix time and turned into seconds from ``now``.
    """
    headers = response.headers
    names = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
    if not any(name in headers for name in names):
        return None
    limit, remaining, reset = (_leading_int(headers.get(name, "")) for name in names)
    reset_seconds: float | None = None
    if reset is not None:
        reset_seconds = float(reset)
        if reset_seconds > _EPOCH_THRESHOLD:
            reset_seconds = max(0.0, reset_seconds - (time.time() if now is None else now))
    return RateLimit(limit, remaining, reset_seconds)


def _per_event(
    body: Mapping[str, Any], count: int, secrets: tuple[str, ...]
) -> tuple[EventResult, ...]:
    events = body.get("events")
    if not isinstance(events, list) or len(events) != count:
        # Without a verdict per event we cannot tell which ones were processed; sending the
        # whole batch again is safe because Pinterest deduplicates on event_id.
        return _all(count, Outcome.RETRYABLE, "response without a status per event", None).results
    results = []
    for item in events:
        item = item if isinstance(item, dict) else {}
        if item.get("status") == "processed":
            warning = item.get("warning_message")
            note = redact(str(warning), secrets) if warning else None
            results.append(EventResult(Outcome.DELIVERED, note or None))
        else:
            message = item.get("error_message") or "Pinterest reported the event as failed"
            results.append(EventResult(Outcome.PERMANENT, redact(str(message), secrets)))
    return tuple(results)


def _advice(status: int, ad_account_id: str) -> str:
    account = f"ad account {ad_account_id}" if ad_account_id else "the ad account"
    if status == 401:
        return "Pinterest refused the conversion token: check DEDUPKIT_CONVERSION_TOKEN"
    if status == 403:
        return (
            f"the conversion token may not send events for {account}: check "
            "DEDUPKIT_CONVERSION_TOKEN and DEDUPKIT_AD_ACCOUNT_ID"
        )
    return f"Pinterest does not know {account}: check DEDUPKIT_AD_ACCOUNT_ID"


def _error_message(
    status: int, body: object, response: httpx.Response, secrets: tuple[str, ...]
) -> str:
    if isinstance(body, dict) and "message" in body:
        code = body.get("code")
        return redact(f"HTTP {status} (code {code}): {body['message']}", secrets)
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "no content type"
    # Entities decoded first, so that none hides a token; then an HTML page's words only.
    text = html.unescape(_text_prefix(response))
    text = _TAGS.sub(" ", text) if "<" in text else text
    what = "not Pinterest's JSON" if status == 200 else "not from Pinterest"
    summary = _SPACE.sub(" ", text).strip()
    tail = f": {summary}" if summary else ""
    return redact(f"HTTP {status}, {what} ({kind}){tail}", secrets)


def _text_prefix(response: httpx.Response) -> str:
    # Bounded work however large the page; a bad charset name falls back to UTF-8.
    prefix = response.content[:_BODY_PREFIX]
    try:
        return prefix.decode(response.encoding or "utf-8", "replace")
    except LookupError:
        return prefix.decode("utf-8", "replace")


def _leading_int(value: str) -> int | None:
    match = _LEADING_INT.match(value)
    return int(match.group(1)) if match else None


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _all(
    count: int,
    outcome: Outcome,
    message: str,
    status: int | None,
    retry_after: float | None = None,
    rate_limit: RateLimit | None = None,
) -> BatchResult:
    return BatchResult((EventResult(outcome, message),) * count, status, retry_after, rate_limit)
