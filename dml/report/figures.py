"""The report's figures, as PNG bytes drawn offline with matplotlib's Agg backend: per
(dataset, protocol) section the headline metrics with their intervals and the recall@K curves,
and the training and validation curves of every trained experiment. An experiment keeps one
colour in every figure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import style
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from dml.errors import DataError
from dml.evaluate.catalog import metric_key
from dml.report.columns import headline_metrics, metric_columns, protocol_of, title
from dml.report.drawing import STYLE, png
from dml.report.estimates import estimate, float_estimate
from dml.report.runs import Runs, sections, seed_runs
from dml.train.curves import curve_name

DPI = 110
INTERVALS = {"t": "95% t interval over seeds", "bootstrap": "95% bootstrap interval over queries (one seed)"}

Curve = tuple[np.ndarray, np.ndarray]  # epochs (dvclive steps), values


@dataclass(frozen=True)
class Picture:
    """One figure of the report: its file name in the figures folder, a caption, the PNG."""

    file: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class RunCurves:
    """One training run's curves (None where the run has none, e.g. an untrained reference
    has no loss) and the epoch it exported."""

    loss: Curve | None
    val: Curve | None
    selected: int | None = None


# ----------------------------------------------------------------------------- reading


def read_curve(path: Path) -> Curve:
    """A dvclive TSV curve: a ``step<TAB><name>`` header (a ``timestamp`` column is ignored),
    then one row per step (epoch)."""
    try:
        lines = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
        header = lines[0]
        step = header.index("step")
        value = next(i for i, column in enumerate(header) if column not in ("step", "timestamp"))
        rows = lines[1:]
        return (np.array([int(r[step]) for r in rows], dtype=np.int64),
                np.array([float(r[value]) for r in rows], dtype=np.float64))
    except (OSError, UnicodeDecodeError, ValueError, IndexError, StopIteration) as exc:
        raise DataError(f"{path}: not a dvclive curve (a 'step' column and a value column; {exc!r})") from None


def curve_file(folder: Path, key: str) -> Path:
    """Where dvclive keeps the curve of history key ``key`` (dml/train/curves.py names it)."""
    return folder / "plots" / "metrics" / f"{curve_name(key)}.tsv"


def read_run_curves(folder: Path, val_metric: str, selected: int | None = None) -> RunCurves:
    """The loss and ``val_<val_metric>`` curves of the run whose dvclive folder is ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no training curves folder (the train stage writes it)")
    loss, val = curve_file(folder, "loss"), curve_file(folder, f"val_{val_metric}")
    return RunCurves(read_curve(loss) if loss.is_file() else None,
                     read_curve(val) if val.is_file() else None, selected)


def load_curves(dvclive: Path, results: Mapping[str, Runs],
                val_metrics: Mapping[str, str]) -> dict[str, dict[int, RunCurves]]:
    """Every run's curves: ``dvclive/<experiment>/seed<k>``, for the runs in ``results``."""
    return {name: {seed: read_run_curves(dvclive / name / f"seed{seed}", val_metrics[name],
                                         runs[seed].get("selected_epoch"))
                   for seed in sorted(runs)}
            for name, runs in results.items()}


# ----------------------------------------------------------------------------- drawing


def palette(names: Sequence[str]) -> dict[str, tuple]:
    """One colour per experiment (``names`` in a fixed order), the same in every figure."""
    colours = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def _bar(ax: Axes, x: float, width: float, runs: Sequence[Mapping], key: str, colour,
         label: str | None) -> str | None:
    """One experiment's bar for ``key`` (in %) with its error bar; returns its interval kind
    (None when the experiment lacks ``key``: no bar)."""
    e = float_estimate(runs, key)
    if e is None:
        return None
    ax.bar(x, 100 * e.mean, width, color=colour, label=label)
    top = 100 * e.mean
    if e.low is not None and e.high is not None:
        below, above = max(0.0, e.mean - e.low), max(0.0, e.high - e.mean)
        ax.errorbar(x, 100 * e.mean, yerr=[[100 * below], [100 * above]], fmt="none", ecolor="black",
                    capsize=3, linewidth=1)
        top += 100 * above
    ax.annotate(f"{100 * e.mean:.1f}", (x, top), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=7)
    return e.kind


def _interval_note(kinds: set[str]) -> str:
    named = [INTERVALS[k] for k in ("t", "bootstrap") if k in kinds]
    return "error bars: " + "; ".join(named) if named else "no interval (one seed, no bootstrap)"


