"""Every dvc.yaml stage depends on its script's code fingerprint (the code stage writes it), and
the fingerprint holds each dml module the script imports (read from the source, function-level
imports included, transitively): a changed module re-runs every stage that runs its code, and
no other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dml.pipeline.code_fingerprint import ROOT, code_fingerprint, dml_closure, source_root

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE = STAGES["code"]


def script_of(stage: str) -> str:
    body = STAGES[stage].get("do", STAGES[stage])
    return next(word for word in body["cmd"].split() if word.startswith("pipelines/"))


def deps_of(stage: str) -> list[str]:
    body = STAGES[stage].get("do", STAGES[stage])
    return [d if isinstance(d, str) else next(iter(d)) for d in body["deps"]]


@pytest.mark.parametrize("stage", sorted(set(STAGES) - {"check", "code"}))
def test_each_stage_depends_on_its_scripts_fingerprint_alone(stage):
    script = script_of(stage)
    deps = deps_of(stage)
    assert f"data/code/{Path(script).stem}.json" in deps
    assert not [d for d in deps if d.startswith(("dml", "pipelines/"))], \
        f"{stage}: the code fingerprint replaces its script and dml modules in its deps"
    assert script in CODE["cmd"].split(), f"the code stage must fingerprint {script}"
    assert {f"data/code/{Path(script).stem}.json": {"cache": False}} in CODE["outs"]


def test_check_depends_on_the_whole_package():
    assert {"pipelines/check.py", "dml"} <= set(deps_of("check"))


def test_the_fingerprint_holds_the_script_and_every_module_it_imports(monkeypatch):
    monkeypatch.chdir(ROOT)
    fingerprint = code_fingerprint(Path("pipelines/train.py"))
    expected = {"pipelines/train.py"} | {str(p.relative_to(ROOT)) for p in dml_closure(ROOT / "pipelines/train.py")}
    assert set(fingerprint) == expected
    assert {"dml/losses/cross_scale.py", "dml/data/samplers.py", "dml/train/loop.py"} <= set(fingerprint)
    assert not [f for f in fingerprint if f.startswith("dml/report/")]  # training does not run the report's code


def test_the_closure_follows_function_level_imports(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def main():\n    from dml.checks import check_run\n")
    found = {str(p.relative_to(ROOT)) for p in dml_closure(script)}
    assert {"dml/checks.py", "dml/losses/base.py", "dml/evaluate/protocols.py"} <= found


def test_an_edited_module_changes_the_fingerprints_of_the_scripts_that_import_it(tmp_path):
    package = tmp_path / "dml"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("X = 1\n")
    (package / "c.py").write_text("Y = 1\n")
    script = tmp_path / "run.py"
    script.write_text("import dml.a\n")
    before = code_fingerprint(script, root=tmp_path)
    assert set(before) == {str(script), "dml/__init__.py", "dml/a.py", "dml/b.py"}
    (package / "c.py").write_text("Y = 2\n")
    assert code_fingerprint(script, root=tmp_path) == before
    (package / "b.py").write_text("X = 2\n")
    assert code_fingerprint(script, root=tmp_path) != before


def test_the_checkout_in_the_working_directory_is_what_is_fingerprinted(tmp_path, monkeypatch):
    """A stage may import the installed package while the project's checkout is elsewhere
    (or edited): the fingerprint follows the checkout's sources, as DVC's deps did."""
    (tmp_path / "dml").mkdir()
    (tmp_path / "dml" / "__init__.py").write_text("# the checkout's own copy\n")
    (tmp_path / "run.py").write_text("import dml\n")
    monkeypatch.chdir(tmp_path)
    assert source_root() == tmp_path
    assert code_fingerprint(Path("run.py"))["dml/__init__.py"] == code_fingerprint(Path("run.py"), root=tmp_path)["dml/__init__.py"]
    monkeypatch.chdir(tmp_path / "dml")
    assert source_root() == ROOT


def test_no_stage_is_always_changed_so_dvc_status_can_be_clean():
    assert not [name for name, body in STAGES.items() if body.get("do", body).get("always_changed")]
    assert set(deps_of("code")) == {"dml", "pipelines"}  # made again after an edit, only then
    # a dataset's files are a dependency of its ingest: its root, in the repository or not
    assert "${item.options.root}" in deps_of("ingest")
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored  # bytecode written at run time is no edit


def test_every_dataset_names_the_root_dvc_watches():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, dataset in params["datasets"].items():
        assert (ROOT / dataset["options"]["root"]).exists(), name
