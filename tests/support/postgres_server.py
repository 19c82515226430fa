"""A throwaway PostgreSQL server on 127.0.0.1 for the tests that need a real one.

Use :func:`running_postgres_server` from a session fixture (one server per test session:
``initdb`` costs seconds)::

    @pytest.fixture(scope="session")
    def postgres_server():
        with running_postgres_server() as server:
            yield server

It runs Debian's ``initdb`` and ``postgres`` (``apt-get install postgresql``), as the current
user, or as ``nobody`` when that is root (PostgreSQL refuses to run as root), in a temporary
data directory, with fsync off: a test server keeps nothing worth a disk flush. It skips the
test when the binaries are missing, and fails instead when ``CI=true``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from .network import free_port
from .requirements import missing

#: How long the server may take to accept connections after it was started.
START_TIMEOUT = 30.0
#: The unprivileged user the server runs as when the tests run as root.
UNPRIVILEGED_UID = 65534  # nobody


@dataclass
class PostgresServer:
    """A running server; :meth:`stop` it, or let :func:`running_postgres_server` do it."""

    port: int
    process: subprocess.Popen[bytes]
    directory: str
    user: str = "postgres"
    #: Databases made by :meth:`new_database`, for the record.
    databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database``."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database of its own (for one test) and return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        dsn = f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop_process()
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop_process(self) -> None:
        if self.process.poll() is None:
            # SIGINT: "fast" shutdown, without waiting for clients to disconnect.
            self.process.send_signal(2)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def postgres_bin_dir() -> str:
    """The directory of ``initdb`` and ``postgres``, or skip (fail on CI) when missing."""
    # Debian keeps the server binaries out of PATH, one directory per major version.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found = candidates[0] if candidates else shutil.which("initdb")
    if not found:
        missing("PostgreSQL is not installed (apt-get install postgresql)")
    # A symlink in PATH: its neighbours (pg_isready) live beside the real file.
    return os.path.dirname(os.path.realpath(found))


def _as_server_user() -> list[str]:
    """The command prefix that runs the server unprivileged when we are root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        missing("running PostgreSQL as root's tests needs setpriv (util-linux)")
    uid = str(UNPRIVILEGED_UID)
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def _accepts_connections(bin_dir: str, port: int) -> bool:
    ready = [os.path.join(bin_dir, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.run(ready, check=False).returncode == 0


def _wait_until_ready(bin_dir: str, server: PostgresServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _accepts_connections(bin_dir, server.port):
            return True
        try:
            server.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        return False
    return False


def start_postgres_server() -> PostgresServer:
    """``initdb`` a temporary cluster and start ``postgres`` on a free loopback port."""
    bin_dir = postgres_bin_dir()
    prefix = _as_server_user()
    # Not under pytest's tmp_path: its parents are private to root, and the server may not be.
    directory = tempfile.mkdtemp(prefix="dedupkit-postgres-")
    if prefix:
        os.chown(directory, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    data = os.path.join(directory, "data")
    log = os.path.join(directory, "server.log")
    init = [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust"]
    init += ["--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]
    done = subprocess.run([*prefix, *init], capture_output=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    # The free port may be taken by someone else before the server binds it: try a few.
    for _ in range(3):
        port = free_port()
        args = [os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(port)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
        args += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        args += ["-c", "full_page_writes=off", "-c", "max_connections=200"]
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [*prefix, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        server = PostgresServer(port=port, process=process, directory=directory)
        try:
            if _wait_until_ready(bin_dir, server):
                return server
        except BaseException:
            server.stop()
            raise
        # It exited (most likely the port was taken) or never answered.
        server.stop_process()
    with open(log, errors="replace") as text:
        output = text.read()[-2000:]
    shutil.rmtree(directory, ignore_errors=True)
    pytest.fail(f"postgres did not start on 127.0.0.1:\n{output}")


@contextmanager
def running_postgres_server() -> Iterator[PostgresServer]:
    """:func:`start_postgres_server`, stopped (and its directory removed) on exit."""
    server = start_postgres_server()
    try:
        yield server
    finally:
        server.stop()
