"""The browser files dedupkit serves and inlines, from the wheel or from a source checkout."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path


def static_file(name: str) -> bytes:
    """The bytes of ``static/<name>``.

    An installed wheel carries the files inside the package; in a source checkout they live
    in the top-level ``static/`` folder, their one source.
    """
    packaged = resources.files("dedupkit").joinpath("static").joinpath(name)
    if packaged.is_file():
        return packaged.read_bytes()
    return (Path(__file__).resolve().parent.parent / "static" / name).read_bytes()


@lru_cache(maxsize=1)
def snippet() -> tuple[bytes, str]:
    """The served snippet's bytes and a short hash of them (its ETag and cache-busting version)."""
    data = static_file("dedupkit.js")
    return data, hashlib.sha256(data).hexdigest()[:16]
