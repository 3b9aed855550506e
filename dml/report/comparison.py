"""The comparison of experiments as blocks: one section per (dataset, protocol) with its
setup, the main table (float figures over seeds, then each quantized index's), the paired
differences against baselines, the gains over untrained references, seen against unseen
classes, and float against quantized."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dml.errors import ConfigError
from dml.evaluate.protocols import Protocol, build_protocol
from dml.index import index_order
from dml.report.blocks import Block, Heading, Table, to_markdown
from dml.report.columns import approximate_note, compared, graded, headline_metrics, metric_columns, protocol_of, title
from dml.report.estimates import cell, clears, difference, float_cell, float_estimate, paired
from dml.report.runs import UNTRAINED, Runs, sections, seed_runs

Baselines = Mapping[str, str | Sequence[str]]


def _section(names: list[str], results: Mapping[str, Runs],
             baselines: Mapping[str, list[str]]) -> list[Block]:
    runs = seed_runs(results, names)
    columns = metric_columns([r["float"] for n in names for r in runs[n]],
                             order=next((r["prefixes"] for n in names for r in runs[n] if "prefixes" in r), ()))
    columns = graded(columns) or columns
    indexes = sorted({q for n in names for r in runs[n] for q in r.get("quantized", {})}, key=index_order)
    protocol = protocol_of(runs[names[0]][0])
    shown = headline_metrics(protocol, columns)
    header = ["experiment", "loss", "seeds", *[title(k) for k in columns], "B/vec"]
    header += [f"{q} {' / '.join(title(k) for k in shown)} (B/vec)" for q in indexes]
    rows = []
    notes = {name: note for name in names if (note := approximate_note(runs[name]))}
    for name in names:
        first = runs[name][0]
        row = [f"{name} ≈" if name in notes else name, str(first.get("loss", "?")), str(len(runs[name])),
               *[float_cell(runs[name], k) for k in columns],
               str(first.get("bytes_per_vector", "?"))]
        for q in indexes:
            quantized = [r.get("quantized", {}).get(q) for r in runs[name]]
            quantized = [m for m in quantized if m]
            row.append(f"{' / '.join(cell([m.get(k) for m in quantized]) for k in shown)} "
                       f"({quantized[0].get('bytes_per_vector')})" if quantized else "–")
        rows.append(row)
    parts: list[Block] = [_setup(runs[names[0]][0]), Table(header, rows)]
    if notes:  # figures from an approximate candidate ranking (dml.evaluate.candidates) say so
        parts.append("≈ ranked approximately: " + "; ".join(f"{n}: {note}" for n, note in notes.items()) + ".")
    pairs = [(n, b) for n in names for b in baselines.get(n, []) if b in names]
    if pairs:
        keys = compared(protocol, columns, 3)
        parts += [Heading(3, "Against the baseline (paired over seeds)"),
                  Table(["experiment", "baseline", *[f"Δ {title(k)}" for k in keys]],
                        [[n, b, *[difference(results[n], results[b], k) for k in keys]]
                         for n, b in pairs]),
                  "Δ: mean difference in points ± half-width of its 95% t interval over the seeds "
                  "both ran; * where the interval excludes zero."]
    parts += _reference_table(names, runs, columns, protocol)
    parts += _gap_table(names, results, shown, baselines)
    detail_keys = compared(protocol, columns, 4)
    detail_rows = []
    for name in names:
        detail_rows.append([name, "float", *[cell([r["float"].get(k) for r in runs[name]]) for k in detail_keys],
                            str(runs[name][0].get("bytes_per_vector", "?")), "–"])
        for q in indexes:
            quantized = [m for m in (r.get("quantized", {}).get(q) for r in runs[name]) if m]
            if quantized:
                detail_rows.append([name, q, *[cell([m.get(k) for m in quantized]) for k in detail_keys],
                                    str(quantized[0].get("bytes_per_vector")),
                                    cell([m.get("largest_code_share") for m in quantized])])
    return parts + [Heading(3, "Float vs quantized"),
                    Table(["experiment", "index", *[title(k) for k in detail_keys], "B/vec", "top code"], detail_rows),
                    "top code: the share of the gallery holding its most common code (100: every item "
                    "one code, its ranking all ties)."]


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
    rows = [[n, *[clears(float_estimate(runs[n], k), float_estimate(runs[r], k)) for r in references for k in keys]]
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
    compared_gaps = [n for n in with_gap if first.get(n) in with_gap]
    rows = []
    for name in with_gap:
        measured = [results[name][s]["gap"] for s in sorted(results[name]) if "gap" in results[name][s]]
        row = [name, str(measured[0]["classes"])]
        for key in keys:
            row += [cell([m[side]["float"].get(key) for m in measured]) for side in ("seen", "unseen")]
            row.append(cell(list(_gaps(results[name], key).values())))
            if compared_gaps:
                base = first.get(name)
                row.append(paired(_gaps(results[name], key), _gaps(results[base], key))
                           if name in compared_gaps else "–")
        rows.append(row)
    header = ["experiment", "classes"]
    for key in keys:
        header += [f"seen {title(key)}", f"unseen {title(key)}", f"gap {title(key)}"]
        header += [f"Δ gap {title(key)} vs baseline"] if compared_gaps else []
    return [Heading(3, "Seen vs unseen classes"), Table(header, rows),
            "Seen: the training images of a seeded sample of the classes trained on; unseen: "
            "the test images of as many test classes (classes: how many on each side), each "
            "image ranked against the others of its sample. Gap: seen − unseen, per seed, then "
            "its mean ± the half-width of its 95% t interval over seeds; Δ gap: the paired "
            "difference of a method's gap to its baseline's (negative: a smaller gap)."]


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
    parts = ["ranks with tied scores count as the mean over the orders of the tied items"]
    try:
        conventions = build_protocol(dict(protocol or {"name": "self_retrieval"})).conventions()
    except ConfigError:  # a result file from another version: its conventions are unknown
        conventions = {}
    parts += [CONVENTION_TEXT[item] for item in conventions.items()]
    return "Metric conventions: " + "; ".join(parts) + "."


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
