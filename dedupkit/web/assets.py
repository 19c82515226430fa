"""The browser files dedupkit serves and inlines, from the wheel or from a source checkout.

``static/`` holds readable sources (``dedupkit.js``, ``dedupkit-stub.js``) and what is shipped:
their minified twins (``*.min.js``), made by ``make minify`` with :func:`minify`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

#: Readable source -> the minified file that is served or inlined.
MINIFIED = {
    "dedupkit.js": "dedupkit.min.js",
    "dedupkit-stub.js": "dedupkit-stub.min.js",
}

_SOURCE_DIR = Path(__file__).resolve().parents[2] / "static"


def static_file(name: str) -> bytes:
    """The bytes of ``static/<name>``.

    An installed wheel carries the files inside the package; in a source checkout they live
    in the top-level ``static/`` folder, their one source.
    """
    packaged = resources.files("dedupkit").joinpath("static").joinpath(name)
    if packaged.is_file():
        return packaged.read_bytes()
    return (_SOURCE_DIR / name).read_bytes()


@lru_cache(maxsize=1)
def snippet() -> tuple[bytes, str]:
    """The served snippet's bytes and a short hash of them (its ETag and cache-busting version)."""
    data = static_file(MINIFIED["dedupkit.js"])
    return data, hashlib.sha256(data).hexdigest()[:16]


@lru_cache(maxsize=1)
def queue_stub() -> str:
    """The inline stub that queues ``dedupkit`` calls made before the snippet loads."""
    return static_file(MINIFIED["dedupkit-stub.js"]).decode("utf-8").strip()


def minify(source: str) -> str:
    """``source`` minified: comments and spaces gone, local names shortened.

    Build-time only (``make minify`` and the test that the shipped bytes are its output); needs
    ``calmjs.parse`` from requirements-dev.txt. rjsmin keeps names as they are, and the readable
    source's full names then do not fit the snippet's gzip budget.
    """
    from calmjs.parse import es5  # type: ignore[import-untyped]
    from calmjs.parse.unparsers.es5 import minify_print  # type: ignore[import-untyped]

    # Globals keep their names: the page and the stub reach the snippet through them.
    return str(minify_print(es5(source), obfuscate=True, obfuscate_globals=False)) + "\n"


def write_minified(folder: Path = _SOURCE_DIR) -> list[Path]:
    """Write every ``*.min.js`` in ``folder`` from its readable source; the paths written."""
    written = []
    for source, target in MINIFIED.items():
        path = folder / target
        path.write_text(minify((folder / source).read_text("utf-8")), "utf-8")
        written.append(path)
    return written
