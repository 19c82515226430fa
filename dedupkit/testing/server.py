"""The fake's HTTP side: a small Flask app served by werkzeug from a daemon thread.

The app only translates HTTP; what to answer is decided by the callables it is given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

#: Where the stand-in tag reports ``pintrk`` calls, relative to the fake's root.
TAG_REPORT_PATH = "/_fake/tag"
#: The ``<noscript>`` pixel's path (``https://ct.pinterest.com/v3/``).
PIXEL_PATH = "/v3/"
#: A transparent 1x1 GIF, what the pixel answers.
PIXEL_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
#: Replaced, quotes included, by the report URL as a JavaScript string.
REPORT_URL_PLACEHOLDER = '"__FAKE_PINTEREST_REPORT_URL__"'
# How often the serving loop checks for shutdown; bounds how long stop() takes.
_POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class CapiRequest:
    """The parts of a Conversions API request the fake judges."""

    ad_account_id: str
    path: str
    authorization: str | None
    content_type: str
    body: bytes
    test: bool
    #: Every request header, as sent (for faults that echo them, as some error pages do).
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer (or, for a proxy's page, a text one), and how long to hold it back."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Sent instead of ``body`` when set: not Pinterest's answer, so not checked against it.
    text: str | None = None
    mimetype: str = "text/html"


@cache
def core_js_source() -> str:
    """The stand-in tag with the report URL still a placeholder."""
    return files("dedupkit.testing").joinpath("core.js").read_text("utf-8")


def create_app(
    *,
    answer_events: Callable[[CapiRequest], Answer],
    record_tag_report: Callable[[str], str | None],
    record_pixel: Callable[[Mapping[str, str], str | None], None],
    state: Callable[[], Mapping[str, Any]],
    pause: Callable[[float], object],
    tag_blocked_for: Callable[[str], str | None] = lambda user_agent: None,
) -> Flask:
    """The fake's WSGI app.

    :param answer_events: decides the answer to a Conversions API request.
    :param record_tag_report: records a stand-in tag report; returns why it was refused.
    :param record_pixel: records a ``<noscript>`` pixel hit: its query and its Referer.
    :param state: the summary served at ``/_fake/state``.
    :param pause: waits before a delayed answer, returning early when the fake stops.
    :param tag_blocked_for: what blocks the tag for a user agent (``None``: nothing); a
        blocked visitor gets no ``core.js``.
    """
    app = Flask(__name__)

    @app.post("/v5/ad_accounts/<ad_account_id>/events")
    def events(ad_account_id: str) -> Response:
        answer = answer_events(
            CapiRequest(
                ad_account_id=ad_account_id,
                path=request.path,
                authorization=request.headers.get("Authorization"),
                content_type=request.mimetype,
                body=request.get_data(),
                test=request.args.get("test", "").lower() == "true",
                headers=dict(request.headers),
            )
        )
        if answer.delay:
            pause(answer.delay)
        if answer.text is not None:
            return Response(
                answer.text, answer.status, dict(answer.headers), mimetype=answer.mimetype
            )
        return _json(answer.body, answer.status, answer.headers)

    @app.get(PIXEL_PATH)
    def pixel() -> Response:
        record_pixel(request.args.to_dict(), request.headers.get("Referer"))
        response = Response(PIXEL_GIF, mimetype="image/gif")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/ct/core.js")
    def core_js() -> Response:
        blocker = tag_blocked_for(request.headers.get("User-Agent", "")[:1000])
        if blocker is not None:
            # What a content blocker does, as far as the page can tell: the script fails.
            response = Response(f"blocked by {blocker}\n", 403, mimetype="text/plain")
            response.headers["X-Fake-Blocked-By"] = blocker
            return response
        # The URL the browser reached us by, so reports work whatever host name it used.
        report_url = request.url_root.rstrip("/") + TAG_REPORT_PATH
        script = core_js_source().replace(REPORT_URL_PLACEHOLDER, json.dumps(report_url))
        response = Response(script, mimetype="application/javascript")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.post(TAG_REPORT_PATH)
    def tag_report() -> Response:
        refused = record_tag_report(request.get_data(as_text=True))
        if refused is not None:
            return _json({"error": refused}, 400)
        return Response(status=204)

    @app.get("/_fake/state")
    def fake_state() -> Response:
        return _json(state(), 200)

    @app.after_request
    def allow_any_origin(response: Response) -> Response:
        # Pages on another origin (the demo shop) load the tag, report to us and read state.
        if request.path.startswith(("/_fake/", "/ct/")):
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        return response

    return app


def _json(
    body: Mapping[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=dict(headers or {}),
        mimetype="application/json",
    )


class _QuietHandler(WSGIRequestHandler):
    # Set here so werkzeug does not set it on the shared WSGIRequestHandler class.
    protocol_version = "HTTP/1.1"

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class _LoggingHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"


class ServerThread:
    """Serves ``app`` on ``host:port`` (0: any free port) from a daemon thread."""

    def __init__(self, app: Flask, host: str, port: int, *, log_requests: bool = False) -> None:
        handler = _LoggingHandler if log_requests else _QuietHandler
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=handler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"FakePinterest:{self.port}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and close the listening socket."""
        self._server.shutdown()
        self._thread.join()
