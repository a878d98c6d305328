"""The import graph of evoq_data + evoq_train (scripts/import_graph.py says what counts as an
import) has no cycle, the vote runners stand apart, and docs/architecture.md shows the graph
as measured."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)
_graph, _imports, _cycles = import_graph._graph, import_graph._imports, import_graph._cycles


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


def test_the_architecture_doc_shows_the_measured_graph():
    """Regenerate with `python scripts/import_graph.py --write` after an import changes rooms."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert import_graph.doc_block(text) == import_graph.render(import_graph.room_graph(_graph()))


def test_room_names():
    assert [import_graph.room(m) for m in ("evoq_data.votes.core", "evoq_data.demo",
                                           "evoq_train.evolve.run", "evoq_train.trainer")] \
        == ["votes", "demo", "evolve", "evoq_train"]
