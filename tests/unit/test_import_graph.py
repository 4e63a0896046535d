"""gale's own modules import one another without cycles.

Every import counts, wherever it is written: at module level, inside functions
(imported late to save start-up time is still a dependency) and under
`TYPE_CHECKING`. An import names one module (`from pkg import mod` names
`pkg.mod` when that is a module, else `pkg`); the package `__init__` a dotted
import also runs is not counted, so a cycle reported here is one the code wrote.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gale_cli", "serving")


def module_files() -> dict[str, Path]:
    """Every module of gale's packages by dotted name."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The gale modules that `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    """Each gale module and the gale modules it imports."""
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that returns to its start, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            child = pending.pop()
            if child in on_path:
                return [*path[path.index(child) :], child]
            if child not in done:
                stack.append((child, sorted(graph[child])))
                path.append(child)
                on_path.add(child)
    return None


def test_the_walk_sees_the_imports() -> None:
    graph = import_graph()
    assert "serving.engines.factory" in graph
    # A module-level, a function-level and a TYPE_CHECKING import, each seen.
    assert "serving.engines.base" in graph["serving.engines.transformers_engine"]
    assert "serving.engines.vllm_engine" in graph["serving.engines.factory"]
    assert "serving.catalog" in graph["serving.engines.vllm_settings"]


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", ["serving", "gale_cli"])
def test_no_import_cycles(package: str) -> None:
    graph = {
        name: {target for target in targets if target.partition(".")[0] == package}
        for name, targets in import_graph().items()
        if name.partition(".")[0] == package
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_serving_imports_nothing_of_the_cli() -> None:
    # Layers point down (gale_cli -> serving), so no cycle can cross the two packages.
    leaks = {
        name: targets
        for name, targets in import_graph().items()
        if name.startswith("serving") and any(t.startswith("gale_cli") for t in targets)
    }
    assert leaks == {}


def test_the_engine_interface_imports_no_engine() -> None:
    assert import_graph()["serving.engines.base"] == {"serving.engines.errors"}
