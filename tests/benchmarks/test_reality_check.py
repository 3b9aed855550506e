"""The reality check's runner: the params it writes, its comparisons and verdicts, its package
check, and ``--quick`` through the real pipeline and the peer on a tiny clip-art tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

import reality_check as rc  # benchmarks/ is on sys.path: tests/benchmarks/conftest.py
from real_sets.common import BuiltSet

from dml.checks import check_params
from dml.config import parse_params

REPO = Path(__file__).resolve().parents[2]


def built(name: str, **kw) -> BuiltSet:
    defaults = {"source": "folder", "options": {"root": f"/w/sets/{name}/images"},
                "split": {"method": "random", "test_fraction": 0.5, "num_folds": 3, "seed": 0},
                "protocol": {"name": "self_retrieval"}}
    return BuiltSet(name=name, **(defaults | kw))


SETS = [
    built("clipart", options={"root": "/w/sets/clipart/images", "folder_scales": ["coarse", "fine"]},
          scales=["fine", "coarse"]),
    built("wesnoth_units", options={"root": "/w/sets/wesnoth_units/images",
                                    "annotations_csv": "/w/sets/wesnoth_units/images/annotations.csv"},
          scales=["fine", "line", "race"], attributes=["lawful", "chaotic"]),
    built("card_hands", source="coco", options={"root": "/w/sets/card_hands"},
          split={"method": "random", "test_fraction": 0.5, "query_fraction": 0.25, "num_folds": 3, "seed": 0},
          protocol={"name": "multilabel", "map_ks": [100], "ndcg_ks": [10, 100]}),
]


@pytest.fixture(scope="module")
def params() -> dict:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return rc.suite_params(base, SETS, Path("/w"), [0, 1, 2])


def test_every_experiment_of_the_plan_on_its_set(params):
    names = set(params["experiments"])
    expected = {f"{s.name}__{e}" for s in SETS for e in rc.PLAN[s.name]}
    assert names == expected
    assert all(exp["dataset"] == name.split("__")[0] for name, exp in params["experiments"].items())
    assert params["seeds"] == [0, 1, 2] and params["tune"]["trials"] == 0
    assert not any("search" in exp for exp in params["experiments"].values())


def test_paths_are_relative_to_the_project_so_dvc_tracks_them(params):
    assert params["datasets"]["clipart"]["options"] == {"root": "sets/clipart/images",
                                                        "folder_scales": ["coarse", "fine"]}
    assert params["datasets"]["wesnoth_units"]["options"]["annotations_csv"] == \
        "sets/wesnoth_units/images/annotations.csv"


def test_baselines_point_at_the_same_set_and_csl_margins_at_its_scales(params):
    exps = params["experiments"]
    assert exps["wesnoth_units__sgml"]["baseline"] == "wesnoth_units__binomial"
    assert exps["clipart__ecaml_ms"]["baseline"] == "clipart__multi_similarity"
    assert exps["clipart__csl"]["baseline"] == ["clipart__fine_only", "clipart__per_scale_proxy"]
    assert exps["wesnoth_units__csl"]["loss"]["margins"] == {"fine": 0.25, "line": 0.35, "race": 0.45}
    assert exps["clipart__per_scale_proxy"]["loss"]["margins"] == {"fine": 0.25, "coarse": 0.35}
    assert exps["clipart__fine_only"]["loss"]["margins"] == {"fine": 0.25}
    assert exps["card_hands__jaccard_softpq"]["baseline"] == "card_hands__jaccard_adaptive"


def test_the_variants_change_only_what_they_name(params):
    exps = params["experiments"]
    recipe, tuned, scratch = (exps[f"clipart__multi_similarity{s}"] for s in ("", "_finetune", "_scratch"))
    assert tuned["loss"] == scratch["loss"] == recipe["loss"]
    assert tuned["train"]["freeze"] == 5 and "weights" not in tuned.get("model", {})
    assert scratch["model"]["weights"] is None and scratch["train"]["freeze"] == 0


def test_the_generated_params_pass_the_project_s_own_check(params):
    # the check needs the sets' files only at ingest: every experiment builds on stand-in data
    check_params(parse_params(params))


def test_comparisons_follow_the_baselines_and_the_extra_pairs(params):
    pairs = rc.comparisons(params["experiments"])
    assert ("clipart__csl", "clipart__per_scale_proxy") in pairs
    assert ("card_hands__jaccard_adaptive", "card_hands__cosine_adaptive") in pairs
    assert ("card_hands__jaccard_adaptive", "card_hands__triplet_fixed") in pairs
    assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize(("method", "baseline", "verdict"), [
    ({0: 0.50, 1: 0.52, 2: 0.51}, {0: 0.40, 1: 0.41, 2: 0.42}, "gain"),
    ({0: 0.30, 1: 0.31, 2: 0.29}, {0: 0.40, 1: 0.41, 2: 0.42}, "loss"),
    ({0: 0.50, 1: 0.40, 2: 0.45}, {0: 0.45, 1: 0.45, 2: 0.45}, "no difference shown"),
    ({0: 0.50}, {0: 0.45}, "one seed: no interval"),
    ({}, {0: 0.45}, "not run"),
])
def test_verdicts(method, baseline, verdict):
    assert rc.fmt_difference(method, baseline)[1] == verdict


def test_a_gap_that_shrinks_is_named_so():
    seen_minus_unseen = ({0: 0.10, 1: 0.11, 2: 0.12}, {0: 0.20, 1: 0.22, 2: 0.21})
    assert rc.fmt_difference(*seen_minus_unseen, verdicts=("larger gap", "smaller gap"))[1] == "smaller gap"


def test_a_difference_is_the_paired_mean_with_its_t_interval():
    text, _ = rc.fmt_difference({0: 0.50, 1: 0.52, 2: 0.51}, {0: 0.40, 1: 0.41, 2: 0.42})
    # differences 10, 11, 9 points: mean 10, t(0.975, 2) = 4.303, sd 1 / sqrt(3)
    assert text == "+10.0 [+7.5, +12.5]"
    assert rc.fmt_estimate([0.1, 0.2, 0.3]) == "20.0 ± 24.8"
    assert rc.fmt_estimate([0.123]) == "12.3" and rc.fmt_estimate([]) == "–"


def test_stage_seconds_add_up_per_experiment():
    seconds = {"check": 1.0, "ingest@clipart": 5.0, "tune@clipart__csl": 2.0,
               "train@clipart__csl-0": 10.0, "train@clipart__csl-1": 12.0, "embed@clipart__csl-0": 3.0,
               "evaluate@clipart__csl-0": 1.0, "train@cards__sgml-0": 7.0}
    assert rc.experiment_seconds(seconds) == {"clipart__csl": 28.0, "cards__sgml": 7.0}


def test_missing_packages_get_one_line_saying_why(monkeypatch, tmp_path):
    class Fake:
        PACKAGE, DEFAULT_SOURCE, __name__ = "openclipart-png", tmp_path / "absent", "real_sets.fake"

    with pytest.raises(SystemExit, match=r"^missing packages openclipart-png \(--no-install given\)$"):
        rc.ensure_packages([Fake], install=False)
    monkeypatch.setattr(rc.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match=r"^cannot install openclipart-png: no apt-get on this machine$"):
        rc.ensure_packages([Fake], install=True)
    monkeypatch.setattr(rc.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(rc.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match=r"^cannot install openclipart-png: not root; "):
        rc.ensure_packages([Fake], install=True)
    present = type("Present", (), {"PACKAGE": "x", "DEFAULT_SOURCE": tmp_path, "__name__": "real_sets.x"})
    rc.ensure_packages([present], install=False)   # nothing missing: nothing to do


def clipart_tree(root: Path) -> None:
    """A tiny tree in openclipart-png's layout: top folders, leaf folders of drawings."""
    rng = np.random.default_rng(0)
    leaves = [f"{top}/{leaf}" for top in ("animals", "buildings", "food")
              for leaf in ("a", "b", "c", "d")]
    for c, leaf in enumerate(leaves):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        for i in range(20):
            image = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
            draw = ImageDraw.Draw(image)
            x, y = (int(v) for v in rng.integers(4, 20, 2))
            shape = draw.ellipse if c % 2 else draw.rectangle
            shape([x, y, x + 8 + i, y + 6 + c], fill=colour + (255,))   # every image distinct
            path = root / leaf / f"{leaf.replace('/', '_')}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)


