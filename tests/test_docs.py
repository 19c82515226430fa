"""The documentation's code: runnable examples run, every Python block is ruff-clean, and the
configuration reference (generated from :class:`~dedupkit.settings.Settings`) covers every key.

A Python block in ``docs/`` preceded by the MyST comment ``% runnable`` is executed as a
script in an empty folder; the others are checked as text (they need a shop, Stripe, …).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dedupkit.settings import KEYS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("**/*.md"))
BLOCK = re.compile(r"^(% runnable\n)?```python\n(.*?)^```", re.S | re.M)
#: Rules a documentation fragment cannot meet: it uses names defined in the text around it,
#: and is no module that needs ``from __future__ import annotations``.
FRAGMENT_RULES = "F821,F841,I002"


def python_blocks(path: Path) -> list[tuple[bool, str]]:
    """``(runnable, code)`` of each fenced Python block of ``path``."""
    return [(bool(mark), code) for mark, code in BLOCK.findall(path.read_text("utf-8"))]


RUNNABLE = [
    pytest.param(code, id=f"{path.relative_to(DOCS)}-{n}")
    for path in PAGES
    for n, (runnable, code) in enumerate(python_blocks(path))
    if runnable
]


def test_the_guide_has_runnable_examples() -> None:
    assert len(RUNNABLE) >= 3


@pytest.mark.parametrize("code", RUNNABLE)
def test_a_runnable_example_runs(code: str, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(code, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEDUPKIT_")}
    result = subprocess.run(
        [sys.executable, "-W", "error", "example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_every_python_block_of_the_readme_and_the_docs_is_ruff_clean(tmp_path: Path) -> None:
    sources = [ROOT / "README.md", *PAGES]
    for source in sources:
        for n, (_, code) in enumerate(python_blocks(source)):
            name = f"{source.relative_to(ROOT)}-{n}.py".replace("/", "__")
            (tmp_path / name).write_text(code, "utf-8")
    assert list(tmp_path.glob("README.md-*.py")), "the README's Python blocks were not found"
    ruff = [sys.executable, "-m", "ruff"]
    # Imports sorted as in the reader's project: dedupkit is a library there, the shop is theirs.
    config = ["--config", str(ROOT / "pyproject.toml")]
    config += ["--config", 'lint.isort.known-first-party = ["myshop", "shop"]']
    config += ["--config", 'lint.isort.known-third-party = ["dedupkit"]']
    check = subprocess.run(
        [*ruff, "check", *config, "--ignore", FRAGMENT_RULES, "--no-cache", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    formatted = subprocess.run(
        [*ruff, "format", *config, "--check", "--diff", "--no-cache", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def docs_extension(name: str) -> ModuleType:
    """A module of ``docs/_ext`` (Sphinx puts that folder on its path, pytest does not)."""
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_documents_every_setting() -> None:
    field_docs = docs_extension("settings_reference").field_docs
    documented = {name for name, doc in field_docs().items() if doc}
    assert set(KEYS.values()) - documented == set()
    assert "{dedupkit-settings}" in (DOCS / "configuration.md").read_text("utf-8")


@pytest.mark.parametrize("package", ["dedupkit", "dedupkit.testing"])
def test_the_api_reference_documents_every_public_name(package: str) -> None:
    module = importlib.import_module(package)
    api = (DOCS / "api.md").read_text("utf-8")
    documented = set(re.findall(rf"^\.\. auto\w+:: {re.escape(package)}\.(\w+)$", api, re.M))
    assert set(module.__all__) - documented == set()
