"""What to do when a system dependency of a test is missing: skip here, fail on CI.

CI installs Chromium, redis-server and Node itself (`make test`), so a missing one there is
a broken install step, not a reason to skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
