"""The multilabel sampler: groups of k images sharing a class, partial-overlap partners,
determinism, rank slices and resume."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from dml.data.synthetic.generator import generate
from dml.data.samplers import SAMPLERS, MultiLabelBatchSampler, RandomBatchSampler
from dml.errors import ConfigError
from dml.label_similarity import multiset_jaccard


def _counts(table) -> np.ndarray:
    """``[N, C]`` object counts of a scenes manifest."""
    column = table.column("object_counts").combine_chunks()
    rows = pc.list_parent_indices(column).to_numpy()
    flat = pc.list_flatten(column)
    labels = flat.field("label").to_numpy()
    out = np.zeros((table.num_rows, labels.max() + 1))
    out[rows, labels] = flat.field("count").to_numpy()
    return out


def _random_counts(seed: int = 0, n: int = 60, classes: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 3, (n, classes)) * (rng.random((n, classes)) < 0.2)
    counts[counts.sum(1) == 0, rng.integers(0, classes)] = 1
    return counts


def test_each_group_of_k_shares_a_class_and_a_batch_spreads_over_classes():
    counts = _random_counts()
    sampler = MultiLabelBatchSampler(counts, k=4, batch_size=16, seed=0)
    for batch in sampler.global_batches(0):
        groups = batch.reshape(-1, 4)
        shared = [np.flatnonzero((counts[g] > 0).all(axis=0)) for g in groups]
        assert all(len(s) for s in shared)
    assert len(sampler) == 60 // 16


def _partial_overlap_share(counts: np.ndarray, batches: np.ndarray) -> float:
    """Share of anchors with at least one batch partner of similarity strictly in (0, 1)."""
    hits = []
    for batch in batches:
        j = multiset_jaccard(torch.as_tensor(counts[batch], dtype=torch.float64)).numpy()
        np.fill_diagonal(j, 0)
        hits.append(((j > 0) & (j < 1)).any(axis=1))
    return float(np.concatenate(hits).mean())


def test_most_anchors_have_partial_overlap_partners_on_the_scenes():
    """Small batches of the synthetic scenes (48 classes, 1-3 per scene): groups give nearly
    every anchor a partner that shares part of its labels; shuffled batches give 60%."""
    counts = _counts(generate(view="scenes", scenes=200)[0])
    grouped = MultiLabelBatchSampler(counts, k=4, batch_size=16, seed=0)
    shuffled = RandomBatchSampler(len(counts), batch_size=16, seed=0)
    ours = np.mean([_partial_overlap_share(counts, grouped.global_batches(e)) for e in range(5)])
    plain = np.mean([_partial_overlap_share(counts, shuffled.global_batches(e)) for e in range(5)])
    assert ours >= 0.9 and ours > plain + 0.2, (ours, plain)


def test_deterministic_per_seed_and_epoch():
    counts = _random_counts()
    a = MultiLabelBatchSampler(counts, k=4, batch_size=8, seed=3)
    b = MultiLabelBatchSampler(counts, k=4, batch_size=8, seed=3)
    assert np.array_equal(a.global_batches(1), b.global_batches(1))
    assert not np.array_equal(a.global_batches(1), a.global_batches(2))
    assert not np.array_equal(a.global_batches(1), MultiLabelBatchSampler(
        counts, k=4, batch_size=8, seed=4).global_batches(1))


def test_ranks_take_whole_groups_of_the_global_batch_and_resume():
    counts = _random_counts()
    ranks = [MultiLabelBatchSampler(counts, k=4, batch_size=8, rank=r, world_size=2, seed=1)
             for r in (0, 1)]
    full = ranks[0].global_batches(0)
    for r, sampler in enumerate(ranks):
        got = list(sampler)
        assert np.array_equal(np.array(got), full[:, r * 8:(r + 1) * 8])
    resumed = MultiLabelBatchSampler(counts, k=4, batch_size=8, rank=1, world_size=2, seed=1)
    resumed.load_state_dict({"epoch": 0, "batches_done": 2, "seed": 1})
    assert list(resumed) == [list(b) for b in full[2:, 8:16]]


def test_errors_name_the_problem():
    counts = _random_counts()
    with pytest.raises(ConfigError, match="divisible by train.sampler.k"):
        MultiLabelBatchSampler(counts, k=3, batch_size=8)
    empty = counts.copy()
    empty[5] = 0
    with pytest.raises(ConfigError, match="row 5"):
        MultiLabelBatchSampler(empty, k=4, batch_size=8)

    class SingleLabel:
        counts = None

    with pytest.raises(ConfigError, match="object_counts"):
        SAMPLERS.get("multilabel")(SingleLabel(), batch_size=8, rank=0, world_size=1, seed=0)
