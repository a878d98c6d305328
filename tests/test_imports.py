"""The import graph of evoq_data + evoq_train has no cycle, and the vote runners stand apart.

What counts as an import of module A by module B: every ``import`` / ``from ... import``
statement in B's source that names A (parsed with ``ast``, never executed), wherever it
stands: at module level, under ``if TYPE_CHECKING:``, or deferred inside a function. A
deferred import only postpones a cycle to the first call, and a type-only one still ties the
two modules' designs together, so both count. ``from pkg import name`` imports the module
``pkg.name`` when there is one, else ``pkg`` itself. The parent packages that Python
initialises on the way (``import a.b.c`` runs ``a/__init__.py``) are not edges: a package
that re-exports its submodules is not in a cycle with them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("evoq_data", "evoq_train")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` (at ``path``) imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # `import a.b.func`: the module a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package holding this module
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                add(full if full in modules else source)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_deferred_and_relative_imports_are_edges(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n    return b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    import pkg.a\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_packages_have_no_import_cycle():
    graph = _graph()
    assert len(graph) > 50 and "evoq_data.votes.run" in graph
    assert _cycles(graph) == []


@pytest.mark.parametrize("module, never", [
    ("evoq_data.votes.local", {"evoq_data.votes.ray", "evoq_data.votes.run"}),
    ("evoq_data.votes.ray", {"evoq_data.votes.local", "evoq_data.votes.run"}),
    ("evoq_data.votes.core", {"evoq_data.votes.local", "evoq_data.votes.ray",
                              "evoq_data.votes.run"}),
    ("evoq_data.votes.plan", {"evoq_data.votes.local", "evoq_data.votes.ray",
                              "evoq_data.votes.run", "evoq_data.votes.core"}),
])
def test_the_vote_runners_never_import_each_other(module, never):
    """Two runners, one core: the core knows no runner, and no runner knows the other."""
    graph = _graph()
    reach, todo = set(), [module]
    while todo:  # everything the module imports, directly or not
        for target in graph[todo.pop()]:
            if target not in reach:
                reach.add(target)
                todo.append(target)
    assert not reach & never
