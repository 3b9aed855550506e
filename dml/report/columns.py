"""Which metric columns a table shows, in which order, under which titles, and which of them
head a protocol's results: all read from the metric declarations (:mod:`dml.evaluate.catalog`)
and the protocol's (:mod:`dml.evaluate.protocols`), never from a metric's name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dml.evaluate.catalog import metric_key
from dml.evaluate.protocols import Protocol, build_protocol


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


def precision_at(columns: Sequence[str]) -> list[str]:
    """The unscoped P@K columns beyond K = 1: a protocol that asks for them (sketch-based
    retrieval's P@200) compares them after its headline."""
    cutoffs = [m for m in map(metric_key, columns) if m.spec_name == "precision" and not m.scope and m.k != 1]
    return [m.key for m in sorted(cutoffs, key=lambda m: m.k)]


def summary_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers of an evaluation that `dvc exp show` lists: its float headline figures
    (the details stay in the evaluation file beside it), and where the ranking was approximate
    the measured recall of the exact top ranks (``candidate_recall@<d>``)."""
    floats = evaluation["float"]
    summary = {key: round(float(floats[key]), 4) for key in headline_metrics(protocol_of(evaluation), list(floats))}
    recall = approximate_recall([evaluation])
    return summary | {f"candidate_{key}": round(float(value), 4) for key, value in recall.items()}


def approximate_recall(evaluations: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The mean over ``evaluations`` ranked approximately (a ``ranking`` of kind
    ``approximate``: :mod:`dml.evaluate.candidates`) of each measured ``recall@<d>`` of the
    exact top ranks; empty where every one was ranked exactly."""
    rankings = [r for e in evaluations if (r := e.get("ranking") or {}).get("kind") == "approximate"]
    keys = list(dict.fromkeys(k for r in rankings for k in r if k.startswith("recall@")))
    return {k: sum(r[k] for r in rankings if k in r) / sum(k in r for r in rankings) for k in keys}


def approximate_note(evaluations: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str | None:
    """How approximately ranked evaluations (one, or a run's seeds) were ranked, in words: the
    index, the candidates re-ranked exactly, the share of the exact top ranks they held and
    what was left out; None where every one was ranked exactly."""
    runs = [evaluations] if isinstance(evaluations, Mapping) else list(evaluations)
    recall = approximate_recall(runs)
    if not recall:
        return None
    first = next(r["ranking"] for r in runs if (r.get("ranking") or {}).get("kind") == "approximate")
    search = ", ".join(f"{knob} {first[knob]}" for knob in ("nprobe", "ef_search") if first.get(knob) is not None)
    omitted = f"; not computed: {', '.join(title(k) for k in first['omitted'])}" if first.get("omitted") else ""
    return (f"{first['candidates']} candidates per query from faiss {first['index']}"
            f"{f' ({search})' if search else ''}, re-ranked exactly; exact top ranks among them: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in recall.items()) + omitted)


def graded(columns: Sequence[str]) -> list[str]:
    """The figures of a graded (multi-label) evaluation, one with NDCG columns: R@1 (the top
    result shares a class), mAP, mAP@K and NDCG@K; empty for any other evaluation. The
    single-label figures (MAP@R, R-precision, R@K beyond 1) say little there."""
    if not any("grades" in metric_key(k).needs for k in columns):
        return []
    return [k for k in columns if k == "recall@1" or (m := metric_key(k)).spec_name in ("map", "ndcg") and not m.scope]


def compared(protocol: Protocol, columns: Sequence[str], n: int) -> list[str]:
    """The first ``n`` figures to compare: a graded evaluation's mAP and NDCG, else the
    protocol's own (no prefix, NMI and AMI aside; headed by mAP and P@K where it reports
    P@K), else its averages over tasks (``avg/``: over scales), else the first columns."""
    grades = [k for k in graded(columns) if k != "recall@1"]
    own = [k for k in columns if not (m := metric_key(k)).scope and "labels" not in m.needs]  # clustering aside
    if precision_at(columns):
        lead = headline_metrics(protocol, columns)
        return (lead + [k for k in own if k not in lead])[:n]
    return grades[:n] or own[:n] or [k for k in columns if metric_key(k).scope == "avg"][:n] or list(columns[:n])
