"""The package's layout: no module imports one that imports it back, even inside a function."""

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
            # "from .outbox import base" imports the submodule when there is one.
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
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


@pytest.mark.parametrize("lower", ["dedupkit.state", "dedupkit.intake", "dedupkit.settings"])
def test_lower_floors_never_import_the_face(lower: str) -> None:
    graph = import_graph()
    seen, todo = set(), [lower]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    assert "dedupkit.extension" not in seen
