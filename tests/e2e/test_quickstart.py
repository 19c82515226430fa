"""The README's Quickstart, run exactly as printed: a newcomer's first paired event.

The code blocks are taken from README.md and written to an empty folder; the two shell blocks
run in bash as real processes (the standalone fake Pinterest, then ``flask run``), and real
Chromium opens the pages the "Check it worked" step names. The one change from the text: the
two port numbers become free ones, so the test never collides with a running ``make demo``.
Any drift in the README (a renamed setting, a template call, a URL) makes this test fail.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.browser import DESKTOP_CHROME_UA
from ..support.polling import wait_until

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text("utf-8")
#: The ports the README prints.
FAKE_PORT, SHOP_PORT = "8765", "5000"
#: A setting ``python -m dedupkit.testing`` prints: ``api_base_url  http://…``.
PRINTED = re.compile(
    r"^(api_base_url|pintrk_src|pixel_url|token|ad_account_id|tag_id) +(\S+)$", re.M
)


def quickstart() -> str:
    start = README.index("\n## Quickstart")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block in ``text``, in order."""
    return re.findall(r"^```([\w+-]*)\n(.*?)^```", text, flags=re.S | re.M)


def the_block(language: str, containing: str) -> str:
    found = [body for lang, body in code_blocks(quickstart()) if lang == language]
    found = [body for body in found if containing in body]
    assert len(found) == 1, f"one {language} block with {containing!r} in the Quickstart"
    return found[0]


def files_written_by_the_reader() -> dict[str, str]:
    """Each file block names its path on its first line: ``# shop.py``, ``{# templates/… #}``."""
    files = {}
    for language, body in code_blocks(quickstart()):
        first = body.splitlines()[0]
        name = re.fullmatch(r"(?:# (\S+\.py)|\{# (\S+) #\})", first)
        if name and language in ("python", "html+jinja"):
            files[name.group(1) or name.group(2)] = body
    return files


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def on_ports(text: str, fake_port: str, shop_port: str) -> str:
    return (
        text.replace(f":{FAKE_PORT}", f":{fake_port}")
        .replace(f"--port {FAKE_PORT}", f"--port {fake_port}")
        .replace(f":{SHOP_PORT}", f":{shop_port}")
        .replace(f"--port {SHOP_PORT}", f"--port {shop_port}")
    )


@contextmanager
def shell(script: str, cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``script`` in bash, as a reader types it in a terminal; stopped with its children."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEDUPKIT_", "FLASK_"))}
    # The reader's virtualenv is active: python and flask are the ones next to this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code < 500
    except httpx.HTTPError:
        return False


def fake_state(url: str) -> dict[str, Any]:
    return dict(httpx.get(url, timeout=5.0).json())


def test_the_quickstart_files_and_commands_are_where_the_reader_finds_them() -> None:
    assert set(files_written_by_the_reader()) == {"shop.py", "templates/thanks.html"}
    assert "--port 8765" in the_block("sh", "python -m dedupkit.testing")
    assert "flask --app shop run --port 5000" in the_block("sh", "DEDUPKIT_API_BASE_URL")
    check = quickstart()[quickstart().index("**Check it worked.**") :]
    assert "http://127.0.0.1:5000/thanks/A-1001" in check
    assert "http://127.0.0.1:5000/dedupkit/debug" in check
    assert "http://127.0.0.1:8765/_fake/state" in check
    assert "**paired**" in check
    assert '"deduplicated": 1' in check


def test_the_quickstart_pairs_a_checkout_on_the_fake(tmp_path: Path, browser: Any) -> None:
    for name, body in files_written_by_the_reader().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, "utf-8")
    fake_port, shop_port = free_port(), free_port()
    check = on_ports(
        quickstart()[quickstart().index("**Check it worked.**") :], fake_port, shop_port
    )
    [thanks_url, ledger_url, state_url] = re.findall(r"<(http://[^>]+)>", check)[:3]

    fake_block = on_ports(the_block("sh", "python -m dedupkit.testing"), fake_port, shop_port)
    shop_block = on_ports(the_block("sh", "DEDUPKIT_API_BASE_URL"), fake_port, shop_port)
    with shell(fake_block, tmp_path, tmp_path / "fake.log") as fake:
        fake_log = tmp_path / "fake.log"
        # Up, and done printing its settings (it prints them once it listens).
        fake_ready = wait_until(
            lambda: "Ctrl-C to stop." in fake_log.read_text() and answers(state_url), timeout=30
        )
        assert fake_ready, fake_log.read_text()
        # The settings the reader pastes are the ones the fake printed when it started.
        printed = dict(PRINTED.findall(fake_log.read_text()))
        assert set(printed) == {
            "api_base_url",
            "pintrk_src",
            "pixel_url",
            "token",
            "ad_account_id",
            "tag_id",
        }
        for name, value in printed.items():
            key = "CONVERSION_TOKEN" if name == "token" else name.upper()
            assert f"DEDUPKIT_{key}={value}" in shop_block
        with shell(shop_block, tmp_path, tmp_path / "shop.log") as shop:
            shop_url = f"http://127.0.0.1:{shop_port}/"
            started = wait_until(lambda: answers(shop_url) or shop.poll() is not None, timeout=30)
            assert started and shop.poll() is None, (tmp_path / "shop.log").read_text()

            # A shopper's browser, not HeadlessChrome: a headless one is a bot, and skipped.
            context = browser.new_context(user_agent=DESKTOP_CHROME_UA)
            try:
                page = context.new_page()
                page.goto(thanks_url, wait_until="load")
                assert "Thank you! Order A-1001 is placed." in page.content()

                def paired_on_the_fake() -> bool:
                    state = fake_state(state_url)
                    return bool(state["counts"]["deduplicated"] == 1)

                logs = (tmp_path / "shop.log", tmp_path / "fake.log")
                assert wait_until(paired_on_the_fake, timeout=30), [p.read_text() for p in logs]
                [conversion] = fake_state(state_url)["conversions"]
                assert conversion["event_name"] == "checkout"
                assert conversion["event_id"] == "checkout-A-1001"
                assert conversion["sources"] == ["capi", "tag"]

                # The reload the README invites: still one conversion.
                page.reload(wait_until="load")
                assert fake.poll() is None and shop.poll() is None

                def the_ledger_verdict() -> str | None:
                    ledger = httpx.get(ledger_url, params={"format": "json"}, timeout=5.0).json()
                    verdicts = {e["event_id"]: e["verdict"] for e in ledger["entries"]}
                    return verdicts.get("checkout-A-1001")

                assert wait_until(lambda: the_ledger_verdict() == "paired", timeout=30), (
                    the_ledger_verdict()
                )
                page.goto(ledger_url)
                assert "checkout-A-1001" in page.inner_text("body")
                # The reload sent the tag's copy again with the same id: still one conversion.
                assert [c["event_id"] for c in fake_state(state_url)["conversions"]] == [
                    "checkout-A-1001"
                ]
            finally:
                context.close()
