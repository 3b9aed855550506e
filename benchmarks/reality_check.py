"""The reality check: the project's own pipeline on real image sets built from Debian packages,
every method beside its baselines, the default recipe against the references and the peer.

    .venv/bin/python benchmarks/reality_check.py            # 3 seeds, within 2 hours on 2 cores
    .venv/bin/python benchmarks/reality_check.py --quick    # 1 seed, smaller sets, < 20 minutes

What it does, in order:

1. installs the packages that are missing (``apt-get``; one line saying why when it cannot:
   not root, no apt) and builds each set (``benchmarks/real_sets/``) into a scratch project
   under ``--work`` (default ``.scratch/reality_check``), kept between runs: a set is rebuilt
   only when its builder's code or options changed;
2. writes that project's ``params.yaml``: this checkout's params.yaml with its datasets
   replaced by the built sets and its experiments pointed at them (``<set>__<experiment>``,
   ``PLAN``), the same trunk, budget and seeds for a method and its baselines, and no search
   (``tune.trials: 0``): every figure is the recipe as params.yaml writes it;
3. runs ``dml run -- dvc repro`` there (this checkout's ``dml``, ``pipelines`` and
   ``dvc.yaml`` copied in: DVC re-runs only what a change touched) and times every stage;
4. runs the peer (pytorch-metric-learning, ``benchmarks/peer_pml.py``) on the zero-shot sets,
   from ImageNet weights and from scratch, at the recipe's trunk, image size, batch and epochs;
5. writes ``benchmarks/results/reality_check.md`` (``--out``): the sets, the recipe against the
   references and the peer, each method against each of its baselines (paired differences
   over seeds with 95% t intervals), what each run cost, and the pipeline's full comparison.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import inspect
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from real_sets import cards, openclipart, tuxpaint, wesnoth
from real_sets.common import BuiltSet

from dml.io import write_json_atomic, write_text_atomic
from dml.stats import paired_difference, t_interval

REPO = Path(__file__).resolve().parents[1]
BUILDERS = (openclipart, wesnoth, tuxpaint, cards)   # tuxpaint reads the clip art too
PROJECT_FILES = ("dvc.yaml", "pipelines", "dml", ".gitignore", ".dvcignore")

REFERENCES = ["raw_pixels", "random_init", "pretrained"]
RECIPE = "multi_similarity"                      # the default recipe: params.yaml's own
CROP_FLIP = [{"name": "RandomResizedCrop", "scale": [0.7, 1.0]}, {"name": "RandomHorizontalFlip"}]
#: Variants of an experiment of params.yaml: (experiment, overrides by section).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # the trunk trained too, from ImageNet: its last stages at a tenth of the head's rate
    f"{RECIPE}_finetune": (RECIPE, {"train": {"freeze": 5, "trunk_lr": 3e-4,
                                              "augment": [{"name": "RandomHorizontalFlip"}]}}),
    # the same network from random weights, all of it trained
    f"{RECIPE}_scratch": (RECIPE, {"model": {"weights": None},
                                   "train": {"freeze": 0, "augment": CROP_FLIP}}),
}
ZERO_SHOT = [*REFERENCES, RECIPE, *VARIANTS, "binomial", "ecaml", "ecaml_ms"]
SCALES = ["pretrained_scales", "fine_only", "csl", "per_scale_proxy"]
SKETCH = ["raw_pixels_sketches", "random_init_sketches", "pretrained_sketches",
          "dase_mems", "se_mems", "dase_cosface", "plain_softmax"]
HANDS = ["raw_pixels_scenes", "random_init_scenes", "pretrained_scenes",
         "triplet_fixed", "cosine_adaptive", "jaccard_adaptive", "jaccard_softpq"]
#: The experiments run on each set.
PLAN: dict[str, list[str]] = {
    "clipart": ZERO_SHOT + SCALES,
    "wesnoth_units": ZERO_SHOT + ["sgml"] + SCALES,
    "cards": [*REFERENCES, RECIPE, "binomial", "sgml"],
    "wesnoth_portraits": SKETCH,
    "tuxpaint": SKETCH,
    "card_hands": HANDS,
}
#: Where the recipe meets the references and the peer.
RECIPE_SETS = ("clipart", "wesnoth_units")
#: Comparisons beyond the ``baseline`` keys of params.yaml: (method, baseline).
EXTRA_COMPARISONS = [("jaccard_adaptive", "triplet_fixed")]
#: The figures a protocol is judged by (metrics keys), first the headline.
HEADLINES = {
    "self_retrieval": ["map@r", "recall@1"],
    "per_scale": ["avg/map", "avg/recall@1", "avg/asi"],
    "cross_domain": ["map", "precision@1"],
    "multilabel": ["map@100", "ndcg@100"],
}


# -- sets -----------------------------------------------------------------------------------

def ensure_packages(builders: Sequence[Any], install: bool) -> None:
    """Install the Debian packages whose files are missing; one line saying why when not."""
    missing = [b.PACKAGE for b in builders if not Path(b.DEFAULT_SOURCE).exists()]
    if cards in builders and shutil.which(cards.RSVG) is None:
        missing.append("librsvg2-bin")
    if not missing:
        return
    if not install:
        raise SystemExit(f"missing packages {', '.join(missing)} (--no-install given)")
    if shutil.which("apt-get") is None:
        raise SystemExit(f"cannot install {', '.join(missing)}: no apt-get on this machine")
    if os.geteuid() != 0:
        raise SystemExit(f"cannot install {', '.join(missing)}: not root; run as root "
                         f"or: sudo apt-get install -y {' '.join(missing)}")
    print(f"installing {', '.join(missing)} ...", flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SystemExit(f"{' '.join(cmd[:2])} failed: {last[0]}")


def build_sets(sets_dir: Path, *, quick: bool, sources: Mapping[str, Path],
               wanted: Sequence[str]) -> list[BuiltSet]:
    """Build (or reuse) every set of ``wanted``; a set is rebuilt when its builder's code, the
    shared code or its options changed (a stamp beside it records them)."""
    built: list[BuiltSet] = []
    shared = inspect.getsource(importlib.import_module("real_sets.common"))
    for builder in BUILDERS:
        name = builder.__name__.rsplit(".", 1)[-1]
        source = Path(sources.get(name, builder.DEFAULT_SOURCE))
        stamp_key = hashlib.sha256((inspect.getsource(builder) + shared + str(source)
                                    + str(quick)).encode()).hexdigest()
        stamp = sets_dir / f".{name}.json"
        if stamp.is_file():
            saved = json.loads(stamp.read_text())
            if saved["key"] == stamp_key and all((sets_dir / s["name"]).is_dir() for s in saved["sets"]):
                built += [BuiltSet(**s) for s in saved["sets"]]
                continue
        if not any(set_name in wanted for set_name in _sets_of(name)):
            continue
        start = time.perf_counter()
        print(f"building {name} from {source} ...", flush=True)
        results = builder.build(source, sets_dir, quick=quick)
        for s in results:
            classes = s.counts.get("classes", s.counts.get("categories", "?"))
            print(f"  {s.name}: {classes} classes, {s.counts.get('images', '?')} images "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        # in the builders' key order, which the params file keeps (the peer's key hashes it)
        write_text_atomic(stamp, json.dumps({"key": stamp_key, "sets": [vars(s) for s in results]}))
        built += results
    return [s for s in built if s.name in wanted]


def _sets_of(builder: str) -> list[str]:
    return {"openclipart": ["clipart"], "wesnoth": ["wesnoth_units", "wesnoth_portraits"],
            "tuxpaint": ["tuxpaint"], "cards": ["cards", "card_hands"]}[builder]


def relative_entry(built: BuiltSet, project: Path) -> dict[str, Any]:
    """The set's ``datasets`` entry with its paths relative to the project (DVC tracks them)."""
    entry = built.dataset_entry()
    for key in ("root", "annotations_csv"):
        if entry["options"].get(key):
            entry["options"][key] = os.path.relpath(entry["options"][key], project)
    return entry


