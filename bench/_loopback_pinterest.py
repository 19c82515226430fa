"""A minimal stand-in for the Conversions API, for benchmarks only.

``FakePinterest`` validates every request against Pinterest's schema with jsonschema, which
costs far more than the client under test. This server only parses the JSON and answers 200
with one ``processed`` verdict per event, in the shape of Pinterest's ``ConversionApiResponse``
(the official SDK deserialises and type-checks it). Run it in its own process so that its CPU
is not counted with the client's::

    python bench/_loopback_pinterest.py --port 0     # prints "port <n>", serves until stdin closes

:func:`running_server` does that from a benchmark, and can start the real ``FakePinterest``
(``python -m dedupkit.testing``) instead, to show the client's CPU does not depend on it.
This module imports only the standard library: the SDK's separate virtualenv imports it too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
AD_ACCOUNT_ID = "549764982399"
_EVENTS_PATH = re.compile(r"^/v5/ad_accounts/[0-9]{1,18}/events(\?.*)?$")
_PROCESSED = {"status": "processed", "error_message": None, "warning_message": None}


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events = 0
        self.requests = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counts = _Counts()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not _EVENTS_PATH.match(self.path):
            self._answer(404, {"code": 404, "message": "Not found."})
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"code": 2, "message": "Authentication failed."})
            return
        try:
            count = len(json.loads(body)["data"])
        except (ValueError, KeyError, TypeError):
            self._answer(400, {"code": 4196, "message": "The request was invalid."})
            return
        with self.counts.lock:
            self.counts.events += count
            self.counts.requests += 1
        answer = {
            "num_events_received": count,
            "num_events_processed": count,
            "events": [_PROCESSED] * count,
        }
        self._answer(200, answer)

    def do_GET(self) -> None:
        if self.path != "/_count":
            self._answer(404, {"code": 404, "message": "Not found."})
            return
        with self.counts.lock:
            self._answer(200, {"events": self.counts.events, "requests": self.counts.requests})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(port: int) -> None:
    """Serve on 127.0.0.1 until standard input closes (the parent exited or let go)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"port {server.server_port}", flush=True)
    sys.stdin.read()
    server.shutdown()
    server.server_close()


@dataclass
class Server:
    """A server running in a child process."""

    kind: str
    base_url: str
    process: subprocess.Popen[str]

    @property
    def api_base_url(self) -> str:
        return self.base_url + "/v5"

    def events_received(self) -> int:
        """How many events the server has accepted so far."""
        if self.kind == "fake":
            with urllib.request.urlopen(self.base_url + "/_fake/state", timeout=10) as reply:
                return int(json.load(reply)["counts"]["capi_events"])
        with urllib.request.urlopen(self.base_url + "/_count", timeout=10) as reply:
            return int(json.load(reply)["events"])


@contextmanager
def running_server(kind: str = "loopback", python: str = sys.executable) -> Iterator[Server]:
    """Start the stand-in (``"loopback"``) or ``FakePinterest`` (``"fake"``) in a child
    process on 127.0.0.1, and stop it on exit."""
    if kind == "loopback":
        args = [python, str(Path(__file__).resolve()), "--port", "0"]
    elif kind == "fake":
        args = [python, "-m", "dedupkit.testing", "--port", "0", "--token", TOKEN]
        args += ["--ad-account-id", AD_ACCOUNT_ID]
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), _pythonpath()]))}
    process = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        base_url = _read_base_url(process, kind)
        yield Server(kind, base_url, process)
    finally:
        if process.stdin:
            process.stdin.close()
        if kind == "fake":
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


def _read_base_url(process: subprocess.Popen[str], kind: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if kind == "loopback" and line.startswith("port "):
            return f"http://127.0.0.1:{int(line.split()[1])}"
        if kind == "fake" and line.startswith("api_base_url"):
            return line.split()[1].removesuffix("/v5")
    raise RuntimeError(f"the {kind} server did not start (exit status {process.wait()})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    serve(parser.parse_args().port)
