"""The seen/unseen gap: retrieval and clustering on a sample of the trained classes beside as
many test classes, in the evaluation and in the comparison table."""

from __future__ import annotations

import numpy as np
import pytest

from dml.evaluate.experiment import evaluate_gap, evaluate_test_split, gap_samples
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.report.comparison import comparison_table
from dml.stats import paired_difference, t_interval

SELF = build_protocol({"name": "self_retrieval"})


def rows(classes: int = 10, per_class: int = 4, test_from: int = 7) -> EvalRows:
    """Classes 0..test_from-1 train (class c in validation fold c % 3), the rest test."""
    labels = np.repeat(np.arange(classes), per_class)
    train = labels < test_from
    return EvalRows(ids=np.asarray([f"i{n}" for n in range(len(labels))], dtype=object),
                    split=np.where(train, "train", "test").astype(object),
                    role=np.full(len(labels), "both", dtype=object),
                    domain=np.full(len(labels), "photo", dtype=object),
                    labels={"fine": labels}, fold=np.where(train, labels % 3, -1))


def classes(r: EvalRows, mask: np.ndarray) -> set[int]:
    return {int(c) for c in r.labels["fine"][mask]}


def test_the_samples_are_trained_and_test_classes_as_many_on_each_side_and_seeded() -> None:
    r = rows()
    seen, unseen = gap_samples(r, held_out_folds=[0], seed=0)
    # trained: not test, not in validation fold 0 (classes 0, 3, 6) -> 4 classes; 3 test classes
    assert classes(r, seen) <= {1, 2, 4, 5} and len(classes(r, seen)) == 3
    assert classes(r, unseen) == {7, 8, 9}
    assert (r.split[seen] == "train").all() and (r.split[unseen] == "test").all()
    assert seen.sum() == unseen.sum() == 3 * 4  # every image of each chosen class
    again = gap_samples(r, [0], seed=0)
    np.testing.assert_array_equal(again[0], seen)
    draws = {frozenset(classes(r, gap_samples(r, [0], seed=s)[0])) for s in range(8)}
    assert len(draws) > 1  # the seed picks the sample
    # more test classes than trained ones: as many test classes as trained
    few_seen, some_unseen = gap_samples(rows(test_from=3), [])
    assert classes(r, few_seen) == {0, 1, 2} and len(classes(r, some_unseen)) == 3


def test_no_samples_where_there_is_no_gap_to_measure() -> None:
    r = rows()
    scenes = EvalRows(ids=r.ids, split=r.split, role=r.role, domain=r.domain,
                      counts=np.ones((len(r), 2)), fold=r.fold)
    assert gap_samples(scenes) is None  # multi-label rows, split by image
    by_image = rows()
    by_image.split[[0, 1]] = "test"  # class 0 on both sides
    assert gap_samples(by_image) is None
    # DyML: each test benchmark labelled at its own scale only (-1 at the others)
    dyml = rows()
    coarse = dyml.labels["fine"] // 2
    coarse[(dyml.split == "test") & (dyml.labels["fine"] == 9)] = -1
    per_scale = EvalRows(ids=dyml.ids, split=dyml.split, role=dyml.role, domain=dyml.domain,
                         labels={"fine": dyml.labels["fine"], "coarse": coarse}, fold=dyml.fold)
    assert gap_samples(per_scale) is None
    per_scale.labels["coarse"][:] = dyml.labels["fine"] // 2  # labelled everywhere: a gap
    assert gap_samples(per_scale) is not None


def test_the_gap_is_the_protocols_figures_on_each_sample() -> None:
    r = rows()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 8)) * 5
    vectors = (centres[r.labels["fine"]] + 0.01 * rng.normal(size=(len(r), 8))).astype(np.float32)
    test = r.split == "test"
    vectors[test] = rng.normal(size=(int(test.sum()), 8))  # unseen classes: noise
    gap = evaluate_gap(r, vectors, SELF, held_out_folds=[0], ks=(1,), seed=0)
    assert gap["classes"] == 3 and gap["seen"]["images"] == gap["unseen"]["images"] == 12
    seen = gap["seen"]["float"]
    assert seen["recall@1"] == 1.0 and seen["map@r"] == pytest.approx(1.0)
    assert seen["nmi"] == pytest.approx(1.0) and seen["ami"] == pytest.approx(1.0)
    assert gap["unseen"]["float"]["map@r"] < 0.8
    # the unseen sample holds every test class here: its figures are the test split's
    report = evaluate_test_split(r, vectors, SELF, {}, ks=(1,), held_out_folds=[0])
    assert report["gap"] == gap
    assert report["gap"]["unseen"]["float"]["map@r"] == pytest.approx(report["float"]["map@r"])
    assert "gap" not in evaluate_test_split(r, vectors, SELF, {}, ks=(1,))


def _run(seen: float, unseen: float, test: float | None = None) -> dict:
    test = unseen if test is None else test
    return {"loss": "x", "float": {"recall@1": test, "map@r": test / 2},
            "gap": {"classes": 3, "seen": {"images": 12, "float": {"recall@1": seen, "map@r": seen / 2}},
                    "unseen": {"images": 12, "float": {"recall@1": unseen, "map@r": unseen / 2}}}}


def test_the_table_shows_seen_unseen_and_the_gap_over_seeds() -> None:
    results = {"m": {0: _run(0.9, 0.5, test=0.1), 1: _run(0.8, 0.5, test=0.1), 2: _run(0.85, 0.45, test=0.1)}}
    table = comparison_table(results)
    assert "### Seen vs unseen classes" in table
    assert ("| experiment | classes | seen R@1 | unseen R@1 | gap R@1 | seen MAP@R | unseen MAP@R "
            "| gap MAP@R |") in table
    row = next(line for line in table.splitlines() if line.startswith("| m | 3 |"))
    unseen, gap = t_interval([0.5, 0.5, 0.45]), t_interval([0.4, 0.3, 0.4])
    # the unseen side is the sample's, not the whole test split's (10.0)
    assert f"| {100 * unseen.mean:.1f} ± {100 * unseen.half_width:.1f} | {100 * gap.mean:.1f} ± " in row
    assert "Seen vs unseen" not in comparison_table({"m": {0: {"loss": "x", "float": {"recall@1": 0.5}}}})


def test_a_method_gets_the_paired_difference_of_its_gap_to_its_baselines() -> None:
    results = {"base": {0: _run(0.9, 0.5), 1: _run(0.8, 0.5), 2: _run(0.9, 0.45)},
               "method": {0: _run(0.8, 0.5), 1: _run(0.75, 0.5), 2: _run(0.8, 0.45)}}
    table = comparison_table(results, {"method": "base"})
    assert "| experiment | classes | seen R@1 | unseen R@1 | gap R@1 | Δ gap R@1 vs baseline |" in table
    method = next(line for line in table.splitlines() if line.startswith("| method | 3 |"))
    diff = paired_difference({0: 0.15, 1: 0.125, 2: 0.175}, {0: 0.2, 1: 0.15, 2: 0.225})
    assert method.endswith(f"| {100 * diff.mean:+.1f} ± {100 * diff.half_width:.1f} * |")
    base = next(line for line in table.splitlines() if line.startswith("| base | 3 |"))
    assert base.endswith("| – |")
