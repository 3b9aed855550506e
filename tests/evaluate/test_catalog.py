"""Reported figures are declarations: titles, column order, visibility and headlines come
from the metric catalogue and the protocols, and a newly registered metric reaches the report."""

from __future__ import annotations

import pytest

from dml.evaluate.catalog import METRIC_SPECS, MetricSpec, metric_key, register_metric
from dml.evaluate.protocols import PROTOCOLS, build_protocol
from dml.report.columns import metric_columns, summary_metrics
from dml.report.comparison import comparison_table


def test_every_key_the_engine_writes_reads_back_to_its_declaration():
    for key, (title, name, k) in {
        "recall@8": ("R@8", "recall", 8), "precision@200": ("P@200", "precision", 200),
        "map@r": ("MAP@R", "map@r", None), "r_precision": ("RP", "r_precision", None), "map": ("mAP", "map", None),
        "map@100": ("mAP@100", "map", 100), "ndcg@10": ("NDCG@10", "ndcg", 10), "asi": ("ASI", "asi", None),
        "nmi": ("NMI", "nmi", None), "ami": ("AMI", "ami", None), "coarse/map": ("coarse mAP", "map", None),
    }.items():
        metric = metric_key(key)
        assert (metric.title, metric.spec_name, metric.k) == (title, name, k), key
    assert metric_key("distinct_codes").spec is None and metric_key("distinct_codes").title == "distinct_codes"
    assert not metric_key("fine/precision@1").shown and not metric_key("queries_without_relevant").shown
    assert metric_columns([{"map": 1, "recall@2": 1, "recall@1": 1, "map@r": 1, "precision@1": 1, "fine/map@r": 1,
                            "fine/map": 1, "avg/recall@1": 1, "nmi": 1}]) == [
        "recall@1", "recall@2", "map@r", "map", "nmi", "fine/map", "avg/recall@1"]


@pytest.fixture
def mrr():
    """A metric registered for one test: the mean reciprocal rank, shown as MRR."""
    spec = register_metric(MetricSpec("mrr", "MRR", needs=frozenset({"ranks"})))
    yield spec
    METRIC_SPECS.pop("mrr")


def test_a_registered_metric_is_titled_and_placed_by_its_declaration(mrr):
    runs = {name: {0: {"loss": "x", "float": {"mrr": value, "recall@1": value, "map@r": value / 2}}}
            for name, value in (("a", 0.5), ("b", 0.4))}
    table = comparison_table(runs)
    header = next(line for line in table.splitlines() if line.startswith("| experiment"))
    assert "| R@1 | MAP@R | MRR |" in header  # after the metrics declared before it
    assert metric_key("mrr").spec is mrr
    with pytest.raises(ValueError, match="registered already"):
        register_metric(MetricSpec("mrr", "x"))


@pytest.mark.parametrize("name", sorted(PROTOCOLS.names()))
def test_each_protocol_declares_a_headline_of_declared_metrics(name):
    protocol = build_protocol({"name": name})
    assert protocol.headline and all(metric_key(key).spec is not None for key in protocol.headline)
    evaluation = {"protocol": {"name": name}, "float": {key: 0.25 for key in (*protocol.headline, "ami", "r_precision")}}
    assert list(summary_metrics(evaluation)) == list(protocol.headline)  # the summary is the headline, in order


def test_headlines_follow_the_protocols_knobs():
    assert build_protocol({"name": "cross_domain", "precision_ks": [1, 100, 10]}).headline == ("map", "precision@10")
    assert build_protocol({"name": "cross_domain", "precision_ks": []}).headline == ("recall@1", "map@r")
    assert build_protocol({"name": "multilabel", "ndcg_ks": [100, 20]}).headline == ("map", "ndcg@20")
    assert build_protocol({"name": "per_scale"}).headline == ("avg/recall@1", "avg/map")
