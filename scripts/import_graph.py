"""The import graph of evoq_data + evoq_train, measured from the source (never executed).

    python scripts/import_graph.py            # print the rooms' graph (as docs/architecture.md shows it)
    python scripts/import_graph.py --write    # rewrite that block of docs/architecture.md
    python scripts/import_graph.py --modules  # every module's imports

What counts as an import of module A by module B: every ``import`` / ``from ... import``
statement in B's source that names A (parsed with ``ast``), wherever it stands: at module
level, under ``if TYPE_CHECKING:``, or deferred inside a function. A deferred import only
postpones a cycle to the first call, and a type-only one still ties the two modules' designs
together, so both count. ``from pkg import name`` imports the module ``pkg.name`` when there
is one, else ``pkg`` itself. The parent packages that Python initialises on the way
(``import a.b.c`` runs ``a/__init__.py``) are not edges: a package that re-exports its
submodules is not in a cycle with them.

A *room* is what docs/architecture.md names: a subpackage of evoq_data (``votes``), a
top-level module of evoq_data (``demo``, ``load``), ``evoq_train`` (the training plane, less
evolve) and ``evolve``. tests/test_imports.py checks that the graph has no cycle and that the
block in docs/architecture.md is this script's output.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

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



def room(module: str) -> str:
    """The room of a module: ``evoq_data.votes.core`` -> ``votes``; ``evoq_train.evolve.run``
    -> ``evolve``; ``evoq_train.trainer`` -> ``evoq_train``."""
    parts = module.split(".")
    if parts[0] == "evoq_train":
        return "evolve" if parts[1:2] == ["evolve"] else "evoq_train"
    return parts[1] if len(parts) > 1 else "evoq_data"


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        mine = room(module)
        rooms.setdefault(mine, set()).update(room(t) for t in targets if room(t) != mine)
    return rooms


BEGIN, END = "<!-- import-graph: begin (scripts/import_graph.py --write) -->", "<!-- import-graph: end -->"


def render(rooms: dict[str, set[str]]) -> str:
    width = max(len(name) for name in rooms)
    lines = [f"{name.ljust(width)} ──> {', '.join(sorted(rooms[name])) or '(nothing of evoq)'}"
             for name in sorted(rooms)]
    return "```\n" + "\n".join(lines) + "\n```"


def doc_block(text: str) -> str | None:
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/architecture.md's block")
    parser.add_argument("--modules", action="store_true", help="print every module's imports")
    args = parser.parse_args(argv)
    graph = _graph()
    if args.modules:
        for name in sorted(graph):
            print(f"{name}: {', '.join(sorted(graph[name]))}")
        return 0
    block = render(room_graph(graph))
    if not args.write:
        print(block)
        return 0
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text(encoding="utf-8")
    if doc_block(text) is None:
        print(f"{doc}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
