"""The browser files dedupkit serves and inlines, from the wheel or from a source checkout."""

from __future__ import annotations

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
