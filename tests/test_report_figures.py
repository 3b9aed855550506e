"""The report stage's offline outputs (figures, self-contained HTML) from a hand-made tree of
metrics, training curves and retrieval grids; the figures of dml.report.figures."""

from __future__ import annotations

import base64
import html
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dml.errors import DataError
from dml.report.figures import RunCurves, comparison_figure, curves_figure, palette, read_curve
from dml.report.grid import retrieval_grid

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"base": 0.40, "method": 0.45, "reference": 0.20}  # name -> R@1 of seed 0
TRAINED = ("base", "method")
PARAMS = """
seeds: [0, 1]
experiments:
  base: {dataset: shapes, loss: {name: contrastive}}
  method: {dataset: shapes, loss: {name: multi_similarity}, baseline: base}
  reference: {dataset: shapes, train: {epochs: 0}}
"""


def tile(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def metrics(name: str, seed: int) -> dict:
    r1 = EXPERIMENTS[name] + 0.02 * seed
    floats = {"recall@1": r1, "recall@2": r1 + 0.1, "recall@4": r1 + 0.2, "map@r": r1 / 2, "nmi": 0.5}
    return {"experiment": name, "seed": seed, "dataset": "shapes", "protocol": {"name": "self_retrieval"},
            "loss": name if name in TRAINED else "untrained", "selected_epoch": 2 if name in TRAINED else None,
            "float": floats, "float_bootstrap_ci": {k: [v - 0.03, v + 0.03] for k, v in floats.items()},
            "bytes_per_vector": 256, "queries": 40, "gallery": 40, "split": "test"}


def write_curve(folder: Path, key: str, values: list[float]) -> None:
    path = folder / "plots" / "metrics" / f"{key}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{key}\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))


def make_tree(root: Path) -> None:
    """params.yaml, metrics/, dvclive/ and plots/ as the stages before the report leave them."""
    (root / "params.yaml").write_text(PARAMS)
    grid = retrieval_grid([tile((200, 0, 0))], [[tile((0, 0, 200)), tile((0, 200, 0))]], np.array([[True, False]]))
    for name in EXPERIMENTS:
        for seed in (0, 1):
            (root / "metrics" / name).mkdir(parents=True, exist_ok=True)
            (root / "metrics" / name / f"seed{seed}.json").write_text(json.dumps(metrics(name, seed)))
            live = root / "dvclive" / name / f"seed{seed}"
            if name in TRAINED:
                scale = 1.0 if name == "base" else 3.0
                write_curve(live, "loss", [scale, 0.8 * scale, (0.7 - 0.01 * seed) * scale])
                write_curve(live, "val_map_at_r", [0.1, 0.15, EXPERIMENTS[name] / 2 + 0.01 * seed])
            else:  # an untrained reference: one validation, no loss
                write_curve(live, "val_map_at_r", [0.05])
            (live / "metrics.json").write_text("{}\n")
            (root / "plots" / name / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            (root / "plots" / name / f"seed{seed}" / "retrieval_grid.png").write_bytes(grid)


def run_report(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "pipelines" / "report.py"), "--params", "params.yaml"],
                          cwd=root, capture_output=True, text=True, timeout=120)


def test_report_stage_writes_figures_and_a_self_contained_page(tmp_path):
    make_tree(tmp_path)
    stale = tmp_path / "results" / "figures" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    done = run_report(tmp_path)
    assert done.returncode == 0, done.stderr

    page = (tmp_path / "results" / "report.html").read_text()
    assert all(name in page for name in EXPERIMENTS)
    for remote in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert remote not in page
    assert page.count("data:image/png;base64,") == 3 + 2 * len(EXPERIMENTS)  # figures, one grid per run

    # The HTML tables hold the markdown's rows: one source, two renderings.
    markdown = (tmp_path / "results" / "comparison.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 4 + 2 + 4  # header + 3 rows; paired table; float-vs-quantized table
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        tag = "th" if cells[0] == "experiment" else "td"
        assert "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) in page, line
    assert "<h3>Against the baseline (paired over seeds)</h3>" in page

    figures = tmp_path / "results" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == [
        "comparison-shapes-self_retrieval.png", "curves.png", "recall_at_k-shapes-self_retrieval.png"]
    for path in figures.iterdir():
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and 400 <= image.width <= 2000 and 250 <= image.height <= 1200
        assert base64.b64encode(path.read_bytes()).decode() in page  # the page embeds these very files


def test_report_stage_names_a_missing_grid(tmp_path):
    make_tree(tmp_path)
    missing = tmp_path / "plots" / "method" / "seed1" / "retrieval_grid.png"
    missing.unlink()
    done = run_report(tmp_path)
    assert done.returncode == 2
    assert "plots/method/seed1/retrieval_grid.png" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results" / "report.html").exists()


def runs_of(*names: str, seeds=(0,), bootstrap=True) -> dict[str, list[dict]]:
    out = {n: [metrics(n, s) for s in seeds] for n in names}
    if not bootstrap:
        for runs in out.values():
            for run in runs:
                run.pop("float_bootstrap_ci")
    return out


def test_comparison_bars_carry_their_intervals_and_are_deterministic():
    colours = palette(sorted(EXPERIMENTS))
    with_ci = comparison_figure("shapes", runs_of("base", "method"), colours)
    assert with_ci == comparison_figure("shapes", runs_of("base", "method"), colours)
    assert with_ci != comparison_figure("shapes", runs_of("base", "method", bootstrap=False), colours)
    over_seeds = comparison_figure("shapes", runs_of("base", "method", seeds=(0, 1)), colours)
    assert over_seeds not in (with_ci, None)
    assert Image.open(io.BytesIO(with_ci)).size[0] >= 500
    assert comparison_figure("shapes", {"x": [{"float": {"nmi": 0.3}}]}, colours) is None  # no headline metric


def test_curves_leave_out_untrained_references(tmp_path):
    colours = palette(sorted(EXPERIMENTS))
    trained = {"base": {0: RunCurves((np.arange(3), np.array([1.0, 0.8, 0.7])),
                                     (np.arange(3), np.array([0.1, 0.2, 0.3])), selected=2)}}
    reference = {"reference": {0: RunCurves(None, (np.arange(1), np.array([0.05])))}}
    val = {"base": "map@r", "reference": "map@r"}
    alone = curves_figure(trained, val, colours)
    assert alone is not None and curves_figure(trained | reference, val, colours) == alone
    assert curves_figure(reference, val, colours) is None
    bad = tmp_path / "plots" / "metrics" / "loss.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("step\tloss\n0\tnot-a-number\n")
    with pytest.raises(DataError, match=r"loss.tsv: not a dvclive curve"):
        read_curve(bad)


def test_loss_terms_become_flat_curve_names(tmp_path):
    """dvclive nests names at '/': a loss and its terms ('loss', 'loss/deviance') are written
    under flat names, and the figures find them by the same rule."""
    from dml.report.figures import curve_file
    from dml.train.curves import write_curves

    history = [{"loss": 1.0, "loss/deviance": 0.8, "loss/base/term": 0.1, "val_map@r": 0.2, "steps": 3.0}]
    write_curves(tmp_path / "run", history)
    for key in ("loss", "loss/deviance", "loss/base/term", "val_map@r"):
        assert curve_file(tmp_path / "run", key).is_file()
    assert not curve_file(tmp_path / "run", "steps").exists()
