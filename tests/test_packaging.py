"""The distribution: its name, licence and one version, and a wheel that serves the snippet."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import dedupkit

ROOT = Path(__file__).resolve().parent.parent
#: The version the snippet reports (``dedupkit.v`` in the browser).
SNIPPET_VERSION = re.compile(r"""\bv\s*:\s*['"]([^'"]+)['"]""")

SERVE_SNIPPET = """
import sys, dedupkit
from flask import Flask
assert dedupkit.__file__.startswith(sys.argv[2]), dedupkit.__file__
app = Flask("shop")
app.config.update(DEDUPKIT_ENABLED=False, DEDUPKIT_QUEUE_URL="sqlite:///" + sys.argv[1])
dedupkit.DedupKit(app)
response = app.test_client().get("/dedupkit/dedupkit.js")
assert response.status_code == 200, response.status_code
sys.stdout.write(response.get_data(as_text=True))
"""


def test_the_snippet_carries_the_package_version() -> None:
    for name in ("dedupkit.js", "dedupkit.min.js"):
        versions = SNIPPET_VERSION.findall((ROOT / "static" / name).read_text("utf-8"))
        assert versions == [dedupkit.__version__], f"static/{name}: {versions}"


def test_the_installed_wheel_is_flask_dedupkit_and_serves_the_snippet(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--sdist",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    version = dedupkit.__version__
    [wheel] = dist.glob("flask_dedupkit-*.whl")
    assert wheel.name == f"flask_dedupkit-{version}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    info = f"flask_dedupkit-{version}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    metadata = Parser().parsestr(zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode())
    assert (metadata["Name"], metadata["Version"]) == ("flask-dedupkit", version)
    assert metadata["License-Expression"] == "MIT"
    assert {"redis", "testing", "metrics"} <= set(metadata.get_all("Provides-Extra") or ())
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "dedupkit = dedupkit.cli:cli" in entry_points
    [sdist] = dist.glob("flask_dedupkit-*.tar.gz")
    with tarfile.open(sdist) as archive:
        sdist_names = archive.getnames()
    for name in ("LICENSE", "CHANGELOG.md", "README.md"):
        assert f"flask_dedupkit-{version}/{name}" in sdist_names
    assert "dedupkit/static/dedupkit.js" in names
    assert "dedupkit/static/dedupkit-stub.js" in names
    assert "dedupkit/py.typed" in names
    assert "dedupkit/templates/dedupkit/debug.html" in names
    assert "dedupkit/testing/core.js" in names
    assert "dedupkit/spec/pinterest-capi-v5-events.schema.json" in names

    # A fresh venv holding only the wheel; dependencies are borrowed from the test
    # environment through a .pth file, placed after the venv's own site-packages.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, str(wheel)],
        check=True,
        capture_output=True,
    )
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "zz_test_deps.pth").write_text("\n".join(borrowed))
    served = subprocess.run(
        [str(python), "-c", SERVE_SNIPPET, str(tmp_path / "o.sqlite3"), site],
        cwd=tmp_path,  # not the repo: its dedupkit/ must not be importable
        check=True,
        capture_output=True,
        text=True,
    )
    # What is served is the minified twin (dedupkit.web.assets).
    assert served.stdout == (ROOT / "static" / "dedupkit.min.js").read_text("utf-8")
