"""Comparison tables over experiments (markdown and self-contained HTML from the same rows) and
retrieval grids for looking at results."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dml.data.images import open_rgb
from dml.errors import ConfigError
from dml.evaluate.catalog import metric_key
from dml.evaluate.protocols import Protocol, build_protocol
from dml.index import index_order
from dml.stats import paired_difference, t_interval


# ----------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the document's."""

    level: int
    text: str


@dataclass(frozen=True)
class Table:
    """A table's header and rows of cells: rendered as markdown or as HTML from the same rows."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]


Block = Heading | Table | str  # a str is a paragraph


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as one markdown document."""
    def render(block: Block) -> str:
        if isinstance(block, Heading):
            return f"{'#' * block.level} {block.text}"
        if isinstance(block, Table):
            return _markdown(block.header, block.rows)
        return block
    return "\n\n".join(render(b) for b in blocks) + "\n"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(blocks: Sequence[Block]) -> str:
    """The blocks as an HTML fragment (escaped text, real tables)."""
    def render(block: Block) -> str:
        if isinstance(block, Heading):
            return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
        if isinstance(block, Table):
            return _html_table(block)
        return f"<p>{html.escape(block)}</p>"
    return "\n".join(render(b) for b in blocks)


# ----------------------------------------------------------------------------- columns


def _sort_key(key: str, prefixes: list[str]) -> tuple:
    metric = metric_key(key)
    return (prefixes.index(metric.scope) if metric.scope in prefixes else len(prefixes), *metric.order())


def title(key: str) -> str:
    """Column title of a metric key: ``recall@1`` -> ``R@1``, ``middle/map`` -> ``middle mAP``."""
    return metric_key(key).title


def metric_columns(metrics: Sequence[Mapping[str, object]],
                   order: Sequence[str] = ()) -> list[str]:
    """The metric keys a table shows, in order: unprefixed ones first, then each prefix's
    (per scale, in ``order``, then in order of appearance, ``avg`` last) headline metrics."""
    keys: list[str] = []
    for m in metrics:
        keys += [k for k in m if k not in keys and metric_key(k).shown]
    prefixes = [""] + list(dict.fromkeys([*order, *(metric_key(k).scope for k in keys if metric_key(k).scope)]))
    if "avg" in prefixes:
        prefixes.append(prefixes.pop(prefixes.index("avg")))
    keys = [k for k in keys if not metric_key(k).scope or metric_key(k).per_scope]
    return sorted(keys, key=lambda k: _sort_key(k, prefixes))


def protocol_of(run: Mapping[str, Any]) -> Protocol:
    """The protocol an evaluation file was made with (self-retrieval where it names none)."""
    return build_protocol(run.get("protocol") or {"name": "self_retrieval"})


def headline_metrics(protocol: Protocol, columns: Sequence[str]) -> list[str]:
    """The figures that head the protocol's results (:attr:`Protocol.headline`, e.g. R@1 and
    MAP@R) among ``columns``: shown beside each quantized index, in the comparison chart and
    in the summary metrics file."""
    return [k for k in protocol.headline if k in columns]


def _precision_at(columns: Sequence[str]) -> list[str]:
    """The unscoped P@K columns beyond K = 1: a protocol that asks for them (sketch-based
    retrieval's P@200) compares them after its headline."""
    cutoffs = [m for m in map(metric_key, columns) if m.spec_name == "precision" and not m.scope and m.k != 1]
    return [m.key for m in sorted(cutoffs, key=lambda m: m.k)]


