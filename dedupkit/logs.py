"""Make dedupkit's warnings visible by default, one line a minute per kind of message.

A library that logs into the void hides its failures: Flask configures no logging for the
``dedupkit`` loggers and gunicorn only its own. :func:`install` (called by ``init_app``)
gives the ``dedupkit`` logger a stderr handler, as Flask gives ``app.logger`` its
``default_handler``, with one difference: the rule is applied to every record, not once, so
logging configured after ``init_app`` still wins.

The rule: a record is written to stderr unless another handler on its way up the logger
hierarchy (its own logger, ``dedupkit``, the root logger, as far as ``propagate`` allows)
would handle it, i.e. has a level at or below the record's. ``logging.basicConfig()``, a
``dictConfig`` with a root handler, a handler (a ``NullHandler`` to silence) on
``dedupkit``: each routes the records elsewhere and this handler stays quiet.

Warnings are rate-limited by :class:`Throttle`, keyed on the message template, so a storm
(a broken outbox, every event refused) is one line a minute per kind, not one per event.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from .errors import DedupKitError

#: The logger every dedupkit module logs under (``dedupkit``, ``dedupkit.sender``, ...).
LOGGER_NAME = "dedupkit"
#: Seconds during which a given kind of warning is written once.
INTERVAL = 60.0
#: Like Flask's ``default_handler``: when, how bad, who.
FORMAT = "[%(asctime)s] %(levelname)s in %(name)s: %(message)s"


class Throttle(logging.Filter):
    """Let one record per ``(logger, level, message template)`` through per ``interval``.

    Records below ``min_level`` always pass (a worker's per-batch INFO lines are one per
    batch already). The first record after a quiet spell carries ``dedupkit_suppressed``,
    the number of its kind dropped since the last one written, which :class:`StderrHandler`
    appends. Add it to your own handlers too: ``handler.addFilter(Throttle())``.
    """

    def __init__(
        self,
        interval: float = INTERVAL,
        *,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.min_level = min_level
        self.clock = clock
        self._lock = threading.Lock()
        # key -> (when the last one was written, how many were dropped since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        # The template, not the message: "could not write %s (%s)" is one kind whatever its
        # arguments. Templates are few, so the table stays small.
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last, dropped = self._seen.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
        if dropped:
            record.dedupkit_suppressed = dropped
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current ``sys.stderr`` (pytest, click's runner replace it) what no
    other handler would take."""

    def __init__(self, level: int = logging.WARNING) -> None:
        super().__init__()
        self.setLevel(level)
        self.setFormatter(logging.Formatter(FORMAT))
        self.addFilter(Throttle())

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        # StreamHandler.__init__ assigns it; the current sys.stderr is always used.
        pass

    def handle(self, record: logging.LogRecord) -> bool:
        if routed_elsewhere(record, self):
            return False
        return super().handle(record)

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DedupKitError):
            # An outbox or configuration failure already says what and where: a traceback
            # would bury it. A copy, so that another handler still gets the traceback.
            record = copy.copy(record)
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args, record.exc_info, record.exc_text = (), None, None
        text = super().format(record)
        dropped = getattr(record, "dedupkit_suppressed", 0)
        if dropped:
            text += f" ({dropped} more like this in the last {INTERVAL:.0f} s)"
        return text


def routed_elsewhere(record: logging.LogRecord, own: logging.Handler) -> bool:
    """Whether a handler other than ``own`` on the record's way up would handle it."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for handler in logger.handlers:
            if handler is not own and record.levelno >= handler.level:
                return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def install(level: int | None = None) -> StderrHandler:
    """Give the ``dedupkit`` logger its stderr handler, once per process; returns it.

    :param level: the level of the handler and of the ``dedupkit`` logger, for ``-v``/``-q``
        on the command line; ``None`` changes neither (WARNING, the root's default, when new).
    """
    logger = logging.getLogger(LOGGER_NAME)
    with _install_lock:
        handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
        if handler is None:
            handler = StderrHandler()
            logger.addHandler(handler)
    if level is not None:
        handler.setLevel(level)
        logger.setLevel(level)
    return handler


_install_lock = threading.Lock()
