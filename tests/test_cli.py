"""The `dml` command: every user error is one line on stderr, exit status 2, no traceback;
every option has a help text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dml.embed import write_embeddings

REPO = Path(__file__).resolve().parents[1]


def dml(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dml.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_report_of_a_missing_table_in_the_project_says_how_to_make_it(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert one_line_error(dml("report", "--table", "nope", cwd=tmp_path)) == (
        "error: nope: no comparison table yet; run `make demo` or `dvc repro` first")


def test_report_outside_the_project_says_where_to_run_it(tmp_path):
    assert one_line_error(dml("report", cwd=tmp_path)) == (
        "error: results/comparison.md: no comparison table yet; run dml report in the project "
        "folder (where dvc.yaml is), or give --table")


def test_check_of_a_missing_params_file_names_it(tmp_path):
    assert one_line_error(dml("check", "--params", "nope.yaml", cwd=tmp_path)) == (
        "error: parameter file nope.yaml does not exist")


def test_evaluate_of_an_unknown_split_lists_the_splits_present(tmp_path):
    path = tmp_path / "e.parquet"
    columns = {"image_id": ["a", "b", "c", "d"], "label": [0, 0, 1, 1], "split": ["test"] * 4}
    write_embeddings(path, columns, np.eye(4, dtype=np.float32), model_hash="x")
    assert one_line_error(dml("evaluate", str(path), "--split", "nosuch", cwd=tmp_path)) == (
        f"error: {path}: no rows of split 'nosuch'; splits present: test")
    good = dml("evaluate", str(path), cwd=tmp_path)
    # np.eye: every score ties, so each query's one relevant item of three is first a third of the time
    assert good.returncode == 0 and '"recall@1": 0.333333333333333' in good.stdout


@pytest.mark.parametrize("command", ["check", "evaluate", "report", "run"])
def test_every_option_has_a_help_text(command):
    from dml.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"dml {command} {action.dest}: no help text"