def summary_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers of an evaluation that `dvc exp show` lists: its float headline figures
    (the details stay in the evaluation file beside it)."""
    floats = evaluation["float"]
    return {key: round(float(floats[key]), 4) for key in headline_metrics(protocol_of(evaluation), list(floats))}


# ----------------------------------------------------------------------------- figures over seeds


Runs = Mapping[int, Mapping]  # seed -> one run's metrics.json


@dataclass(frozen=True)
class Estimate:
    """A figure over runs and its 95% interval: ``kind`` ``t`` (over seeds), ``bootstrap``
    (one seed, over queries) or ``""`` (no interval: ``low`` and ``high`` are None)."""

    mean: float
    low: float | None = None
    high: float | None = None
    kind: str = ""


def estimate(values: Sequence[float | None], bootstrap: Sequence[float] | None = None) -> Estimate | None:
    """The mean of the present ``values`` (one per seed) with the 95% t interval over seeds,
    or for one seed the bootstrap interval over queries when given; None when none is present."""
    present = [v for v in values if isinstance(v, float)]
    if not present:
        return None
    interval = t_interval(present)
    if interval.n >= 2:
        return Estimate(interval.mean, interval.low, interval.high, "t")
    if bootstrap is not None and len(present) == 1:
        return Estimate(interval.mean, float(bootstrap[0]), float(bootstrap[1]), "bootstrap")
    return Estimate(interval.mean)


def float_estimate(runs: Sequence[Mapping], key: str) -> Estimate | None:
    """A float figure of an experiment over its runs (seeds); a single run carries the
    bootstrap interval of its metrics file (``float_bootstrap_ci``)."""
    bootstrap = runs[0].get("float_bootstrap_ci", {}).get(key) if len(runs) == 1 else None
    return estimate([r["float"].get(key) for r in runs], bootstrap)


def _format(e: Estimate | None) -> str:
    """``mean ± half-width`` in %, the bootstrap's marked ``ᵇ``; the mean alone without interval."""
    if e is None:
        return "–"
    if e.low is None or e.high is None:
        return f"{100 * e.mean:.1f}"
    mark = "ᵇ" if e.kind == "bootstrap" else ""
    return f"{100 * e.mean:.1f} ± {100 * (e.high - e.low) / 2:.1f}{mark}"


def _cell(values: Sequence[float | None], bootstrap: Sequence[float] | None = None) -> str:
    """``mean ± half-width`` in %: the 95% t interval over seeds, or for one seed the 95%
    bootstrap interval over queries when given (marked ``ᵇ``), else the mean alone."""
    return _format(estimate(values, bootstrap))


def _float_cell(runs: Sequence[Mapping], key: str) -> str:
    """A float figure of an experiment over its runs (seeds)."""
    return _format(float_estimate(runs, key))


def _difference(method: Runs, baseline: Runs, key: str) -> str:
    """The paired difference of a float figure on the seeds both ran (:func:`_paired`)."""
    return _paired({s: r["float"].get(key) for s, r in method.items()},
                   {s: r["float"].get(key) for s, r in baseline.items()})


def _paired(method: Mapping[int, float | None], baseline: Mapping[int, float | None]) -> str:
    """The paired difference of per-seed values on the seeds both have, in points, marked
    ``*`` where its 95% interval excludes zero."""
    diff = paired_difference({s: v for s, v in method.items() if isinstance(v, float)},
                             {s: v for s, v in baseline.items() if isinstance(v, float)})
    if diff.n == 0:
        return "–"
    if diff.n < 2:
        return f"{100 * diff.mean:+.1f} (1 seed)"
    mark = " *" if diff.excludes_zero() else ""
    return f"{100 * diff.mean:+.1f} ± {100 * diff.half_width:.1f}{mark}"


# ----------------------------------------------------------------------------- comparison


def seed_runs(results: Mapping[str, Runs], names: Sequence[str]) -> dict[str, list[Mapping]]:
    """Each experiment's runs in seed order."""
    return {n: [results[n][s] for s in sorted(results[n])] for n in names}


