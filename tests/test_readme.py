"""The README and the guide as a newcomer follows them: install, placeholder, tests, make demo.

The Quickstart itself runs in tests/e2e/test_quickstart.py; the docs' runnable examples, their
formatting and the generated configuration reference in tests/test_docs.py.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dedupkit import ConfigurationError
from dedupkit.settings import load

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text("utf-8")
DOCS = ROOT / "docs"

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


def section(title: str, text: str = README) -> str:
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def page(name: str) -> str:
    return (DOCS / f"{name}.md").read_text("utf-8")


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def test_the_install_lines_install_this_distribution_from_source() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    [name] = re.findall(r'^name = "([^"]+)"', pyproject, re.M)
    assert name == "flask-dedupkit"
    [source] = re.findall(r'pip install "([^"]+)"', section("Install"))
    assert re.fullmatch(rf"{name}\[testing\] @ git\+https://github\.com/\S+", source)
    clone = re.search(r"git clone (\S+) && pip install -e \"\./(\S+)\[testing\]\"", README)
    assert clone and clone.group(1).endswith("/" + clone.group(2))


def test_the_guide_token_placeholder_is_ascii_and_refused_as_a_placeholder() -> None:
    [placeholder] = re.findall(r"DEDUPKIT_CONVERSION_TOKEN='([^']+)'", page("quickstart"))
    assert placeholder.isascii()
    with pytest.raises(ConfigurationError, match="is a placeholder"):
        load({"DEDUPKIT_CONVERSION_TOKEN": placeholder}, environ={})


def test_testing_your_app_works_as_written(tmp_path: Path) -> None:
    [test_module] = code_blocks(page("testing"), "python")
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


def test_the_documented_stub_is_the_shipped_one() -> None:
    stub = (ROOT / "static" / "dedupkit-stub.min.js").read_text("utf-8").strip()
    stub_section = section("The stub", page("snippet"))
    assert f"<script>{stub}</script>" in stub_section
    assert f"{len(stub.encode()) + 1} bytes" in stub_section


def test_every_attribute_the_snippet_reads_is_documented() -> None:
    source = (ROOT / "static" / "dedupkit.js").read_text("utf-8")
    read = set(re.findall(r"(?:attribute|flag)\('([a-z-]+)'\)", source))
    assert read, "the snippet's attribute reads were not found"
    table = section("Attributes", page("snippet"))
    assert {name for name in read if f"`data-{name}`" not in table} == set()


def test_the_readme_links_to_files_that_exist() -> None:
    links = set(re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README))
    assert "docs/quickstart.md" in links
    # The topic pages are written alongside the guide; the rest must be here.
    missing = {link for link in links if not (ROOT / link).exists()}
    assert {link for link in missing if not link.startswith("docs/topics/")} == set()


def test_make_test_builds_the_docs_with_warnings_as_errors() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    test = re.search(r"^test: (.*)$", makefile, re.M)
    assert test and "docs" in test.group(1).split()
    docs = re.search(r"^docs: .*\n((?:\t.*\n)+)", makefile, re.M)
    assert docs and "sphinx-build -W --keep-going" in docs.group(1)
    assert "tests/test_docs.py" in docs.group(1)
