"""The evaluation files the report reads, as runs of experiments: each experiment's runs by
seed, in seed order, and the sections of experiments compared together (same dataset and
protocol). A name shared by the tables, the figures and the evaluate stage that writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Runs = Mapping[int, Mapping]  # seed -> one run's metrics.json

UNTRAINED = "untrained"  # the loss column of a reference row (nothing learned)


def seed_runs(results: Mapping[str, Runs], names: Sequence[str]) -> dict[str, list[Mapping]]:
    """Each experiment's runs in seed order."""
    return {n: [results[n][s] for s in sorted(results[n])] for n in names}


def sections(results: Mapping[str, Runs]) -> dict[tuple[str, str], list[str]]:
    """The experiments compared together, by (dataset, protocol name), names sorted."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in sorted(results):
        res = next(iter(results[name].values()))
        protocol = (res.get("protocol") or {}).get("name", "self_retrieval")
        groups.setdefault((str(res.get("dataset", "?")), protocol), []).append(name)
    return groups