def _section(names: list[str], results: Mapping[str, Runs],
             baselines: Mapping[str, list[str]]) -> list[Block]:
    runs = seed_runs(results, names)
    columns = metric_columns([r["float"] for n in names for r in runs[n]],
                             order=next((r["prefixes"] for n in names for r in runs[n] if "prefixes" in r), ()))
    columns = _graded(columns) or columns
    indexes = sorted({q for n in names for r in runs[n] for q in r.get("quantized", {})}, key=index_order)
    protocol = protocol_of(runs[names[0]][0])
    shown = headline_metrics(protocol, columns)
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
    parts: list[Block] = [_setup(runs[names[0]][0]), Table(header, rows)]
    paired = [(n, b) for n in names for b in baselines.get(n, []) if b in names]
    if paired:
        keys = _compared(protocol, columns, 3)
        parts += [Heading(3, "Against the baseline (paired over seeds)"),
                  Table(["experiment", "baseline", *[f"Δ {title(k)}" for k in keys]],
                        [[n, b, *[_difference(results[n], results[b], k) for k in keys]]
                         for n, b in paired]),
                  "Δ: mean difference in points ± half-width of its 95% t interval over the seeds "
                  "both ran; * where the interval excludes zero."]
    parts += _reference_table(names, runs, columns, protocol)
    parts += _gap_table(names, results, shown, baselines)
    detail_keys = _compared(protocol, columns, 4)
    detail_rows = []
    for name in names:
        detail_rows.append([name, "float", *[_cell([r["float"].get(k) for r in runs[name]]) for k in detail_keys],
                            str(runs[name][0].get("bytes_per_vector", "?")), "–"])
        for q in indexes:
            quantized = [m for m in (r.get("quantized", {}).get(q) for r in runs[name]) if m]
            if quantized:
                detail_rows.append([name, q, *[_cell([m.get(k) for m in quantized]) for k in detail_keys],
                                    str(quantized[0].get("bytes_per_vector")),
                                    _cell([m.get("largest_code_share") for m in quantized])])
    return parts + [Heading(3, "Float vs quantized"),
                    Table(["experiment", "index", *[title(k) for k in detail_keys], "B/vec", "top code"], detail_rows),
                    "top code: the share of the gallery holding its most common code (100: every item "
                    "one code, its ranking all ties)."]


UNTRAINED = "untrained"  # the loss column of a reference row (nothing learned)


def _clears(method: Estimate | None, reference: Estimate | None) -> str:
    """``+Δ`` in points of a method over a reference, marked ✓ when Δ exceeds the larger
    half-width of the two intervals (where both have one)."""
    if method is None or reference is None:
        return "–"
    gap = method.mean - reference.mean
    widths = [(e.high - e.low) / 2 for e in (method, reference) if e.low is not None and e.high is not None]
    mark = " ✓" if len(widths) == 2 and gap > max(widths) else ""
    return f"{100 * gap:+.1f}{mark}"


def _reference_table(names: Sequence[str], runs: Mapping[str, list[Mapping]],
                     columns: Sequence[str], protocol: Protocol) -> list[Block]:
    """Each trained experiment against each untrained reference of its section, on R@1 and
    the protocol's headline figures: what training on the data adds."""
    references = [n for n in names if runs[n][0].get("loss") == UNTRAINED]
    trained = [n for n in names if n not in references]
    recall = next((k for k in ("recall@1", "avg/recall@1") if k in columns), None)
    keys = list(dict.fromkeys(k for k in (recall, *headline_metrics(protocol, columns)) if k))
    if not references or not trained or not keys:
        return []
    header = ["experiment", *[f"Δ {title(k)} vs {r}" for r in references for k in keys]]
    rows = [[n, *[_clears(float_estimate(runs[n], k), float_estimate(runs[r], k)) for r in references for k in keys]]
            for n in trained]
    return [Heading(3, "Against the references"), Table(header, rows),
            "Δ: the experiment's figure minus the reference's, in points; ✓ where it exceeds the "
            "larger half-width of the two intervals in the table above."]


def _gaps(runs: Runs, key: str) -> dict[int, float | None]:
    """Per seed, seen − unseen of a float figure (None where either is missing)."""
    out: dict[int, float | None] = {}
    for seed, run in runs.items():
        if "gap" in run:
            seen, unseen = (run["gap"][side]["float"].get(key) for side in ("seen", "unseen"))
            out[seed] = seen - unseen if isinstance(seen, float) and isinstance(unseen, float) else None
    return out


