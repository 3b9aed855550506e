"""The library's import graph, read from the source: which modules import which.

A module that imports another which imports it back (directly or through others) can only
work by importing lazily inside a function, and cannot be read or changed alone. No module
of ``dml`` takes part in such a cycle, wherever the import sits (top level or in a function).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in its body; ``from p import m``
    counts as importing ``p.m`` where that is a module. A module's own parent packages are left
    out: Python imports them before the module anyway."""
    this = module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    parents = {this.rsplit(".", i)[0] for i in range(1, this.count(".") + 1)}
    return {name for name in found if name in known and name != this and name not in parents}


def graph(package: str) -> dict[str, set[str]]:
    files = sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def import_order(package: str, expected: set[str]) -> list[str]:
    """The modules of ``package`` (``expected`` among them), each after those it imports; the
    test fails naming a cycle where there is one."""
    edges = graph(package)
    assert expected <= set(edges)
    try:
        return list(TopologicalSorter(edges).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle in {package}: {' -> '.join(error.args[1])}")


def test_the_evaluation_package_has_no_import_cycle() -> None:
    order = import_order("dml.evaluate", {"dml.evaluate.kernels", "dml.evaluate.top_ranking", "dml.evaluate.engine"})
    assert order.index("dml.evaluate.kernels") < order.index("dml.evaluate.top_ranking")  # kernels come first


def test_the_library_has_no_import_cycle() -> None:
    order = import_order("dml", {"dml.train.launch", "dml.train.ray_trainer", "dml.pipeline.run_naming"})
    # run naming sits below both places that start a run
    assert order.index("dml.pipeline.run_naming") < order.index("dml.train.ray_trainer")
    assert order.index("dml.pipeline.run_naming") < order.index("dml.train.launch")


def test_the_graph_sees_a_cycle_through_a_lazy_import(tmp_path, monkeypatch) -> None:
    """The check itself: two modules importing each other, one of them inside a function."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import g\n")
    (package / "b.py").write_text("def g():\n    from pkg import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    with pytest.raises(CycleError):
        list(TopologicalSorter(graph("pkg")).static_order())