# -- params ---------------------------------------------------------------------------------

def suite_experiments(base: Mapping[str, Any], sets: Sequence[BuiltSet]) -> dict[str, Any]:
    """``<set>__<experiment>`` for every experiment of PLAN on each built set."""
    experiments: dict[str, Any] = {}
    for built in sets:
        plan = PLAN[built.name]
        for name in plan:
            origin, overrides = VARIANTS.get(name, (name, {}))
            exp = copy.deepcopy(base[origin])
            for section, values in overrides.items():
                exp[section] = {**exp.get(section, {}), **values}
            exp["dataset"] = built.name
            exp.pop("search", None)
            baselines = exp.pop("baseline", None)
            if baselines is not None:
                kept = [f"{built.name}__{b}" for b in _as_list(baselines) if b in plan]
                if kept:
                    exp["baseline"] = kept if len(kept) > 1 else kept[0]
            _scale_margins(exp.get("loss"), built.scales)
            experiments[f"{built.name}__{name}"] = exp
    return experiments


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _scale_margins(loss: dict[str, Any] | None, scales: Sequence[str]) -> None:
    """CSL's margins over the set's own scales, finest first: 0.25, 0.35, 0.45, ... (the
    paper's progression for DyML's fine, middle and coarse scales)."""
    if not isinstance(loss, dict):
        return
    if "margins" in loss:
        wanted = scales if len(loss["margins"]) > 1 else scales[:1]
        loss["margins"] = {s: round(0.25 + 0.1 * i, 2) for i, s in enumerate(wanted)}
    if isinstance(loss.get("base"), dict):
        _scale_margins(loss["base"], scales)


