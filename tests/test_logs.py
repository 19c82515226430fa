"""Failures are visible by default: dedupkit's warnings reach stderr, one line a minute each."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from dedupkit.errors import OutboxError
from dedupkit.logs import StderrHandler, Throttle, routed_elsewhere
from dedupkit.testing import FakePinterest

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """``argv`` in a child with only the given DEDUPKIT_* variables, from the repository."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEDUPKIT_", "APP_"))}
    return subprocess.run(
        argv,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def track_with_wrong_token(fake: FakePinterest, tmp_path: Path, **env: str) -> str:
    """A web process that tracks a checkout with a revoked token; returns its stderr."""
    result = run(
        [sys.executable, "-m", "flask", "--app", "tests.support.env_app", "track-checkout", "A-1"],
        DEDUPKIT_AD_ACCOUNT_ID=fake.ad_account_id,
        DEDUPKIT_CONVERSION_TOKEN="revoked-token-1234",
        DEDUPKIT_API_BASE_URL=fake.api_base_url,
        DEDUPKIT_TAG_ID="2612345678901",
        DEDUPKIT_QUEUE_URL=f"sqlite:///{tmp_path}/outbox.sqlite3",
        APP_INSTANCE_PATH=str(tmp_path),
        DEDUPKIT_BACKGROUND_SENDER="1",
        DEDUPKIT_FLUSH_INTERVAL="0.05",
        **env,
    )
    assert result.returncode == 0, result.stderr
    assert fake.rejected, "the sender never called Pinterest"
    return result.stderr


def test_a_revoked_token_shows_in_the_console_of_an_app_without_logging_setup(
    fake: FakePinterest, tmp_path: Path
) -> None:
    stderr = track_with_wrong_token(fake, tmp_path)
    [line] = [line for line in stderr.splitlines() if "delivery paused" in line]
    assert "WARNING in dedupkit.sender:" in line  # dedupkit's handler, not logging's last resort
    assert "DEDUPKIT_CONVERSION_TOKEN" in line  # the setting to fix
    assert "revoked-token-1234" not in stderr


def test_an_app_that_routes_its_logs_gets_each_warning_once_through_its_own_handler(
    fake: FakePinterest, tmp_path: Path
) -> None:
    stderr = track_with_wrong_token(fake, tmp_path, APP_LOGGING="basic")
    lines = [line for line in stderr.splitlines() if "delivery paused" in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("APP WARNING dedupkit.sender: delivery paused")


STORM = """
import logging
from dedupkit import logs
logs.install()
log = logging.getLogger("dedupkit.sender")
for i in range(1000):
    log.warning("could not write to the dedupkit outbox %s (%s)", "sqlite:///x", f"locked {i}")
log.error("another kind of message")
log.info("below WARNING: not shown by default")
"""


def test_a_storm_of_one_thousand_identical_warnings_is_one_line() -> None:
    result = run([sys.executable, "-c", STORM])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "WARNING in dedupkit.sender:" in lines[0]
    assert lines[0].endswith("could not write to the dedupkit outbox sqlite:///x (locked 0)")
    assert "ERROR in dedupkit.sender: another kind of message" in lines[1]


def warning(message: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("dedupkit.sender", level, __file__, 1, message, args, None)


def test_the_rate_limit_lets_one_per_kind_per_minute_and_counts_the_rest() -> None:
    now = [1000.0]
    limit = Throttle(60.0, clock=lambda: now[0])
    passed = [limit.filter(warning("outbox failed: %s", i)) for i in range(1000)]
    assert passed.count(True) == 1 and passed[0]
    assert limit.filter(warning("another kind"))  # keyed on the template
    assert all(limit.filter(warning("batch %d", i, level=logging.INFO)) for i in range(5))
    now[0] += 59.0
    assert not limit.filter(warning("outbox failed: %s", "late"))
    now[0] += 1.0
    record = warning("outbox failed: %s", "again")
    assert limit.filter(record)
    assert getattr(record, "dedupkit_suppressed") == 1000  # noqa: B009
    text = StderrHandler().format(record)
    assert text.endswith("outbox failed: again (1000 more like this in the last 60 s)")


def test_a_handler_on_the_way_up_routes_the_record_elsewhere() -> None:
    parent = logging.getLogger("routing_test")
    parent.propagate = False
    own = StderrHandler()
    record = logging.LogRecord("routing_test.child", logging.WARNING, __file__, 1, "x", (), None)
    assert not routed_elsewhere(record, own)
    parent.addHandler(own)
    assert not routed_elsewhere(record, own)  # its own handler does not count
    quiet = logging.NullHandler()
    quiet.setLevel(logging.ERROR)
    parent.addHandler(quiet)
    assert not routed_elsewhere(record, own)  # would not take a WARNING
    quiet.setLevel(logging.NOTSET)
    assert routed_elsewhere(record, own)  # an app's NullHandler silences on purpose
    parent.removeHandler(quiet)
    parent.removeHandler(own)


def test_an_outbox_error_is_one_line_on_stderr_not_a_traceback() -> None:
    try:
        raise OutboxError("could not claim from the dedupkit outbox at 'o.sqlite3': disk I/O error")
    except OutboxError:
        message = "delivery failed; trying again in %.1f s"
        record = logging.LogRecord(
            "dedupkit.sender", logging.ERROR, __file__, 1, message, (2.0,), sys.exc_info()
        )
    line = StderrHandler().format(record)
    assert "\n" not in line
    assert line.endswith(
        "delivery failed; trying again in 2.0 s: OutboxError: could not claim from the "
        "dedupkit outbox at 'o.sqlite3': disk I/O error"
    )
    assert record.exc_info is not None  # other handlers still get the traceback
    assert "Traceback" in logging.Formatter().format(record)
