"""Every dvc.yaml stage lists, among its deps, each dml module its script imports (read from
the source, function-level imports included, transitively): a changed module re-runs every
stage that runs its code."""

from __future__ import annotations


import pytest
import yaml

from .imports import REPO, dml_closure

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_hold_every_imported_module(stage):
    body = STAGES[stage].get("do", STAGES[stage])
    script = next(word for word in body["cmd"].split() if word.startswith("pipelines/"))
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body["deps"]]
    assert script in deps
    missing = sorted(str(p.relative_to(REPO)) for p in dml_closure(REPO / script)
                     if not covered(str(p.relative_to(REPO)), deps))
    assert not missing, f"{stage}: add to its deps in dvc.yaml: {missing}"


def test_the_closure_follows_function_level_imports(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def main():\n    from dml.checks import check_run\n")
    found = {str(p.relative_to(REPO)) for p in dml_closure(script)}
    assert {"dml/checks.py", "dml/losses/base.py", "dml/evaluate/protocols.py"} <= found
