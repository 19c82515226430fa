"""``FakePinterest``: the Conversions API and the Pinterest tag, offline, on a real socket."""

from __future__ import annotations

import copy
import hmac
import html
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..delivery.client import MAX_BODY_BYTES
from .answers import (
    Verdict,
    batch_body,
    error_body,
    judge,
    partial_failure_body,
)
from .faults import DEFAULT_EVENT_FAILURE, EventSelector, Faults, ProxyPage
from .records import (
    CAPI,
    TAG,
    Conversion,
    PageCall,
    RejectedRequest,
    RequestRecord,
    TagEvent,
    merge_conversions,
)
from .schema import request_errors, response_errors
from .server import PIXEL_PATH, Answer, CapiRequest, ServerThread, create_app

_AD_ACCOUNT_ID = re.compile(r"[0-9]{1,18}")
# How often wait_for re-checks a predicate that depends on more than the fake's records.
_RECHECK_INTERVAL = 0.05
# A 400 message describes at most this many schema violations.
_MAX_PROBLEMS = 5
# /_fake/state keeps to the most recent entries.
_STATE_CONVERSIONS = 50
_STATE_REQUESTS = 20
#: Pinterest's published limit for this endpoint: 5,000 calls per minute per ad account.
DEFAULT_RATE_LIMIT = 5000
DEFAULT_RATE_WINDOW = 60.0
# The pixel's event data parameters: ``ed[value]=10``.
_EVENT_DATA = re.compile(r"ed\[([^\]]+)\]")