def _gap_table(names: Sequence[str], results: Mapping[str, Runs], keys: Sequence[str],
               baselines: Mapping[str, list[str]]) -> list[Block]:
    """Seen against unseen classes: each headline figure on the sample of training classes
    and on as many test classes (an evaluation's ``gap``), the gap between them (seen −
    unseen, per seed, then over seeds), and for a method the paired difference of its gap to
    its baseline's; nothing where no run has the samples (a split by image)."""
    with_gap = [n for n in names if any("gap" in r for r in results[n].values())]
    if not with_gap or not keys:
        return []
    first = {n: b[0] for n, b in baselines.items() if b}  # a gap is compared with the first baseline
    compared = [n for n in with_gap if first.get(n) in with_gap]
    rows = []
    for name in with_gap:
        measured = [results[name][s]["gap"] for s in sorted(results[name]) if "gap" in results[name][s]]
        row = [name, str(measured[0]["classes"])]
        for key in keys:
            row += [_cell([m[side]["float"].get(key) for m in measured]) for side in ("seen", "unseen")]
            row.append(_cell(list(_gaps(results[name], key).values())))
            if compared:
                base = first.get(name)
                row.append(_paired(_gaps(results[name], key), _gaps(results[base], key))
                           if name in compared else "–")
        rows.append(row)
    header = ["experiment", "classes"]
    for key in keys:
        header += [f"seen {title(key)}", f"unseen {title(key)}", f"gap {title(key)}"]
        header += [f"Δ gap {title(key)} vs baseline"] if compared else []
    return [Heading(3, "Seen vs unseen classes"), Table(header, rows),
            "Seen: the training images of a seeded sample of the classes trained on; unseen: "
            "the test images of as many test classes (classes: how many on each side), each "
            "image ranked against the others of its sample. Gap: seen − unseen, per seed, then "
            "its mean ± the half-width of its 95% t interval over seeds; Δ gap: the paired "
            "difference of a method's gap to its baseline's (negative: a smaller gap)."]


def _graded(columns: Sequence[str]) -> list[str]:
    """The figures of a graded (multi-label) evaluation, one with NDCG columns: R@1 (the top
    result shares a class), mAP, mAP@K and NDCG@K; empty for any other evaluation. The
    single-label figures (MAP@R, R-precision, R@K beyond 1) say little there."""
    if not any("grades" in metric_key(k).needs for k in columns):
        return []
    return [k for k in columns if k == "recall@1" or (m := metric_key(k)).spec_name in ("map", "ndcg") and not m.scope]


def _compared(protocol: Protocol, columns: Sequence[str], n: int) -> list[str]:
    """The first ``n`` figures to compare: a graded evaluation's mAP and NDCG, else the
    protocol's own (no prefix, NMI and AMI aside; headed by mAP and P@K where it reports
    P@K), else its averages over tasks (``avg/``: over scales), else the first columns."""
    graded = [k for k in _graded(columns) if k != "recall@1"]
    own = [k for k in columns if not (m := metric_key(k)).scope and "labels" not in m.needs]  # clustering aside
    if _precision_at(columns):
        lead = headline_metrics(protocol, columns)
        return (lead + [k for k in own if k not in lead])[:n]
    return graded[:n] or own[:n] or [k for k in columns if metric_key(k).scope == "avg"][:n] or list(columns[:n])


def _setup(first: Mapping) -> str:
    return (
        f"Backbone {first.get('backbone', '?')}, embedding size {first.get('embed_dim', '?')}, "
        f"image size {first.get('image_size', '?')}, split {first.get('split', '?')} "
        f"({first.get('queries', '?')} queries against {first.get('gallery', '?')} gallery "
        f"items, classes unseen in training where the split is by class). Figures in %: the mean "
        f"over seeds ± the half-width of its 95% t interval; with one seed, ± the half-width of "
        f"the 95% bootstrap interval over queries (ᵇ). {conventions_caption(first.get('protocol'))}"
    )


#: How each metric convention reads in a caption.
CONVENTION_TEXT = {
    ("ndcg_gain", "linear"): "NDCG with linear gain (the grade)",
    ("ndcg_gain", "exponential"): "NDCG with exponential gain (2^grade − 1)",
    ("map_denominator", "found"): "mAP@K over the relevant items found in the top K",
    ("map_denominator", "min_r_k"): "mAP@K over min(R, K)",
}