def test_quick_runs_the_real_pipeline_and_the_peer_and_writes_the_report(tmp_path):
    tree = tmp_path / "openclipart"
    clipart_tree(tree)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["train"]["epochs"] = 2                      # the path, not the figures, is tested here
    for exp in base["experiments"].values():
        if exp.get("train", {}).get("epochs"):
            exp["train"]["epochs"] = min(exp["train"]["epochs"], 2)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(base))
    out = tmp_path / "reality_check.md"
    cmd = [sys.executable, str(REPO / "benchmarks" / "reality_check.py"), "--quick", "--sets", "clipart",
           "--source", f"openclipart={tree}", "--no-install", "--params", str(params_path),
           "--work", str(tmp_path / "work"), "--out", str(out)]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert "| clipart | `openclipart-png` | self_retrieval | 12 |" in text
    recipe = text.split("### clipart")[1].split("\n## ")[0]
    for row in ("raw pixels", "random trunk", "frozen ImageNet features", "**the default recipe**",
                "recipe, trunk fine-tuned", "recipe from scratch", "peer (PML) from ImageNet",
                "peer (PML) from scratch"):
        cells = re.search(rf"^\| {re.escape(row)} \| ([0-9.]+) \| ([0-9.]+) \|", recipe, re.M)
        assert cells, (row, recipe)
        assert all(0 <= float(v) <= 100 for v in cells.groups())
    for pair in ("| clipart | ecaml | binomial | map@r |", "| clipart | ecaml_ms | multi_similarity | map@r |",
                 "| clipart | csl | fine_only | avg/map |", "| clipart | csl | per_scale_proxy | avg/asi |",
                 "| clipart | ecaml | binomial | seen − unseen MAP@R |"):
        assert pair in text and "one seed: no interval" in text.split(pair)[1].splitlines()[0]
    assert "## Cost" in text and "### clipart · per_scale" in text
    assert "## Codes on multi-object images" not in text          # no multi-object set here
    assert "  train clipart__csl: 2 epochs" in done.stdout and "wrote" in done.stdout.splitlines()[-1]
    assert "  evaluate clipart__csl seed 0: " in done.stdout
    # a second run re-runs nothing: the set, the pipeline and the peer are reused
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    work_lines = [line for line in again.stdout.splitlines()
                  if line.startswith(("building ", "  train ", "  evaluate ", "  peer "))]
    assert work_lines == [], again.stdout[-3000:]