class FakePinterest:
    """A stand-in for Pinterest: ``POST /v5/ad_accounts/<id>/events``, a stand-in tag at
    ``/ct/core.js`` that reports every ``pintrk`` call, and records of all of it.

    ::

        with FakePinterest() as fake:
            app.config["DEDUPKIT_API_BASE_URL"] = fake.api_base_url
            app.config["DEDUPKIT_PINTRK_SRC"] = fake.pintrk_src
            ...
            assert fake.wait_for_capi_events(1)

    Requests are checked like Pinterest does (body size, bearer token, ad account, the
    official request schema, event times) and every answer follows the official response
    schema and carries ``x-ratelimit-*`` headers. Records are thread-safe and every accessor
    returns a copy.

    :param token: the conversion token requests must carry (see :meth:`set_token`).
    :param ad_account_id: the ad account the fake's addresses print, e.g. for the demo.
    :param ad_account_ids: the ad accounts that exist; others are answered 404. By default
        every well-formed id exists.
    :param max_body_bytes: larger request bodies are answered 413.
    :param rate_limit: requests allowed per ``rate_window`` seconds; more are answered 429.
    :param rate_window: the length of a rate-limit window, starting at its first request.
    :param host: the address to listen on; keep the loopback default in tests.
    :param port: 0 picks a free port.
    :param log_requests: log each request through werkzeug (for the standalone fake).
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        ad_account_id: str = "549764982399",
        ad_account_ids: Iterable[str] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        rate_limit: int = DEFAULT_RATE_LIMIT,
        rate_window: float = DEFAULT_RATE_WINDOW,
        host: str = "127.0.0.1",
        port: int = 0,
        log_requests: bool = False,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        accounts = None if ad_account_ids is None else frozenset(ad_account_ids)
        for account in [ad_account_id, *(accounts or ())]:
            if not _AD_ACCOUNT_ID.fullmatch(account):
                raise ValueError(f"an ad account id is 1 to 18 digits, got {account!r}")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self._token = token
        self._ad_account_id = ad_account_id
        self._ad_account_ids = accounts
        self._max_body_bytes = max_body_bytes
        self._rate_lock = threading.Lock()
        self._rate_limit = 0
        self._rate_window = 0.0
        self._window_end = 0.0
        self._window_used = 0
        self.set_rate_limit(rate_limit, rate_window)
        self._host = host
        self._port = port
        self._log_requests = log_requests
        self._server: ServerThread | None = None
        # Set while stopping, so a delayed answer returns at once instead of holding stop().
        self._stopping = threading.Event()
        self._faults = Faults()
        self._changed = threading.Condition(threading.RLock())
        # Processed CAPI event dicts and TagEvents, in arrival order: conversions() needs both
        # in one sequence, capi_events and tag_events are views of it.
        self._arrivals: list[TagEvent | dict[str, Any]] = []
        self._test_events: list[dict[str, Any]] = []
        self._page_calls: list[PageCall] = []
        self._requests: list[RequestRecord] = []
        self._rejected: list[RejectedRequest] = []
        self._tag_blocker: Callable[[str], str | None] | None = None
        #: Tags refused to visitors, by what blocked them.
        self._tag_blocked: Counter[str] = Counter()
        self._app = create_app(
            answer_events=self._answer_events,
            record_tag_report=self._record_tag_report,
            record_pixel=self._record_pixel,
            state=self.state,
            pause=self._stopping.wait,
            tag_blocked_for=self._tag_blocked_for,
        )

    def __repr__(self) -> str:
        where = self.base_url if self._server else "stopped"
        return f"<FakePinterest {where} ad_account={self._ad_account_id}>"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakePinterest:
        """Start serving (on a new free port each time when ``port`` is 0)."""
        if self._server is None:
            self._stopping.clear()
            server = ServerThread(
                self._app, self._host, self._port, log_requests=self._log_requests
            )
            server.start()
            self._server = server
        return self

    def stop(self) -> None:
        """Stop serving; pending delayed answers are released at once. Records are kept."""
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            server.stop()

    def __enter__(self) -> FakePinterest:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- addresses and credentials --------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running fake."""
        if self._server is None:
            raise RuntimeError("FakePinterest is not running: use it in a with block or start()")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._server.port}"

    @property
    def api_base_url(self) -> str:
        """The ``DEDUPKIT_API_BASE_URL`` pointing at this fake."""
        return self.base_url + "/v5"

    @property
    def pintrk_src(self) -> str:
        """The ``DEDUPKIT_PINTRK_SRC`` of the stand-in tag."""
        return self.base_url + "/ct/core.js"

    @property
    def pixel_url(self) -> str:
        """Where ``<noscript>`` pixels go (``https://ct.pinterest.com/v3/`` at Pinterest)."""
        return self.base_url + PIXEL_PATH

    @property
    def token(self) -> str:
        """The token requests must carry; assign a new one to rotate it."""
        return self._token

    @token.setter
    def token(self, token: str) -> None:
        self.set_token(token)

    def set_token(self, token: str) -> None:
        """Rotate the token: from now on only ``token`` is accepted (401 for the old one)."""
        if not token:
            raise ValueError("token must not be empty")
        self._token = token

    def set_rate_limit(self, limit: int, window: float = DEFAULT_RATE_WINDOW) -> None:
        """Allow ``limit`` requests per ``window`` seconds from now on; a new window starts
        with the next request."""
        if limit < 1 or not window > 0:
            raise ValueError("set_rate_limit needs limit >= 1 and window > 0")
        with self._rate_lock:
            self._rate_limit, self._rate_window = int(limit), float(window)
            self._window_end, self._window_used = 0.0, 0

    @property
    def ad_account_id(self) -> str:
        return self._ad_account_id

    # -- records --------------------------------------------------------------------------

    @property
    def capi_events(self) -> list[dict[str, Any]]:
        """Every processed CAPI event, duplicates included, in arrival order."""
        with self._changed:
            return [copy.deepcopy(a) for a in self._arrivals if isinstance(a, dict)]

    @property
    def test_events(self) -> list[dict[str, Any]]:
        """Processed events of ``?test=true`` requests (not counted anywhere else)."""
        with self._changed:
            return copy.deepcopy(self._test_events)

    @property
    def tag_events(self) -> list[TagEvent]:
        """Every ``pintrk('track', …)`` call the stand-in tag reported."""
        with self._changed:
            return [copy.deepcopy(a) for a in self._arrivals if isinstance(a, TagEvent)]

    @property
    def page_calls(self) -> list[PageCall]:
        """Every ``pintrk('page', …)`` call the stand-in tag reported."""
        with self._changed:
            return copy.deepcopy(self._page_calls)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every Conversions API request, test ones included, with the status it got."""
        with self._changed:
            return list(self._requests)

    @property
    def rejected(self) -> list[RejectedRequest]:
        """Requests refused for a bad token, ad account or body (not injected faults)."""
        with self._changed:
            return copy.deepcopy(self._rejected)

    def conversions(self) -> list[Conversion]:
        """What Pinterest would count: tag and CAPI events merged by (CAPI name, event_id)."""
        with self._changed:
            return merge_conversions(copy.deepcopy(self._arrivals))

    def reset(self) -> None:
        """Forget all records and pending faults."""
        self._faults.clear()
        with self._changed:
            for records in (
                self._arrivals,
                self._test_events,
                self._page_calls,
                self._requests,
                self._rejected,
            ):
                records.clear()
            self._tag_blocked.clear()
            self._changed.notify_all()

    def state(self) -> dict[str, Any]:
        """The summary served at ``/_fake/state``: counts, recent conversions and requests."""
        conversions = self.conversions()
        with self._changed:
            counts = {
                "capi_events": sum(isinstance(a, dict) for a in self._arrivals),
                "tag_events": sum(isinstance(a, TagEvent) for a in self._arrivals),
                "page_calls": len(self._page_calls),
                "test_events": len(self._test_events),
                "requests": len(self._requests),
                "rejected": len(self._rejected),
                "tag_blocked": sum(self._tag_blocked.values()),
            }
            requests = self._requests[-_STATE_REQUESTS:]
        counts["conversions"] = len(conversions)
        counts["deduplicated"] = sum(c.sources == {TAG, CAPI} for c in conversions)
        return {
            "counts": counts,
            "conversions": [
                {
                    "event_name": c.event_name,
                    "event_id": c.event_id,
                    "sources": sorted(c.sources),
                    "tag_events": len(c.tag_events),
                    "capi_events": len(c.capi_events),
                }
                for c in conversions[-_STATE_CONVERSIONS:]
            ],
            "requests": [
                {
                    "received_at": r.received_at,
                    "path": r.path,
                    "status": r.status,
                    "num_events": r.num_events,
                    "test": r.test,
                }
                for r in requests
            ],
        }

    # -- waiting --------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true; ``False`` if it is not by ``timeout`` seconds.

        The predicate is checked whenever the fake records something, and every 50 ms in case
        it also looks at state outside the fake.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, _RECHECK_INTERVAL))
        return True

    def wait_for_capi_events(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` CAPI events were processed."""
        return self.wait_for(lambda: self._count(dict) >= count, timeout)

    def wait_for_tag_events(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until the stand-in tag reported at least ``count`` track calls."""
        return self.wait_for(lambda: self._count(TagEvent) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` Conversions API requests were answered."""
        return self.wait_for(lambda: len(self._requests) >= count, timeout)

    def _count(self, kind: type[object]) -> int:
        return sum(isinstance(a, kind) for a in self._arrivals)

    # -- fault injection ------------------------------------------------------------------

    def fail_next(
        self, status: int, times: int = 1, retry_after: float | str | None = None
    ) -> None:
        """Answer the next ``times`` CAPI requests with ``status`` and the spec's error body,
        before any check (test-mode requests included); nothing of them is recorded but the
        request itself.

        :param retry_after: the ``Retry-After`` header: seconds, or an HTTP date string.
        """
        self._faults.fail_next(status, times, retry_after)

    def fail_events(
        self,
        events: EventSelector,
        message: str = DEFAULT_EVENT_FAILURE,
        *,
        as_422: bool = False,
    ) -> None:
        """From now on (until :meth:`reset`), fail the matching events with ``message``.

        :param events: an event id, several ids, or a predicate on the event dict.
        :param as_422: answer such a batch with a 422 ``DetailedError`` (per-event verdicts
            under ``details``) rather than a 200.
        """
        self._faults.fail_events(events, message, as_422)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold back the answer to the next ``times`` CAPI requests by ``seconds``.

        The events are judged and recorded at once; only the answer is late, as when the
        client times out on a request Pinterest did process.
        """
        self._faults.delay_next(seconds, times)

    def poison(self, events: EventSelector, status: int = 400) -> None:
        """From now on (until :meth:`reset`), answer any request holding a matching event with
        ``status`` for the whole request, as Pinterest does for a body it cannot accept.

        :param events: an event id, several ids, or a predicate on the event dict.
        :param status: a 4xx status, 400 or 413 say.
        """
        self._faults.poison(events, status)

    def proxy_page_next(
        self, status: int = 200, times: int = 1, *, echo_headers: bool = False
    ) -> None:
        """Answer the next ``times`` requests with an HTML page and ``status``, as a proxy or
        a gateway in front of Pinterest might; nothing of them is recorded but the request.

        :param echo_headers: put the request's headers in the page, ``Authorization`` too.
        """
        self._faults.proxy_page_next(status, times, echo_headers)

    def block_tag(self, rule: Callable[[str], str | None] | None) -> None:
        """Refuse ``/ct/core.js`` to the visitors ``rule`` names a blocker for, as Firefox's
        strict mode, Safari's tracking protection, Brave or an ad blocker do (see
        :func:`dedupkit.testing.blockers.typical_blockers`); ``None`` blocks no one."""
        with self._changed:
            self._tag_blocker = rule

    @property
    def tag_blocked(self) -> dict[str, int]:
        """How many times the tag was refused to a visitor, by what blocked it."""
        with self._changed:
            return dict(self._tag_blocked)

    def _tag_blocked_for(self, user_agent: str) -> str | None:
        with self._changed:
            rule = self._tag_blocker
        blocker = None if rule is None else rule(user_agent)
        if blocker is not None:
            with self._changed:
                self._tag_blocked[blocker] += 1
        return blocker

    def clear_faults(self) -> None:
        """Drop every pending injected fault."""
        self._faults.clear()

    # -- request handling (called from the server's threads) ------------------------------

    def _answer_events(self, request: CapiRequest) -> Answer:
        received_at = time.time()
        delay = self._faults.take_delay()
        limits, over_limit = self._count_request(received_at)
        body, parse_error = _parse_json(request)
        events = body.get("data") if isinstance(body, dict) else None
        count = len(events) if isinstance(events, list) else 0

        if over_limit:
            headers = {**limits, "Retry-After": limits["x-ratelimit-reset"]}
            answer = Answer(429, error_body(429), headers, delay)
            return self._finish(request, received_at, count, answer)
        page = self._faults.take_proxy_page()
        if page is not None:
            answer = Answer(page.status, {}, limits, delay, text=_proxy_page(page, request))
            return self._finish(request, received_at, count, answer)

        injected = self._faults.take_request_failure()
        if injected is not None:
            headers = dict(limits)
            if injected.retry_after:
                headers["Retry-After"] = injected.retry_after
            if injected.status == 422:
                refused = [Verdict(False, "The event was not processed.")] * count
                answer = Answer(422, partial_failure_body(refused), headers, delay)
            else:
                answer = Answer(injected.status, error_body(injected.status), headers, delay)
            return self._finish(request, received_at, count, answer)

        refusal = self._refusal(request, body, parse_error)
        if refusal is not None:
            status, message = refusal
            answer = Answer(status, error_body(status, message), limits, delay)
            rejected = RejectedRequest(received_at, request.path, status, message, body)
            return self._finish(request, received_at, count, answer, rejected=rejected)

        assert isinstance(events, list)  # the schema guarantees it
        poison = self._faults.poisoned(events)
        if poison is not None:
            answer = Answer(poison.status, error_body(poison.status), limits, delay)
            return self._finish(request, received_at, count, answer)
        verdicts: list[Verdict] = []
        as_422 = False
        for event in events:
            rule = self._faults.event_failure(event)
            if rule is not None:
                verdicts.append(Verdict(False, rule.message))
                as_422 = as_422 or rule.as_422
            else:
                verdicts.append(judge(event, received_at))
        processed = [e for e, v in zip(events, verdicts, strict=True) if v.processed]
        if as_422:
            answer = Answer(422, partial_failure_body(verdicts), limits, delay)
        else:
            answer = Answer(200, batch_body(verdicts), limits, delay)
        return self._finish(request, received_at, count, answer, processed=processed)

    def _count_request(self, now: float) -> tuple[dict[str, str], bool]:
        """Count a request in the rate-limit window: its ``x-ratelimit-*`` headers, and
        whether it is over the limit."""
        with self._rate_lock:
            if now >= self._window_end:
                self._window_end, self._window_used = now + self._rate_window, 0
            self._window_used += 1
            used, limit = self._window_used, self._rate_limit
            reset = max(0, math.ceil(self._window_end - now))
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-reset": str(reset),
        }
        return headers, used > limit

    def _refusal(
        self, request: CapiRequest, body: object, parse_error: str | None
    ) -> tuple[int, str] | None:
        if len(request.body) > self._max_body_bytes:
            return 413, f"The request body is larger than {self._max_body_bytes} bytes."
        scheme, _, credentials = (request.authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), self._token.encode()
        ):
            return 401, "Authentication failed."
        if not _AD_ACCOUNT_ID.fullmatch(request.ad_account_id):
            return 400, "Invalid ad_account_id: it must be 1 to 18 digits."
        if self._ad_account_ids is not None and request.ad_account_id not in self._ad_account_ids:
            return 404, "Ad account not found."
        if parse_error is not None:
            return 400, parse_error
        problems = request_errors(body)
        if len(problems) > _MAX_PROBLEMS:
            more = len(problems) - _MAX_PROBLEMS
            problems = [*problems[:_MAX_PROBLEMS], f"and {more} more"]
        if problems:
            return 400, "Invalid request body: " + "; ".join(problems)
        return None

    def _record_pixel(self, query: Mapping[str, str], referer: str | None) -> None:
        """Record a ``<noscript>`` pixel hit: with ``event`` a tag event, else a page call."""
        data = {m.group(1): v for k, v in query.items() if (m := _EVENT_DATA.fullmatch(k))}
        tag_id = _opt_str(query.get("tid"))
        name = (query.get("event") or "").strip()
        record: TagEvent | PageCall
        if name:
            event_id = _opt_str(data.get("event_id"))
            record = TagEvent(tag_id, name, event_id, data, referer, None, None, time.time())
        else:
            record = PageCall(tag_id, data, referer, None, None, time.time())
        self._store_tag_record(record)

    def _store_tag_record(self, record: TagEvent | PageCall) -> None:
        """Keep what the tag (script or pixel) reported, and wake whoever waits for it."""
        with self._changed:
            if isinstance(record, TagEvent):
                self._arrivals.append(record)
            else:
                self._page_calls.append(record)
            self._changed.notify_all()

    def _finish(
        self,
        request: CapiRequest,
        received_at: float,
        count: int,
        answer: Answer,
        *,
        processed: Sequence[Any] = (),
        rejected: RejectedRequest | None = None,
    ) -> Answer:
        _check_answer(answer)
        record = RequestRecord(received_at, request.path, answer.status, count, request.test)
        with self._changed:
            target: list[Any] = self._test_events if request.test else self._arrivals
            target.extend(copy.deepcopy(processed))
            self._requests.append(record)
            if rejected is not None:
                self._rejected.append(rejected)
            self._changed.notify_all()
        return answer

    def _record_tag_report(self, text: str) -> str | None:
        try:
            report = json.loads(text)
        except ValueError:
            return "the report is not JSON"
        if not isinstance(report, dict):
            return "the report must be a JSON object"
        received_at = time.time()
        data = report.get("data")
        data = data if isinstance(data, dict) else {}
        tag_id, url, epik = (_opt_str(report.get(k)) for k in ("tag_id", "url", "epik"))
        consent = report.get("consent")
        consent = consent if isinstance(consent, bool) else None
        record: TagEvent | PageCall
        if report.get("kind") == "track":
            name = report.get("event")
            if not isinstance(name, str) or not name.strip():
                return "a track report needs an event name"
            event_id = _opt_str(data.get("event_id"))
            record = TagEvent(tag_id, name, event_id, data, url, epik, consent, received_at)
        elif report.get("kind") == "page":
            record = PageCall(tag_id, data, url, epik, consent, received_at)
        else:
            return "kind must be 'track' or 'page'"
        self._store_tag_record(record)
        return None


def _parse_json(request: CapiRequest) -> tuple[object, str | None]:
    """The body, parsed when possible (else its text), and why it is unusable, if it is."""
    try:
        body: object = json.loads(request.body)
    except ValueError:
        return request.body.decode("utf-8", "replace"), "The request body is not valid JSON."
    if request.content_type != "application/json":
        return body, "Content-Type must be application/json."
    return body, None


def _opt_str(value: object) -> str | None:
    """A non-empty id or URL sent as a string or number; anything else is absent."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return str(value) or None


def _proxy_page(page: ProxyPage, request: CapiRequest) -> str:
    rows = ""
    if page.echo_headers:
        rows = "".join(
            f"<li>{html.escape(name)}: {html.escape(value)}</li>"
            for name, value in request.headers.items()
        )
        rows = f"<p>Your request headers:</p><ul>{rows}</ul>"
    return (
        f"<!DOCTYPE html><html><head><title>{page.status} Gateway</title></head>"
        f"<body><h1>Something went wrong upstream</h1>{rows}</body></html>"
    )


def _check_answer(answer: Answer) -> None:
    # The fake must never teach a client something Pinterest could not answer; a proxy's
    # page (``text``) is by design not Pinterest's answer.
    if answer.text is not None:
        return
    problems = response_errors(answer.body, answer.status)
    if answer.status == 422:
        problems += response_errors(answer.body["details"], 200)
    if problems:
        raise RuntimeError(f"FakePinterest built an invalid {answer.status} body: {problems}")