def comparison_figure(heading: str, runs: Mapping[str, Sequence[Mapping]], colours: Mapping[str, tuple]) -> bytes | None:
    """Grouped bars: per headline metric (e.g. R@1, MAP@R) one bar per experiment, in %,
    with its 95% interval (t over seeds, else the one seed's bootstrap over queries)."""
    first = next(iter(runs.values()))[0]
    metrics = headline_metrics(protocol_of(first), metric_columns([r["float"] for rs in runs.values() for r in rs]))
    if not metrics:
        return None
    names = list(runs)
    width = 0.8 / len(names)
    with style.context(STYLE):
        fig = Figure(figsize=(max(5.0, 1.5 + 0.45 * len(names) * len(metrics)), 4.0), layout="constrained")
        ax = fig.add_subplot()
        kinds: set[str | None] = set()
        for i, name in enumerate(names):
            drawn: set[str | None] = set()
            for m, key in enumerate(metrics):
                x = m + (i - (len(names) - 1) / 2) * width
                drawn.add(_bar(ax, x, width * 0.9, runs[name], key, colours[name], None if drawn - {None} else name))
            kinds |= drawn
        ax.set_xticks(range(len(metrics)), [title(k) for k in metrics])
        ax.set_ylabel("%")
        ax.set_ylim(0, min(110, ax.get_ylim()[1] * 1.08))
        ax.set_title(f"{heading}\n{_interval_note(kinds - {None, ''})}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="experiment")
        return png(fig, DPI)


def recall_figure(heading: str, runs: Mapping[str, Sequence[Mapping]], colours: Mapping[str, tuple]) -> bytes | None:
    """Recall@K against K (log scale), the mean over seeds, one line per experiment."""
    with style.context(STYLE):
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
        ks: set[int] = set()
        for name, rs in runs.items():
            points = sorted((m.k, m.key) for m in map(metric_key, rs[0]["float"])
                            if m.spec_name == "recall" and m.k is not None and not m.scope)
            means = [(k, estimate([r["float"].get(key) for r in rs])) for k, key in points]
            means = [(k, e.mean) for k, e in means if e is not None]
            if means:
                ks.update(k for k, _ in means)
                ax.plot([k for k, _ in means], [100 * v for _, v in means], marker="o", color=colours[name], label=name)
        if not ks:
            return None
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ks), [str(k) for k in sorted(ks)])
        ax.minorticks_off()
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K (%)")
        ax.set_title(f"{heading}: recall@K, mean over seeds")
        ax.legend(title="experiment")
        return png(fig, DPI)


def _curve_panel(ax: Axes, curves: Mapping[str, Mapping[int, RunCurves]], which: str, scale: float,
                 colours: Mapping[str, tuple]) -> None:
    """One line per (experiment, seed) of ``which`` (``loss`` or ``val``), labelled once per
    experiment; the exported epoch of a validation curve is marked."""
    for name, runs in curves.items():
        label = name if len(runs) == 1 else f"{name} ({len(runs)} seeds)"
        for seed, run in runs.items():
            curve = getattr(run, which)
            if curve is None:
                continue
            epochs, values = curve[0] + 1, scale * curve[1]
            ax.plot(epochs, values, color=colours[name], marker=".", label=label)
            label = None
            if which == "val" and run.selected is not None and run.selected in curve[0]:
                at = int(np.flatnonzero(curve[0] == run.selected)[0])
                ax.plot(epochs[at], values[at], marker="*", markersize=11, color=colours[name],
                        markeredgecolor="black", linestyle="none")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _loss_scale(ax: Axes, curves: Mapping[str, Mapping[int, RunCurves]]) -> None:
    """A log axis where every loss is positive: losses of different methods differ by orders
    of magnitude, and a linear axis would flatten all but the largest."""
    losses = [r.loss[1] for runs in curves.values() for r in runs.values() if r.loss is not None]
    positive = all(len(v) and np.all(v > 0) for v in losses)
    if positive:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())  # 0.8, 10: no powers of ten
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))
    ax.set_ylabel("training loss" + (" (log scale)" if positive else ""))
    ax.set_title("training loss")


def curves_figure(curves: Mapping[str, Mapping[int, RunCurves]], val_metrics: Mapping[str, str],
                  colours: Mapping[str, tuple]) -> bytes | None:
    """Training loss (left) and validation metric in % (right) per epoch, one line per seed,
    for the experiments that were trained (untrained references have no loss: left out);
    a star marks the epoch each run exported."""
    trained = {n: runs for n, runs in curves.items() if any(r.loss is not None for r in runs.values())}
    if not trained:
        return None
    metrics = sorted({title(val_metrics[n]) for n in trained})
    with style.context(STYLE):
        fig = Figure(figsize=(10.0, 4.0), layout="constrained")
        loss, val = fig.subplots(1, 2)
        _curve_panel(loss, trained, "loss", 1.0, colours)
        _curve_panel(val, trained, "val", 100.0, colours)
        _loss_scale(loss, trained)
        val.set_ylabel(f"validation {' / '.join(metrics)} (%)")
        val.set_title(f"validation {' / '.join(metrics)} (★: the exported epoch)")
        val.legend(loc="upper left", bbox_to_anchor=(1.01, 1), title="experiment")
        return png(fig, DPI)


def _slug(*parts: str) -> str:
    return re.sub(r"[^\w.-]+", "_", "-".join(parts))


def report_figures(results: Mapping[str, Runs], curves: Mapping[str, Mapping[int, RunCurves]],
                   val_metrics: Mapping[str, str]) -> list[Picture]:
    """Every figure of the report: per (dataset, protocol) section the comparison bars and the
    recall@K curves, then the training curves; a figure with nothing to show is left out."""
    colours = palette(sorted(results))
    pictures = []
    for (dataset, protocol), names in sections(results).items():
        runs, heading = seed_runs(results, names), f"{dataset} · {protocol}"
        drawn = [(f"comparison-{_slug(dataset, protocol)}.png",
                  f"{heading}: headline metrics per experiment, with their 95% intervals",
                  comparison_figure(heading, runs, colours)),
                 (f"recall_at_k-{_slug(dataset, protocol)}.png", f"{heading}: recall@K against K",
                  recall_figure(heading, runs, colours))]
        pictures += [Picture(file, caption, png) for file, caption, png in drawn if png is not None]
    trained = curves_figure(curves, val_metrics, colours)
    if trained is not None:
        pictures.append(Picture("curves.png", "Training loss and validation metric per epoch, one line per seed",
                                trained))
    return pictures
