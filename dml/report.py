"""Comparison tables over experiments and retrieval grids for looking at results."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from dml.stats import paired_difference, t_interval

#: Order of metric names in a table (a name's K sorts numerically); others follow by name.
ORDER = ("recall", "precision", "map@r", "r_precision", "map", "map@", "ndcg", "asi", "nmi", "ami")
#: Short column titles.
TITLES = {"recall": "R", "precision": "P", "map@r": "MAP@R", "r_precision": "RP", "map": "mAP",
          "ndcg": "NDCG", "asi": "ASI", "nmi": "NMI", "ami": "AMI"}
#: Never shown: P@1 equals R@1; the count of queries without a relevant item is bookkeeping.
HIDDEN = {"precision@1", "queries_without_relevant", "bytes_per_vector"}
#: Metrics shown per prefix (per scale) in a table; the unprefixed protocol shows them all.
PREFIXED = ("recall@1", "map@r", "map", "asi")
#: The figures shown beside each quantized index, the first two present of these.
QUANTIZED = ("recall@1", "map@r", "avg/recall@1", "avg/map", "map", "ndcg@10")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _sort_key(key: str, prefixes: list[str]) -> tuple:
    prefix, _, name = key.rpartition("/")
    base, _, k = name.partition("@")
    stem = name if name in ORDER else (f"{base}@" if base == "map" and k else base)
    rank = ORDER.index(stem) if stem in ORDER else len(ORDER)
    return (prefixes.index(prefix) if prefix in prefixes else len(prefixes), rank,
            int(k) if k.isdigit() else 0, name)


def title(key: str) -> str:
    """Column title of a metric key: ``recall@1`` -> ``R@1``, ``middle/map`` -> ``middle mAP``."""
    prefix, _, name = key.rpartition("/")
    base, at, k = name.partition("@")
    short = TITLES.get(name) or (f"{TITLES.get(base, base)}{at}{k.upper() if k == 'r' else k}")
    if base == "map" and k and k != "r":
        short = f"mAP@{k}"
    return f"{prefix} {short}" if prefix else short


def metric_columns(metrics: Sequence[Mapping[str, object]]) -> list[str]:
    """The metric keys a table shows, in order: unprefixed ones first, then each prefix's
    (per scale, in order of appearance, ``avg`` last) headline metrics."""
    keys: list[str] = []
    for m in metrics:
        keys += [k for k in m if k not in keys and k.rpartition("/")[2] not in HIDDEN]
    prefixes = [""] + list(dict.fromkeys(k.rpartition("/")[0] for k in keys if "/" in k))
    if "avg" in prefixes:
        prefixes.append(prefixes.pop(prefixes.index("avg")))
    keys = [k for k in keys if "/" not in k or k.rpartition("/")[2] in PREFIXED]
    return sorted(keys, key=lambda k: _sort_key(k, prefixes))


Runs = Mapping[int, Mapping]  # seed -> one run's metrics.json


def _cell(values: Sequence[float | None], bootstrap: Sequence[float] | None = None) -> str:
    """``mean ± half-width`` in %: the 95% t interval over seeds, or for one seed the 95%
    bootstrap interval over queries when given (marked ``ᵇ``), else the mean alone."""
    present = [v for v in values if isinstance(v, float)]
    if not present:
        return "–"
    interval = t_interval(present)
    if interval.n < 2:
        if bootstrap is not None and len(present) == 1:
            return f"{100 * interval.mean:.1f} ± {100 * (bootstrap[1] - bootstrap[0]) / 2:.1f}ᵇ"
        return f"{100 * interval.mean:.1f}"
    return f"{100 * interval.mean:.1f} ± {100 * interval.half_width:.1f}"


def _float_cell(runs: Sequence[Mapping], key: str) -> str:
    """A float figure of an experiment over its runs (seeds)."""
    bootstrap = runs[0].get("float_bootstrap_ci", {}).get(key) if len(runs) == 1 else None
    return _cell([r["float"].get(key) for r in runs], bootstrap)


def _difference(method: Runs, baseline: Runs, key: str) -> str:
    """The paired difference on the seeds both ran, in points, marked ``*`` where its 95%
    interval excludes zero."""
    pairs = {s: r["float"].get(key) for s, r in method.items()}
    base = {s: r["float"].get(key) for s, r in baseline.items()}
    diff = paired_difference({s: v for s, v in pairs.items() if isinstance(v, float)},
                             {s: v for s, v in base.items() if isinstance(v, float)})
    if diff.n == 0:
        return "–"
    if diff.n < 2:
        return f"{100 * diff.mean:+.1f} (1 seed)"
    mark = " *" if diff.excludes_zero() else ""
    return f"{100 * diff.mean:+.1f} ± {100 * diff.half_width:.1f}{mark}"


def _section(names: list[str], results: Mapping[str, Runs], baselines: Mapping[str, str]) -> list[str]:
    runs = {n: [results[n][s] for s in sorted(results[n])] for n in names}
    columns = metric_columns([r["float"] for n in names for r in runs[n]])
    indexes = sorted({q for n in names for r in runs[n] for q in r.get("quantized", {})})
    shown = [k for k in QUANTIZED if k in columns][:2]
    header = ["experiment", "loss", "seeds", *[title(k) for k in columns], "B/vec"]
    header += [f"{q} {' / '.join(title(k) for k in shown)} (B/vec)" for q in indexes]
    rows = []
    for name in names:
        first = runs[name][0]
        row = [name, str(first.get("loss", "?")), str(len(runs[name])),
               *[_float_cell(runs[name], k) for k in columns],
               str(first.get("bytes_per_vector", "?"))]
        for q in indexes:
            quantized = [r.get("quantized", {}).get(q) for r in runs[name]]
            quantized = [m for m in quantized if m]
            row.append(f"{' / '.join(_cell([m.get(k) for m in quantized]) for k in shown)} "
                       f"({quantized[0].get('bytes_per_vector')})" if quantized else "–")
        rows.append(row)
    parts = [_setup(runs[names[0]][0]), _markdown(header, rows)]
    paired = [n for n in names if baselines.get(n) in names]
    if paired:
        keys = [k for k in columns if "/" not in k and k != "nmi"][:3] or columns[:3]
        parts += ["### Against the baseline (paired over seeds)",
                  _markdown(["experiment", "baseline", *[f"Δ {title(k)}" for k in keys]],
                            [[n, baselines[n], *[_difference(results[n], results[baselines[n]], k) for k in keys]]
                             for n in paired]),
                  "Δ: mean difference in points ± half-width of its 95% t interval over the seeds "
                  "both ran; * where the interval excludes zero."]
    detail_keys = [k for k in columns if "/" not in k and k != "nmi"][:4] or columns[:4]
    detail_rows = []
    for name in names:
        detail_rows.append([name, "float", *[_cell([r["float"].get(k) for r in runs[name]]) for k in detail_keys],
                            str(runs[name][0].get("bytes_per_vector", "?"))])
        for q in indexes:
            quantized = [m for m in (r.get("quantized", {}).get(q) for r in runs[name]) if m]
            if quantized:
                detail_rows.append([name, q, *[_cell([m.get(k) for m in quantized]) for k in detail_keys],
                                    str(quantized[0].get("bytes_per_vector"))])
    return parts + ["### Float vs quantized",
                    _markdown(["experiment", "index", *[title(k) for k in detail_keys], "B/vec"], detail_rows)]


def _setup(first: Mapping) -> str:
    return (
        f"Backbone {first.get('backbone', '?')}, embedding size {first.get('embed_dim', '?')}, "
        f"image size {first.get('image_size', '?')}, split {first.get('split', '?')} "
        f"({first.get('queries', '?')} queries against {first.get('gallery', '?')} gallery "
        f"items, classes unseen in training where the split is by class). Figures in %: the mean "
        f"over seeds ± the half-width of its 95% t interval; with one seed, ± the half-width of "
        f"the 95% bootstrap interval over queries (ᵇ)."
    )


def comparison_table(results: Mapping[str, Runs], baselines: Mapping[str, str] | None = None) -> str:
    """Markdown: one section per (dataset, protocol), whose columns are the metrics its
    experiments hold; one row per experiment (float figures over its seeds, then each
    quantized index's), the paired difference of each method against the baseline it names
    (``baselines``: experiment -> baseline), then a float-vs-quantized table. Percentages.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for name in sorted(results):
        res = next(iter(results[name].values()))
        protocol = (res.get("protocol") or {}).get("name", "self_retrieval")
        groups.setdefault((str(res.get("dataset", "?")), protocol), []).append(name)
    parts = ["# Comparison"]
    for (dataset, protocol), names in groups.items():
        parts.append(f"## {dataset} · {protocol}")
        parts += _section(names, results, baselines or {})
    return "\n\n".join(parts) + "\n"


def retrieval_grid(
    query_images: Sequence[bytes],
    result_images: Sequence[Sequence[bytes]],
    correct: np.ndarray,
    *,
    cell: int = 64,
    border: int = 3,
) -> Image.Image:
    """A grid: one row per query (first column), its top results beside it; a green border
    marks a result of the query's class, a red one a wrong result.
    """
    rows, cols = len(query_images), 1 + (len(result_images[0]) if result_images else 0)
    pad = 4
    grid = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for r in range(rows):
        tiles = [query_images[r], *result_images[r]]
        for c, data in enumerate(tiles):
            x, y = pad + c * (cell + pad), pad + r * (cell + pad)
            tile = Image.open(io.BytesIO(data)).convert("RGB").resize((cell, cell))
            grid.paste(tile, (x, y))
            if c == 0:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(40, 40, 40), width=1)
            else:
                colour = (0, 170, 0) if correct[r, c - 1] else (220, 0, 0)
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=colour, width=border)
    return grid
