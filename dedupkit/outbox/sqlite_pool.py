"""The SQLite connections of one outbox, lent to one caller at a time.

A connection per thread is never closed when its thread ends: a thread-per-request server
(``flask run``, ``threaded=True``) would leak two file descriptors per request. Here a caller
borrows a connection for one operation and gives it back; at most ``max_idle`` wait for the
next caller, so the number of connections follows the number of *concurrent* operations, not
the number of threads that ever ran one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import OutboxError

#: Connections kept open between operations (each holds the file and its -wal open).
MAX_IDLE = 4

FileIdentity = tuple[int, int] | None


class ConnectionPool:
    """Connections to ``path`` for this process, opened by ``connect`` when none is idle.

    Safe across ``fork``: a child never uses, nor closes, a connection its parent opened
    (sqlite.org/howtocorrupt.html §2.6; closing one could checkpoint and delete the -wal the
    parent still uses); it keeps them referenced, unused, and opens its own.
    """

    def __init__(
        self, path: str, connect: Callable[[], sqlite3.Connection], *, max_idle: int = MAX_IDLE
    ) -> None:
        self._path = path
        self._connect = connect
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._generation = 0
        #: The file the first connection opened, to notice it being deleted or replaced.
        self._file: FileIdentity = None
        self._pid = os.getpid()
        # Inherited from the parent: never to be used or closed (and never garbage-collected,
        # which would close them).
        self._inherited: list[sqlite3.Connection] = []
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a connection for one operation (or transaction), then take it back.

        :raises OutboxError: when the file was deleted or replaced since it was opened.
        :raises sqlite3.Error: when a new connection cannot be opened.
        """
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            generation, expected = self._generation, self._file
        try:
            if conn is None:
                conn = self._connect()
                if expected is None:
                    with self._lock:
                        if generation == self._generation and self._file is None:
                            self._file = self._identity()
                        expected = self._file
            if expected is not None and self._identity() != expected:
                # SQLite would go on writing to the deleted file, and reopening the path while
                # other processes still use the old one would share their -wal and -shm files.
                raise OutboxError(
                    f"the dedupkit outbox {self._path!r} was deleted or replaced while in use; "
                    "restart the processes that use it"
                )
            yield conn
        finally:
            if conn is not None:
                self._give_back(conn, generation)

    def close(self) -> None:
        """Close the idle connections; those lent out are closed when given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
            self._file = None
        for conn in idle:
            conn.close()

    def _give_back(self, conn: sqlite3.Connection, generation: int) -> None:
        if os.getpid() != self._pid:
            # Lent out in the parent when it forked: the parent's to close.
            self._inherited.append(conn)
            return
        if conn.in_transaction:  # an interrupted operation must not leak its transaction
            try:
                conn.rollback()
            except sqlite3.Error:
                conn.close()
                return
        with self._lock:
            keep = generation == self._generation and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def _identity(self) -> FileIdentity:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _forget_parent(self) -> None:
        # Another thread of the parent may have held the lock when it forked.
        self._lock = threading.Lock()
        self._inherited += self._idle
        self._idle = []
        self._generation += 1
        self._pid = os.getpid()


def _after_fork(ref: weakref.ReferenceType[ConnectionPool]) -> None:
    pool = ref()
    if pool is not None:
        pool._forget_parent()
