"""axe-core, from its npm package (``tests/js``, installed by ``make test``), run in a page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .requirements import missing

AXE = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "axe-core" / "axe.min.js"
#: Impacts a page must not have.
BLOCKING = frozenset({"serious", "critical"})


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """The serious and critical axe-core violations of the page as it is now (WCAG 2.x A and
    AA rules and best practices), each with the selectors of its first nodes."""
    if not AXE.exists():
        missing("axe-core is not installed: `make tests/js/node_modules/.installed` runs npm ci")
    # Evaluated through the DevTools protocol, where the page's CSP (no scripts) does not
    # apply: a <script> tag would be refused.
    page.evaluate("() => {" + AXE.read_text("utf-8") + "\n}")
    result: dict[str, Any] = page.evaluate(
        """() => axe.run(document, {resultTypes: ['violations']})"""
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"][:3]],
        }
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]
