"""Sphinx configuration of the dedupkit documentation (``make docs``)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sphinx.application import Sphinx

import dedupkit

HERE = Path(__file__).resolve().parent
# The local extension that writes the configuration reference from dedupkit.settings.
sys.path.insert(0, str(HERE / "_ext"))

project = "dedupkit"
author = "dedupkit contributors"
copyright = "dedupkit contributors"
release = version = dedupkit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "settings_reference",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The docstrings are the API reference: as written, in source order, typed from the hints.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"dedupkit {release}"
html_static_path: list[str] = []


def _not_an_empty_topics_glob(record: logging.LogRecord) -> bool:
    return getattr(record, "subtype", None) != "empty_glob"


def setup(app: Sphinx) -> None:
    # The topic pages (docs/topics/*.md) are written alongside the guide: the build passes
    # without them. Sphinx gives this warning no type, so suppress_warnings cannot name it.
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_not_an_empty_topics_glob)
