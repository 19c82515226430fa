"""The browser snippet stays within its size budget and stays ES5.

Budgets come from the contract: dedupkit.js at most 1.5 KB after ``gzip -9``; the inline stub that
``dedupkit.head()`` writes into every page at most 200 bytes as it is.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parent.parent / "static"
SNIPPET = STATIC / "dedupkit.js"
STUB = STATIC / "dedupkit-stub.js"

#: Bytes of ``static/dedupkit.js`` after gzip -9.
SNIPPET_GZIP_BUDGET = 1536
#: Bytes of ``static/dedupkit-stub.js`` as inlined.
STUB_RAW_BUDGET = 200

#: Syntax newer than ES5, looked for in code with comments and literals blanked out.
_NOT_ES5 = {
    "arrow function": r"=>",
    "let": r"\blet\b",
    "const": r"\bconst\b",
    "template literal": r"`",
    "class": r"\bclass\b",
    "spread or rest": r"\.\.\.",
    "for-of": r"\bfor\s*\([^;)]*\bof\b",
    "async or await": r"\b(?:async|await)\b",
    "exponent operator": r"\*\*",
}

# A "/" after one of these starts a regular expression literal, otherwise it divides.
_BEFORE_REGEX = set("(,=:[!&|?{};+-*%<>~^")


def _code_only(source: str) -> str:
    """``source`` with comments, string literals and regex literals blanked out."""
    out: list[str] = []
    i, n, prev = 0, len(source), ""
    while i < n:
        char = source[i]
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            i = n if end < 0 else end + 2
            out.append(" ")
        elif char in "'\"":
            j = i + 1
            while j < n and source[j] != char:
                j += 2 if source[j] == "\\" else 1
            out.append(char * 2)
            i, prev = j + 1, char
        elif char == "/" and (prev == "" or prev in _BEFORE_REGEX):
            j, in_class = i + 1, False
            while j < n and (in_class or source[j] != "/"):
                if source[j] == "\\":
                    j += 1
                elif source[j] in "[]":
                    in_class = source[j] == "["
                j += 1
            j += 1
            while j < n and source[j].isalpha():
                j += 1
            out.append("/x/")
            i, prev = j, "/"
        else:
            out.append(char)
            prev = prev if char.isspace() else char
            i += 1
    return "".join(out)


def _es5_violations(source: str) -> list[str]:
    code = _code_only(source)
    return [name for name, pattern in _NOT_ES5.items() if re.search(pattern, code)]


def test_snippet_fits_the_gzip_budget() -> None:
    size = len(gzip.compress(SNIPPET.read_bytes(), 9))
    assert size <= SNIPPET_GZIP_BUDGET, f"dedupkit.js is {size} B gzipped"


def test_snippet_fits_the_budget_measured_with_the_gzip_command() -> None:
    # GNU gzip compresses a few bytes worse than zlib: the contract says `gzip -9`.
    if shutil.which("gzip") is None:
        pytest.skip("no gzip command")
    done = subprocess.run(["gzip", "-9c"], input=SNIPPET.read_bytes(), capture_output=True)
    size = len(done.stdout)
    assert size <= SNIPPET_GZIP_BUDGET, f"`gzip -9` makes dedupkit.js {size} B"


def test_stub_fits_the_raw_budget() -> None:
    size = len(STUB.read_bytes())
    assert size <= STUB_RAW_BUDGET, f"dedupkit-stub.js is {size} B"


@pytest.mark.parametrize("path", [SNIPPET, STUB], ids=lambda p: p.name)
def test_sources_are_es5(path: Path) -> None:
    assert _es5_violations(path.read_text(encoding="utf-8")) == []


def test_snippet_is_one_strict_iife() -> None:
    text = SNIPPET.read_text(encoding="utf-8").strip()
    assert re.match(r"\(function \([\w, ]*\) \{\s*'use strict';", text)
    assert text.endswith("})(window, document, location);")


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("var f = (a) => a;", ["arrow function"]),
        ("let a = 1;", ["let"]),
        ("const a = 1;", ["const"]),
        ("var s = `x`;", ["template literal"]),
        ("class A {}", ["class"]),
        ("f(...args);", ["spread or rest"]),
        ("for (var x of xs) {}", ["for-of"]),
        ("var x = 2 ** 3;", ["exponent operator"]),
        ("var s = 'let const => ` class ...'; // const x = () => 1", []),
        ("/* let a = `b` */ var r = /=>`/g, d = a / 2 / b;", []),
        ("var r = (/[/`]let/.exec(s) || [])[1];", []),
    ],
)
def test_es5_check_sees_code_not_literals(source: str, found: list[str]) -> None:
    assert _es5_violations(source) == found


@pytest.mark.parametrize("path", [SNIPPET, STUB], ids=lambda p: p.name)
def test_sources_parse(path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [node, "--check", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
