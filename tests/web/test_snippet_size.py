"""The browser snippet stays within its size budget, stays ES5, and ships its minifier's output.

Budgets: the served snippet (dedupkit.min.js) at most 1.5 KB after ``gzip -9`` (the contract); the
inline stub that ``dedupkit.head()`` writes into every page (dedupkit-stub.min.js) at most 420 bytes
as it is.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dedupkit.web import assets

STATIC = Path(__file__).resolve().parents[2] / "static"
SOURCE = STATIC / "dedupkit.js"
SNIPPET = STATIC / "dedupkit.min.js"
STUB_SOURCE = STATIC / "dedupkit-stub.js"
STUB = STATIC / "dedupkit-stub.min.js"
ALL_FILES = [SOURCE, SNIPPET, STUB_SOURCE, STUB]

#: Bytes of ``static/dedupkit.min.js`` after gzip -9.
SNIPPET_GZIP_BUDGET = 1536
#: Bytes of ``static/dedupkit-stub.min.js`` as inlined.
STUB_RAW_BUDGET = 420

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


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_sources_are_es5(path: Path) -> None:
    assert _es5_violations(path.read_text(encoding="utf-8")) == []


def test_snippet_source_is_one_iife() -> None:
    text = re.sub(r"^/\*.*?\*/\s*", "", SOURCE.read_text(encoding="utf-8"), flags=re.S).strip()
    assert text.startswith("(function (window, document, location) {")
    assert text.endswith("})(window, document, location);")


@pytest.mark.parametrize(("source", "shipped"), [(SOURCE, SNIPPET), (STUB_SOURCE, STUB)])
def test_shipped_bytes_are_the_minifier_output_of_the_source(source: Path, shipped: Path) -> None:
    expected = assets.minify(source.read_text(encoding="utf-8"))
    assert shipped.read_text(encoding="utf-8") == expected, f"run `make minify` for {shipped.name}"


def test_the_minifier_shortens_local_names_and_keeps_globals() -> None:
    source = "(function (window) { var counter = window.pintrk; /* why */ counter(1); })(window);"
    minified = assets.minify(source)
    assert "counter" not in minified
    assert "why" not in minified
    assert minified.endswith("})(window);\n")
    assert "window.pintrk" not in minified  # the parameter is renamed too...
    assert ".pintrk" in minified  # ...but properties keep their names


def test_minifying_twice_gives_the_same_bytes() -> None:
    text = SOURCE.read_text(encoding="utf-8")
    assert assets.minify(text) == assets.minify(text)


def test_write_minified_writes_every_shipped_file(tmp_path: Path) -> None:
    for name in assets.MINIFIED:
        (tmp_path / name).write_bytes((STATIC / name).read_bytes())
    written = assets.write_minified(tmp_path)
    assert sorted(p.name for p in written) == sorted(assets.MINIFIED.values())
    for source, target in assets.MINIFIED.items():
        assert (tmp_path / target).read_bytes() == (STATIC / target).read_bytes(), source


def test_served_snippet_and_stub_are_the_minified_files() -> None:
    data, version = assets.snippet()
    assert data == SNIPPET.read_bytes()
    assert version == hashlib.sha256(data).hexdigest()[:16]
    assert assets.queue_stub() == STUB.read_text(encoding="utf-8").strip()


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


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
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
