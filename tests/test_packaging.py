"""The wheel carries the snippet: an installed dedupkit serves it without the source tree."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def test_the_installed_wheel_serves_the_snippet(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    [wheel] = dist.glob("dedupkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
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
    assert served.stdout == (ROOT / "static" / "dedupkit.js").read_text("utf-8")
