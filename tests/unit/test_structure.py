"""The project's own modules import one way: no cycle, counting imports made inside
functions and for type checking only (a cycle there still ties two modules together)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines", "services")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of the project's modules (packages resolved to the module
    named, ``from a import b`` to ``a.b`` where that is a module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"
                           in modules else node.module for alias in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name
                      and modules[t].name != "__init__.py"}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_finder_sees_a_cycle_made_inside_a_function() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_projects_modules() -> None:
    graph = import_graph()
    assert "components.data.steps" in graph["components.data.ray_engine"]  # lazy ones count
    assert "components.data.ray_engine" in graph["components.data.prepare"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_nothing_imports_the_data_facade_back() -> None:
    """Engines and steps sit below ``prepare``; only the stage, the CLI, tests and
    benches call it."""
    graph = import_graph()
    users = {m for m, edges in graph.items() if "components.data.prepare" in edges}
    assert users <= {"components.data.stage", "pipelines.cli"}, users
