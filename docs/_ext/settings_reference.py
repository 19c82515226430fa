"""The ``dedupkit-settings`` directive: the configuration reference, read from the code.

Every field of :class:`dedupkit.settings.Settings` that is a config key becomes one
``confval`` entry, written as MyST markdown (the directive is used from markdown pages): its
``DEDUPKIT_*`` name, type, default and the ``#:`` comment above the field. A field without
such a comment is a warning, which ``make docs`` (``-W``) turns into a failed build: a new
setting cannot ship undocumented, and no hand-written table can drift.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

MODULE = "dedupkit.settings"
#: Type aliases of the settings module, spelt out for a reader who never opens it.
ALIASES = {"Guard": "bool | Callable[[Request], bool]"}


def field_docs() -> dict[str, str]:
    """The ``#:`` comment (or docstring) of each ``Settings`` field, by field name."""
    analyzer = ModuleAnalyzer.for_module(MODULE)
    analyzer.analyze()
    return {
        name: "\n".join(lines).strip()
        for (scope, name), lines in analyzer.attr_docs.items()
        if scope == "Settings"
    }


def shown_type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    for alias, spelt in ALIASES.items():
        text = re.sub(rf"\b{alias}\b", spelt, text)
    return text


def shown_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) if value else "()"
    return repr(value)


def summary(doc: str) -> str:
    """The first sentence of ``doc``, on one line, fit for a table cell."""
    text = " ".join(doc.split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return (text[: end.start()] if end else text).replace("|", "\\|")


class SettingsReference(SphinxDirective):
    """``.. dedupkit-settings::`` — a summary table, then one ``confval`` per setting, in the
    order of the class."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from dedupkit import settings

        # Rebuilt when the settings or this extension change, not only the page.
        self.env.note_dependency(settings.__file__)
        self.env.note_dependency(__file__)
        docs = field_docs()
        fields = {f.name: f for f in dataclasses.fields(settings.Settings)}
        lines = ["| setting | default | meaning |", "| --- | --- | --- |"]
        entries: list[str] = []
        for key, name in settings.KEYS.items():
            doc = docs.get(name)
            if not doc:
                logger.warning(
                    "Settings.%s has no '#:' comment in dedupkit/settings.py: say what "
                    "DEDUPKIT_%s does there, the configuration reference is built from it",
                    name,
                    key,
                    location=(self.env.docname, self.lineno),
                )
                doc = "(undocumented)"
            default = shown_default(settings.DEFAULTS[key])
            lines.append(
                f"| {{confval}}`{settings.PREFIX}{key}` | `{default}` | {summary(doc)} |".replace(
                    "``", "`"
                )
            )
            entries += [
                f":::{{confval}} {settings.PREFIX}{key}",
                f":type: `{shown_type(fields[name].type)}`",
                f":default: `{default}`",
                "",
                *doc.splitlines(),
                ":::",
                "",
            ]
        lines += ["", *entries]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=settings.__file__), container)
        return list(container.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("dedupkit-settings", SettingsReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
