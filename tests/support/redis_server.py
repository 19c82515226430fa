"""A throwaway ``redis-server`` on 127.0.0.1 for the tests that need a real Redis.

Use :func:`running_redis_server` from a fixture::

    @pytest.fixture(scope="session")
    def redis_server(tmp_path_factory):
        with running_redis_server(tmp_path_factory.mktemp("redis")) as server:
            yield server

It skips the test when ``redis-server`` is not installed, and fails instead when ``CI=true``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .network import free_port
from .requirements import missing

#: How long a server may take to answer PING after it was started.
START_TIMEOUT = 10.0


@dataclass
class RedisServer:
    """A running server; :meth:`stop` it, or let :func:`running_redis_server` do it."""

    port: int
    process: subprocess.Popen[bytes]
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def redis_server_binary() -> str:
    """The ``redis-server`` path, or skip (fail on CI) when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        missing("redis-server is not installed (apt-get install redis-server)")
    return path


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # -NOAUTH means up but password protected; -LOADING means not ready yet.
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def start_redis_server(directory: Path, *, password: str | None = None) -> RedisServer:
    """Start ``redis-server`` on a free port, without persistence, and wait for PING."""
    binary = redis_server_binary()
    log = directory / f"redis-{time.monotonic_ns()}.log"
    # The free port may be taken by someone else before the server binds it: try a few.
    for _ in range(3):
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(directory), "--logfile", str(log)]
        if password:
            args += ["--requirepass", password]
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _answers_ping(port):
                return RedisServer(port=port, process=process, password=password)
            try:
                process.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            break  # it exited: most likely the port was taken
        RedisServer(port=port, process=process).stop()
    output = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    pytest.fail(f"redis-server did not start on 127.0.0.1:\n{output}")


@contextmanager
def running_redis_server(directory: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    """:func:`start_redis_server`, stopped on exit."""
    server = start_redis_server(directory, password=password)
    try:
        yield server
    finally:
        server.stop()
