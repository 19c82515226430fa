"""The README as a newcomer follows it: install line, placeholder, settings, tests, make demo."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dedupkit import ConfigurationError
from dedupkit.settings import KEYS, load

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text("utf-8")

#: A stand-in for the shop of the README's Quickstart, as "Testing your app" imports it.
MYSHOP = """
from flask import Flask, render_template_string
from dedupkit import DedupKit


def create_app(config):
    app = Flask(__name__)
    app.config.update(DEDUPKIT_TAG_ID="2612345678901", **config)
    kit = DedupKit(app)

    @app.get("/thanks/<order_id>")
    def thanks(order_id):
        event = kit.track(
            "checkout", order_id=order_id, value=42, currency="USD",
            user={"email": "jane@example.com"},
        )
        return render_template_string("{{ dedupkit.pintrk(pin_event) }}", pin_event=event)

    return app
"""


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def test_the_install_line_installs_this_distribution() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    [name] = re.findall(r'^name = "([^"]+)"', pyproject, re.M)
    installs = re.findall(r"pip install (\S+)", section("Quickstart"))
    assert installs[0] == name == "flask-dedupkit"


def test_the_readme_token_placeholder_is_ascii_and_refused_as_a_placeholder() -> None:
    [placeholder] = re.findall(r"DEDUPKIT_CONVERSION_TOKEN='([^']+)'", README)
    assert placeholder.isascii()
    with pytest.raises(ConfigurationError, match="is a placeholder"):
        load({"DEDUPKIT_CONVERSION_TOKEN": placeholder}, environ={})


def test_the_configuration_table_lists_every_setting() -> None:
    table = section("Configuration")
    documented = {key for cell in re.findall(r"^\| ([^|]+) \|", table, re.M)
                  for key in re.findall(r"`([A-Z_]+)`", cell)}  # fmt: skip
    # A setting may be documented in its topic's page of the documentation instead.
    topics = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    in_topics = {key for cell in re.findall(r"^\| ([^|]+) \|", topics, re.M)
                 for key in re.findall(r"`([A-Z_]+)`", cell)} & set(KEYS)  # fmt: skip
    assert set(KEYS) - documented - in_topics == set()
    assert documented - set(KEYS) == set()


def test_testing_your_app_works_as_written(tmp_path: Path) -> None:
    [test_module] = code_blocks(section("Testing your app"), "python")
    (tmp_path / "myshop.py").write_text(MYSHOP)
    (tmp_path / "test_checkout.py").write_text(test_module)
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEDUPKIT_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_checkout.py"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_make_demo_installs_only_what_the_demo_needs() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    demo = re.search(r"^demo: (\S+)\n", makefile, re.M)
    assert demo and demo.group(1) == "$(DEMO_STAMP)"
    recipe = re.search(r"^\$\(DEMO_STAMP\):.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "-e '.[testing]'" in recipe.group(1)
    assert "requirements-dev" not in recipe.group(1)


def test_the_demo_on_a_taken_port_says_how_to_pick_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "demo_site", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stdout == ""  # no URL banner for a shop that is not there
    assert f"port {port} is in use" in result.stderr
    assert f"PORT={port + 1} make demo" in result.stderr


def test_the_readme_stub_is_the_shipped_one() -> None:
    stub = (ROOT / "static" / "dedupkit-stub.min.js").read_text("utf-8").strip()
    assert f"<script>{stub}</script>" in section("The browser snippet")
    assert f"{len(stub.encode()) + 1} bytes" in section("The browser snippet")


def test_every_attribute_the_snippet_reads_is_in_the_readme() -> None:
    source = (ROOT / "static" / "dedupkit.js").read_text("utf-8")
    read = set(re.findall(r"(?:attribute|flag)\('([a-z-]+)'\)", source))
    assert read, "the snippet's attribute reads were not found"
    table = section("The browser snippet")
    assert {name for name in read if f"`data-{name}`" not in table} == set()