def conventions_caption(protocol: Mapping[str, Any] | None) -> str:
    """One sentence naming the metric conventions of a protocol spec's figures: ties (always
    the expectation over tied orders), NDCG's gain and mAP@K's denominator where reported."""
    from dml.evaluate.protocols import build_protocol

    parts = ["ranks with tied scores count as the mean over the orders of the tied items"]
    try:
        conventions = build_protocol(dict(protocol or {"name": "self_retrieval"})).conventions()
    except ConfigError:  # a result file from another version: its conventions are unknown
        conventions = {}
    parts += [CONVENTION_TEXT[item] for item in conventions.items()]
    return "Metric conventions: " + "; ".join(parts) + "."


def sections(results: Mapping[str, Runs]) -> dict[tuple[str, str], list[str]]:
    """The experiments compared together, by (dataset, protocol name), names sorted."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in sorted(results):
        res = next(iter(results[name].values()))
        protocol = (res.get("protocol") or {}).get("name", "self_retrieval")
        groups.setdefault((str(res.get("dataset", "?")), protocol), []).append(name)
    return groups


Baselines = Mapping[str, str | Sequence[str]]


def comparison_blocks(results: Mapping[str, Runs], baselines: Baselines | None = None) -> list[Block]:
    """The comparison as blocks: one section per (dataset, protocol), whose columns are the
    metrics its experiments hold; one row per experiment (float figures over its seeds, then
    each quantized index's), the paired difference of each method against each baseline it
    names (``baselines``: experiment -> baseline or list of them), then a float-vs-quantized
    table. Percentages.
    """
    listed = {n: [b] if isinstance(b, str) else list(b) for n, b in (baselines or {}).items()}
    blocks: list[Block] = [Heading(1, "Comparison")]
    for (dataset, protocol), names in sections(results).items():
        blocks.append(Heading(2, f"{dataset} · {protocol}"))
        blocks += _section(names, results, listed)
    return blocks


def comparison_table(results: Mapping[str, Runs], baselines: Baselines | None = None) -> str:
    """The comparison (:func:`comparison_blocks`) as markdown."""
    return to_markdown(comparison_blocks(results, baselines))


# ----------------------------------------------------------------------------- HTML report

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def report_html(blocks: Sequence[Block], figures: Mapping[str, bytes], grids: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: the comparison tables, then the figures, then the
    retrieval grids (``caption -> PNG bytes``), images embedded as data URIs and the style
    inline, so that it shows everything offline."""
    parts = [to_html(blocks)]
    if figures:
        parts += ["<h2>Figures</h2>", *[_figure(c, png) for c, png in figures.items()]]
    if grids:
        parts += ["<h2>Retrieval grids</h2>", *[_figure(c, png) for c, png in grids.items()]]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>dml report</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


# ----------------------------------------------------------------------------- retrieval grid

QUERY_FRAME, SAME_CLASS, OTHER_CLASS = (40, 40, 40), (0, 170, 0), (220, 0, 0)
_PAD = 4  # pixels between tiles and around the grid


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text`` cut to ``width`` pixels, ending in ``…`` when cut."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    """``text`` in at most ``max_lines`` lines of ``width`` pixels, broken after ``-``, ``_``,
    ``/`` or a space (class names such as ``circle-red-solid-ar100``); the rest is cut."""
    lines: list[str] = []
    for token in re.split(r"(?<=[-_/ ])", text):
        if lines and font.getlength(lines[-1] + token) <= width:
            lines[-1] += token
        else:
            lines.append(token)
    kept = [_fit(line, font, width) for line in lines[:max_lines]]
    if len(lines) > max_lines:
        kept[-1] = _fit(kept[-1].rstrip("…") + "…", font, width)
    return kept


def _captions(names: Sequence[str] | None, scores: Sequence[float] | None, font, width: int,
              max_lines: int) -> list[list[str]]:
    """Caption lines of one grid row: each tile's score (``query`` for the first tile), so
    that the scores of a row line up, then its class name."""
    count = len(names) if names is not None else (len(scores) + 1 if scores is not None else 0)
    out = []
    for c in range(count):
        lines = [] if scores is None else ["query" if c == 0 else f"{float(scores[c - 1]):.3f}"]
        out.append(lines + (_wrap(str(names[c]), font, width, max_lines) if names is not None else []))
    return out


def _legend_items(score_name: str | None) -> list[tuple[tuple[int, int, int] | None, str]]:
    items = [(QUERY_FRAME, "first column: the query"), (SAME_CLASS, "relevant: same class (or a shared one)"),
             (OTHER_CLASS, "not relevant")]
    return items + ([(None, f"number: {score_name}")] if score_name else [])


def _legend_layout(items, font, width: int, line: int) -> tuple[list[tuple[int, int]], int]:
    """Positions of the legend items, left to right, wrapped to ``width``; and its height."""
    swatch, gap = line, 12
    x, y, places = _PAD, 0, []
    for colour, text in items:
        size = (swatch + 4 if colour else 0) + int(font.getlength(text))
        if x > _PAD and x + size > width - _PAD:
            x, y = _PAD, y + line + 2
        places.append((x, y))
        x += size + gap
    return places, y + line + 2


def _draw_legend(draw: ImageDraw.ImageDraw, items, places, top: int, font, line: int) -> None:
    for (colour, text), (x, y) in zip(items, places):
        y += top
        if colour:
            draw.rectangle([x, y + 1, x + line - 2, y + line - 1], outline=colour, width=2)
            x += line + 4
        draw.text((x, y), text, fill=(0, 0, 0), font=font)


def _tile(data: bytes, cell: int) -> Image.Image:
    """An encoded image as a ``cell`` x ``cell`` tile: small images are enlarged pixel for
    pixel (sharper, and a third of the PNG size of a smooth enlargement), large ones reduced
    smoothly."""
    image = open_rgb(data)
    smaller = max(image.size) < cell
    return image.resize((cell, cell), Image.Resampling.NEAREST if smaller else Image.Resampling.LANCZOS)


def retrieval_grid(
    query_images: Sequence[bytes],
    result_images: Sequence[Sequence[bytes]],
    correct: np.ndarray,
    *,
    query_names: Sequence[str] | None = None,
    result_names: Sequence[Sequence[str]] | None = None,
    scores: np.ndarray | None = None,
    score_name: str = "similarity to the query",
    cell: int = 80,
    border: int = 3,
    name_lines: int = 3,
) -> Image.Image:
    """A grid: one row per query (first column), its top results beside it; a green border
    marks a result of the query's class, a red one a wrong result. Under each tile its class
    name (``query_names``, ``result_names``, wrapped to ``name_lines`` lines) and each
    result's score (``scores[r, c]``, described in the legend as ``score_name``); a legend at
    the bottom says what the borders mean. PIL's built-in font: nothing is downloaded.
    """
    if (query_names is None) != (result_names is None):
        raise ValueError("give both query_names and result_names, or neither")
    font = ImageFont.load_default()
    line = sum(font.getmetrics())
    rows, cols = len(query_images), 1 + (len(result_images[0]) if result_images else 0)
    captions = [_captions(None if query_names is None else [query_names[r], *result_names[r]],
                          None if scores is None else scores[r], font, cell, name_lines)
                for r in range(rows)]
    strip = max((len(lines) for row in captions for lines in row), default=0) * line
    step_y = cell + strip + _PAD + (2 if strip else 0)
    width = cols * (cell + _PAD) + _PAD
    items = _legend_items(score_name if scores is not None else None)
    places, legend_height = _legend_layout(items, font, width, line)
    grid = Image.new("RGB", (width, rows * step_y + _PAD + legend_height), "white")
    draw = ImageDraw.Draw(grid)
    for r in range(rows):
        for c, data in enumerate([query_images[r], *result_images[r]]):
            x, y = _PAD + c * (cell + _PAD), _PAD + r * step_y
            grid.paste(_tile(data, cell), (x, y))
            colour = QUERY_FRAME if c == 0 else SAME_CLASS if correct[r, c - 1] else OTHER_CLASS
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=colour, width=1 if c == 0 else border)
            for i, text in enumerate(captions[r][c] if captions[r] else []):
                draw.text((x, y + cell + 2 + i * line), text, fill=(0, 0, 0), font=font)
    _draw_legend(draw, items, places, rows * step_y + _PAD, font, line)
    return grid
