"""The package's layout: wings that import only downward, and no import cycle.

Every module belongs to a wing (a folder) or to the core files beside them; a module may import
its own wing and the wings below it, never one above, even inside a function. The order, lowest
first, is :data:`LAYERS`; ARCHITECTURE.md draws the same picture in words.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dedupkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, name: str, modules: set[str], *, is_package: bool = False) -> set[str]:
    """The package modules module ``name`` imports anywhere in ``source``, functions included."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # "from .outbox import base" imports the submodule when there is one; "from . import
            # logs" imports dedupkit.logs, not the package's face.
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            named = [s for s in submodules if s in modules]
            targets = named if named and len(named) == len(submodules) else [base, *named]
        else:
            continue
        for target in targets:
            # "dedupkit.outbox.base.Claimed" is the module dedupkit.outbox.base.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {
        module_name(p): imports_of(
            p.read_text(), module_name(p), modules, is_package=p.name == "__init__.py"
        )
        for p in paths
    }
    # Importing a submodule runs its package's __init__ first; that edge is not a cycle.
    return {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or ``None``."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_function_level_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    source = "def f():\n    from .extension import DedupKit\n"
    modules = {"dedupkit", "dedupkit.extension", "dedupkit.cli"}
    assert imports_of(source, "dedupkit.cli", modules) == {"dedupkit.extension"}


@pytest.mark.parametrize("lower", ["dedupkit.state", "dedupkit.intake.record", "dedupkit.settings"])
def test_lower_floors_never_import_the_face(lower: str) -> None:
    graph = import_graph()
    seen: set[str] = set()
    todo = [lower]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    assert "dedupkit.extension" not in seen


#: The wings and core files, lowest first: each may import only its own row or rows above it.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(f"dedupkit.{name}" if name else "dedupkit" for name in row.split())
    for row in (
        "errors signals vocabulary logs spec redaction",
        "event",
        "settings signing ratelimit queue_url",
        "outbox",
        "delivery",
        "state",
        "intake",
        "ledger",
        "web",
        "extension cli",
    )
)
#: The face (``dedupkit/__init__.py``) re-exports from anywhere; the test double sits beside
#: the package, and nothing in it imports the double.
FACE = "dedupkit"
TESTING = "dedupkit.testing"


def wing_of(module: str) -> str:
    """The wing or core file ``module`` belongs to: its longest prefix named in LAYERS."""
    names = {name for row in LAYERS for name in row} | {TESTING}
    candidate = module
    while candidate and candidate not in names:
        candidate = candidate.rpartition(".")[0]
    if not candidate:
        raise AssertionError(f"{module} belongs to no wing: add it to one, or to LAYERS")
    return candidate


def rank_of(wing: str) -> int:
    return next(i for i, row in enumerate(LAYERS) if wing in row)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs from a lower wing to a higher one, as ``a -> b`` lines."""
    found = []
    for module, targets in sorted(graph.items()):
        if module == FACE:
            continue
        wing = wing_of(module)
        for target in sorted(targets):
            if target == FACE:
                found.append(f"{module} -> {target} (the face is imported by no module)")
                continue
            other = wing_of(target)
            if other == TESTING and wing != TESTING:
                found.append(f"{module} -> {target} (the package never imports its test double)")
            elif TESTING not in (wing, other) and rank_of(other) > rank_of(wing):
                found.append(f"{module} -> {target} ({other} is above {wing})")
    return found


def test_every_module_belongs_to_a_wing() -> None:
    for module in import_graph():
        if module != FACE:
            wing_of(module)


def test_imports_run_only_downward_through_the_wings() -> None:
    assert upward_imports(import_graph()) == []


def test_the_wing_rule_catches_an_upward_import() -> None:
    graph = {"dedupkit.event.model": {"dedupkit.intake.visitor"}, "dedupkit.web.blueprint": set()}
    assert upward_imports(graph) == [
        "dedupkit.event.model -> dedupkit.intake.visitor (dedupkit.intake is above dedupkit.event)"
    ]
    assert upward_imports({"dedupkit.delivery.sender": {"dedupkit.testing.fake"}})


def test_wings_are_folders() -> None:
    for row in LAYERS[1:]:
        for wing in row:
            path = PACKAGE.parent / wing.replace(".", "/")
            assert path.is_dir() or path.with_suffix(".py").is_file(), wing