def suite_params(base: Mapping[str, Any], sets: Sequence[BuiltSet], project: Path,
                 seeds: Sequence[int]) -> dict[str, Any]:
    """The scratch project's params.yaml (see the module docstring)."""
    params = copy.deepcopy(dict(base))
    params["seeds"] = list(seeds)
    params["datasets"] = {s.name: relative_entry(s, project) for s in sets}
    params["experiments"] = suite_experiments(base["experiments"], sets)
    params["tune"] = {**params["tune"], "trials": 0}
    return params


# -- the pipeline ---------------------------------------------------------------------------

def make_project(project: Path) -> dict[str, str]:
    """The scratch project: this checkout's code copied in (replacing the last run's), a git
    and DVC repository on first use. Returns the environment its commands run in."""
    project.mkdir(parents=True, exist_ok=True)
    for item in PROJECT_FILES:
        source, target = REPO / item, project / item
        if target.is_dir():
            shutil.rmtree(target)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy(source, target)
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1", "RAY_AUTH_MODE": "disabled",
        "GIT_AUTHOR_NAME": "dml", "GIT_AUTHOR_EMAIL": "dml@example.com",
        "GIT_COMMITTER_NAME": "dml", "GIT_COMMITTER_EMAIL": "dml@example.com",
    }
    if not (project / ".dvc").is_dir():
        # dvclive reads the repository's revision: it needs a first commit
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                    ["dvc", "config", "core.analytics", "false"],
                    ["git", "commit", "-q", "--allow-empty", "-m", "reality check"]):
            subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    return env


