"""Waiting for something another thread or process does: poll with a deadline, never a guess."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0, every: float = 0.02) -> bool:
    """Call ``condition`` until it is true or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return bool(condition())
        time.sleep(every)  # polling with a deadline, not waiting for a guessed duration
