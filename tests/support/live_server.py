"""Serve a WSGI app on 127.0.0.1 from a thread, for tests that need a real HTTP server."""

from __future__ import annotations

import threading
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

WSGIApp = object


class LiveServer:
    """``with LiveServer(app) as server: server.url`` — stops (and frees the port) on exit."""

    def __init__(self, app: object, host: str = "127.0.0.1") -> None:
        self._server: BaseWSGIServer = make_server(host, 0, app, threaded=True)  # type: ignore[arg-type]
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def static_site(pages: dict[str, str]) -> object:
    """A WSGI app serving fixed HTML pages, like a static marketing site on a CDN."""

    @Request.application  # type: ignore[arg-type]
    def app(request: Request) -> Response:
        body = pages.get(request.path)
        if body is None:
            return Response("not found", status=404)
        return Response(body, mimetype="text/html")

    return app