def run_pipeline(project: Path, env: Mapping[str, str]) -> dict[str, float]:
    """``dml run -- dvc repro`` in ``project``, printing the stages' own result lines of
    training and evaluation (one per run); the seconds of every stage it ran (a stage lasts
    until the next one starts). Exits on a failure with the output's tail."""
    proc = subprocess.Popen(["dml", "run", "--", "dvc", "repro"], cwd=project, env=dict(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds: dict[str, float] = {}
    tail: list[str] = []
    current, started = None, time.perf_counter()
    begun = started
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-40:]
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if current is not None:
                seconds[current] = now - started
            current, started = line.split("'")[1], now
        elif line.startswith(("train ", "evaluate ")):
            print(f"  {line.rstrip()} ({time.perf_counter() - begun:.0f} s)", flush=True)
    if current is not None:
        seconds[current] = time.perf_counter() - started
    if proc.wait() != 0:
        raise SystemExit("the pipeline failed:\n" + "\n".join(tail))
    return seconds


def experiment_seconds(stage_seconds: Mapping[str, float]) -> dict[str, float]:
    """Seconds per experiment: its tune stage and its per-seed stages, over the seeds run."""
    per: dict[str, list[float]] = {}
    for stage, sec in stage_seconds.items():
        kind, _, item = stage.partition("@")
        if kind not in ("tune", "train", "embed", "quantize", "evaluate") or not item:
            continue
        name = item.rsplit("-", 1)[0] if kind != "tune" else item
        per.setdefault(name, []).append(sec)
    return {name: sum(v) for name, v in per.items()}


def read_metrics(project: Path, experiments: Sequence[str], seeds: Sequence[int]
                 ) -> dict[str, dict[int, dict]]:
    """Each experiment's metrics per seed (the evaluate stage's files)."""
    return {name: {seed: json.loads((project / "metrics" / name / f"seed{seed}.json").read_text())
                   for seed in seeds} for name in experiments}


def run_peer(project: Path, env: Mapping[str, str], sets: Sequence[str], seeds: Sequence[int],
             out: Path) -> dict[str, dict[int, dict]]:
    """The peer's runs (``benchmarks/peer_pml.py`` in a process of its own), by row name
    ``<set>__peer_pretrained`` / ``<set>__peer_scratch``; kept in ``out`` between runs when
    the code and data are unchanged."""
    results: dict[str, dict[int, dict]] = {}
    for name in sets:
        for start in ("pretrained", "scratch"):
            row = f"{name}__peer_{start}"
            target = out / f"{row}.json"
            key = _peer_key(project, name)
            saved = _peer_runs(target, key)
            if not set(seeds) <= set(saved):
                cmd = [sys.executable, str(REPO / "benchmarks" / "peer_pml.py"),
                       "--params", str(project / "params.yaml"), "--project", str(project),
                       "--experiment", f"{name}__{RECIPE}", "--seeds", *map(str, seeds),
                       "--out", str(target)]
                if start == "scratch":
                    cmd.append("--scratch")
                print(f"  peer {row}", flush=True)
                done = subprocess.run(cmd, env=dict(env), capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"the peer failed on {row}:\n{done.stderr[-3000:]}")
                data = json.loads(target.read_text())
                write_json_atomic(target, data | {"key": key})
                saved = _runs_by_seed(data)
            results[row] = {s: r for s, r in saved.items() if s in seeds}
    return results


def _peer_runs(path: Path, key: str) -> dict[int, dict]:
    """The peer's runs by seed in ``path``, when they were made with ``key`` (else none)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return _runs_by_seed(data) if data.get("key") == key else {}


def _runs_by_seed(data: Mapping[str, Any]) -> dict[int, dict]:
    """The runs of a peer results file, by seed."""
    return {int(r["seed"]): r for r in data["runs"]}


def _peer_key(project: Path, dataset: str) -> str:
    """What the peer's figures depend on: its code, the params, the set's data files."""
    parts = [(REPO / "benchmarks" / "peer_pml.py").read_bytes(), (project / "params.yaml").read_bytes()]
    for file in ("manifest.parquet", "splits.parquet"):
        path = project / "data" / dataset / file
        parts.append(path.read_bytes() if path.is_file() else b"")
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


# -- the report -----------------------------------------------------------------------------

def _value(run: Mapping[str, Any], key: str) -> float | None:
    """A run's float figure ``key`` (peer runs hold their figures at the top level)."""
    source = run.get("float", run)
    value = source.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _series(runs: Mapping[int, Mapping], key: str) -> dict[int, float]:
    return {s: v for s, r in runs.items() if (v := _value(r, key)) is not None}


def fmt_estimate(values: Sequence[float]) -> str:
    """Mean ± half-width of the 95% t interval, in %; the value alone with one seed."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    interval = t_interval(values)
    return f"{100 * interval.mean:.1f} ± {100 * interval.half_width:.1f}"


def fmt_difference(method: Mapping[int, float], baseline: Mapping[int, float], *,
                   verdicts: tuple[str, str] = ("gain", "loss")) -> tuple[str, str]:
    """(paired difference in points with its interval, verdict): ``verdicts`` name a
    difference whose interval lies above 0 and one below it."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return "–", "not run"
    if len(seeds) == 1:
        d = 100 * (method[seeds[0]] - baseline[seeds[0]])
        return f"{d:+.1f}", "one seed: no interval"
    interval = paired_difference(method, baseline)
    low, high = 100 * interval.low, 100 * interval.high
    verdict = verdicts[0] if low > 0 else verdicts[1] if high < 0 else "no difference shown"
    return f"{100 * interval.mean:+.1f} [{low:+.1f}, {high:+.1f}]", verdict


def comparisons(experiments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(method, baseline) pairs: every ``baseline`` of the suite's experiments, then EXTRA."""
    pairs = [(name, b) for name, exp in experiments.items() for b in _as_list(exp.get("baseline", []))]
    for method, baseline in EXTRA_COMPARISONS:
        for name in experiments:
            prefix = name.split("__")[0]
            if name == f"{prefix}__{method}" and f"{prefix}__{baseline}" in experiments:
                pairs.append((name, f"{prefix}__{baseline}"))
    return pairs


def recipe_section(results: Mapping[str, Mapping[int, dict]], sets: Sequence[str],
                   cost: Mapping[str, float]) -> list[str]:
    """The recipe against the references and the peer on each zero-shot set."""
    rows_of = [("raw pixels", "raw_pixels"), ("random trunk", "random_init"),
               ("frozen ImageNet features", "pretrained"), ("**the default recipe**", RECIPE),
               ("recipe, trunk fine-tuned", f"{RECIPE}_finetune"),
               ("recipe from scratch", f"{RECIPE}_scratch"),
               ("peer (PML) from ImageNet", "peer_pretrained"), ("peer (PML) from scratch", "peer_scratch")]
    lines = ["## The default recipe on unseen classes", "",
             "MAP@R and R@1 in % on the test classes (never trained on), mean ± half-width of the "
             "95% t interval over seeds; Δ: paired difference against the recipe, in points. "
             "The peer is pytorch-metric-learning's multi-similarity loss and miner in its plain "
             "loop (everything trained), at the recipe's trunk, image size, batch and epochs.", ""]
    for name in sets:
        lines += [f"### {name}", "", "| row | MAP@R | R@1 | Δ MAP@R vs recipe | s/run |",
                  "|---|---|---|---|---|"]
        recipe = _series(results.get(f"{name}__{RECIPE}", {}), "map@r")
        for label, row in rows_of:
            runs = results.get(f"{name}__{row}")
            if not runs:
                continue
            maps, r1 = _series(runs, "map@r"), _series(runs, "recall@1")
            delta = "" if row == RECIPE else fmt_difference(maps, recipe)[0]
            seconds = cost.get(f"{name}__{row}")
            per_run = f"{seconds / max(len(runs), 1):.0f}" if seconds else "–"
            lines.append(f"| {label} | {fmt_estimate(list(maps.values()))} | "
                         f"{fmt_estimate(list(r1.values()))} | {delta} | {per_run} |")
        lines.append("")
    return lines


def method_section(results: Mapping[str, Mapping[int, dict]], experiments: Mapping[str, Any],
                   protocols: Mapping[str, str]) -> list[str]:
    """Each method against each baseline: paired differences over seeds on the headline
    figures of the set's protocol (and the seen/unseen gap where the run reports one)."""
    lines = ["## Each method beside its baselines", "",
             "Paired difference method − baseline over the seeds, in points, with its 95% t "
             "interval; *gain* / *loss* where the interval excludes 0. The seen − unseen gap is "
             "what ECAML means to shrink: *smaller gap* / *larger gap*.", "",
             "| set | method | baseline | figure | method | baseline | Δ | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for method, baseline in comparisons(experiments):
        if method not in results or baseline not in results:
            continue
        set_name = method.split("__")[0]
        protocol = protocols[method]
        keys = list(HEADLINES.get(protocol, ["map@r"]))
        for key in keys:
            m, b = _series(results[method], key), _series(results[baseline], key)
            if not m or not b:
                continue
            diff, verdict = fmt_difference(m, b)
            lines.append(f"| {set_name} | {method.split('__')[1]} | {baseline.split('__')[1]} | "
                         f"{key} | {fmt_estimate(list(m.values()))} | "
                         f"{fmt_estimate(list(b.values()))} | {diff} | {verdict} |")
        gaps_m, gaps_b = _gaps(results[method]), _gaps(results[baseline])
        if gaps_m and gaps_b:
            diff, verdict = fmt_difference(gaps_m, gaps_b, verdicts=("larger gap", "smaller gap"))
            lines.append(f"| {set_name} | {method.split('__')[1]} | {baseline.split('__')[1]} | "
                         f"seen − unseen MAP@R | {fmt_estimate(list(gaps_m.values()))} | "
                         f"{fmt_estimate(list(gaps_b.values()))} | {diff} | {verdict} |")
    lines.append("")
    return lines


def _gaps(runs: Mapping[int, Mapping]) -> dict[int, float]:
    """Seen-class MAP@R minus unseen-class MAP@R per seed, where the run measured both."""
    out = {}
    for seed, run in runs.items():
        gap = run.get("gap") or {}
        try:
            out[seed] = gap["seen"]["float"]["map@r"] - gap["unseen"]["float"]["map@r"]
        except (KeyError, TypeError):
            continue
    return out


def quantized_section(results: Mapping[str, Mapping[int, dict]], sets: Sequence[str]) -> list[str]:
    """On the multi-object set: the codes (PQ, OPQ, the learned soft-PQ head) against the
    float embedding, mAP@100 per code size."""
    if not any(results.get(f"{name}__jaccard_adaptive") for name in sets):
        return []
    lines = ["## Codes on multi-object images", "",
             "mAP@100 in % of each code against the float embedding (same run), per bits per vector.",
             "", "| set | experiment | code | 32 bits | 64 bits | 128 bits |", "|---|---|---|---|---|---|"]
    for name in sets:
        for exp in ("jaccard_adaptive", "jaccard_softpq"):
            runs = results.get(f"{name}__{exp}")
            if not runs:
                continue
            float_cell = fmt_estimate(list(_series(runs, "map@100").values()))
            lines.append(f"| {name} | {exp} | float | {float_cell} | {float_cell} | {float_cell} |")
            for code in ("pq", "opq", "softpq"):
                cells = []
                for bits in (32, 64, 128):
                    vals = [r["quantized"][f"{code}{bits}"]["map@100"] for r in runs.values()
                            if f"{code}{bits}" in r.get("quantized", {})]
                    cells.append(fmt_estimate(vals))
                if any(c != "–" for c in cells):
                    lines.append(f"| {name} | {exp} | {code} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def sets_section(sets: Sequence[BuiltSet]) -> list[str]:
    lines = ["## The sets", "", "| set | from | protocol | classes | images | scales | attributes | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sets:
        package = next(b.PACKAGE for b in BUILDERS if s.name in _sets_of(b.__name__.rsplit(".", 1)[-1]))
        lines.append(f"| {s.name} | `{package}` | {s.protocol['name']} | {s.counts.get('classes', '–')} | "
                     f"{s.counts.get('images', '–')} | {', '.join(s.scales)} | {len(s.attributes)} | {s.notes} |")
    return lines + [""]


def cost_section(cost: Mapping[str, float], stage_seconds: Mapping[str, float],
                 wall: Mapping[str, float]) -> list[str]:
    kinds: dict[str, float] = {}
    for stage, sec in stage_seconds.items():
        kinds[stage.split("@")[0]] = kinds.get(stage.split("@")[0], 0.0) + sec
    lines = ["## Cost", "", "Wall-clock seconds of this run, by part: "
             + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()) + ". Pipeline stages: "
             + ", ".join(f"{k} {v:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
             + ". A stage DVC found up to date costs nothing here, so a resumed run counts only "
               "what it re-ran.", ""]
    return lines


def report(*, sets: Sequence[BuiltSet], params: Mapping[str, Any], results: Mapping[str, Mapping[int, dict]],
           stage_seconds: Mapping[str, float], wall: Mapping[str, float], project: Path,
           command: str) -> str:
    """The markdown report (see the module docstring)."""
    experiments = params["experiments"]
    protocols = {name: results[name][min(results[name])]["protocol"]["name"]
                 for name in experiments if results.get(name)}
    cost = experiment_seconds(stage_seconds) | {
        name: sum(r.get("seconds", 0.0) for r in runs.values())
        for name, runs in results.items() if "__peer_" in name}
    names = [s.name for s in sets]
    comparison = (project / "results" / "comparison.md").read_text() if (
        project / "results" / "comparison.md").is_file() else ""
    lines = [
        "# Reality check: the pipeline on real images", "",
        f"`{command}` · seeds {params['seeds']} · {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · "
        f"{processor()} · {os.cpu_count()} CPUs · torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
        "",
        "Every experiment is params.yaml's own, pointed at a real set (same trunk, budget and "
        "seeds for a method and its baselines, no search). Figures in %.", "",
        *sets_section(sets),
        *recipe_section(results, [n for n in RECIPE_SETS if n in names], cost),
        *method_section(results, experiments, protocols),
        *quantized_section(results, [n for n in names if n == "card_hands"]),
        *cost_section(cost, stage_seconds, wall),
        "## The pipeline's own report", "",
        comparison.replace("\n# ", "\n### ").replace("\n## ", "\n### ").removeprefix("# Comparison"),
    ]
    return "\n".join(lines).rstrip() + "\n"


def processor() -> str:
    """The CPU's model name (speeds compare only within one machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- main -----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, smaller sets (< 20 minutes)")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: 0 1 2 (--quick: 0)")
    parser.add_argument("--sets", nargs="+", choices=list(PLAN), default=list(PLAN))
    parser.add_argument("--source", action="append", default=[], metavar="BUILDER=PATH",
                        help="read a package's files from PATH (e.g. openclipart=/tmp/tree)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml",
                        help="the params.yaml whose recipe and experiments are checked")
    parser.add_argument("--work", type=Path, default=REPO / ".scratch" / "reality_check")
    parser.add_argument("--no-install", action="store_true", help="never call apt-get")
    parser.add_argument("--no-peer", action="store_true", help="skip pytorch-metric-learning")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reality_check.md")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sources = dict(item.split("=", 1) for item in args.source)
    bad = sorted(set(sources) - {b.__name__.rsplit(".", 1)[-1] for b in BUILDERS})
    if bad:
        raise SystemExit(f"--source {bad[0]}=...: not a builder; builders: "
                         f"{', '.join(b.__name__.rsplit('.', 1)[-1] for b in BUILDERS)}")
    work = args.work.resolve()
    project = work / ("quick" if args.quick else "full")
    wall: dict[str, float] = {}

    start = time.perf_counter()
    needed = [b for b in BUILDERS if any(s in args.sets for s in _sets_of(b.__name__.rsplit(".", 1)[-1]))
              or (b is openclipart and "tuxpaint" in args.sets)]
    ensure_packages([b for b in needed if b.__name__.rsplit(".", 1)[-1] not in sources], not args.no_install)
    env = make_project(project)
    sets = build_sets(project / "sets", quick=args.quick, sources={k: Path(v) for k, v in sources.items()},
                      wanted=args.sets)
    wall["sets"] = time.perf_counter() - start

    base = yaml.safe_load(args.params.read_text())
    params = suite_params(base, sets, project, seeds)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"pipeline: {len(params['experiments'])} experiments x {len(seeds)} seed(s) on "
          f"{', '.join(s.name for s in sets)}", flush=True)
    start = time.perf_counter()
    stage_seconds = run_pipeline(project, env)
    wall["pipeline"] = time.perf_counter() - start
    results = read_metrics(project, list(params["experiments"]), seeds)

    if not args.no_peer:
        start = time.perf_counter()
        results |= run_peer(project, env, [n for n in RECIPE_SETS if n in args.sets], seeds,
                            work / "peer")
        wall["peer"] = time.perf_counter() - start
    command = "python benchmarks/reality_check.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = report(sets=sets, params=params, results=results, stage_seconds=stage_seconds, wall=wall,
                  project=project, command=command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, text)
    for line in text.splitlines():
        if line.startswith("| ") and ("gain" in line or "loss" in line or "no difference" in line
                                      or "default recipe" in line or "peer" in line):
            print(line)
    print(f"wrote {args.out} ({sum(wall.values()) / 60:.1f} min)")


if __name__ == "__main__":
    main()
