from __future__ import annotations

import time

import numpy as np
import pytest

from dml.data.samplers import MPerClassBatchSampler
from dml.errors import ConfigError


def _labels(classes: int = 20, seed: int = 0, n: int = 400) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def test_each_batch_has_m_per_distinct_class():
    labels = _labels()
    sampler = MPerClassBatchSampler(labels, m=4, batch_size=16, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 400 // 16
    for batch in batches:
        assert len(batch) == 16
        values, counts = np.unique(labels[batch], return_counts=True)
        assert len(values) == 4 and (counts == 4).all()


def test_small_classes_are_sampled_with_replacement():
    labels = np.array([0] * 10 + [1] * 10 + [2])  # class 2 has one image
    sampler = MPerClassBatchSampler(labels, m=3, batch_size=9, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for batch in sampler:
            values, counts = np.unique(labels[batch], return_counts=True)
            assert values.tolist() == [0, 1, 2] and (counts == 3).all()


def test_ranks_slice_the_global_batch():
    labels = _labels(classes=30, n=600)
    single = MPerClassBatchSampler(labels, m=2, batch_size=24, seed=7)
    ranks = [MPerClassBatchSampler(labels, m=2, batch_size=8, rank=r, world_size=3, seed=7)
             for r in range(3)]
    for epoch in (0, 3):
        single.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        glob = list(single)
        assert all(len(p) == len(glob) == 25 for p in per_rank)
        for b, batch in enumerate(glob):
            assert sum((p[b] for p in per_rank), []) == batch
            for p in per_rank:
                _, counts = np.unique(labels[p[b]], return_counts=True)
                assert (counts == 2).all()


def test_deterministic_and_epoch_dependent():
    labels = _labels()
    a = MPerClassBatchSampler(labels, m=4, batch_size=16, seed=3)
    b = MPerClassBatchSampler(labels, m=4, batch_size=16, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = MPerClassBatchSampler(labels, m=4, batch_size=16, seed=4)
    assert list(c) != first


def test_resume_mid_epoch():
    labels = _labels()
    sampler = MPerClassBatchSampler(labels, m=4, batch_size=16, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(3)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(7)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "batches_done": 7, "seed": 5}
    resumed = MPerClassBatchSampler(labels, m=4, batch_size=16, seed=0)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop calls this again after resuming
    assert head + list(resumed) == full
    assert list(resumed) == full  # a finished epoch starts over


def test_configuration_errors_name_the_keys():
    labels = _labels(classes=5)
    with pytest.raises(ConfigError, match=r"train.batch_size .*train.sampler.m"):
        MPerClassBatchSampler(labels, m=3, batch_size=16)
    with pytest.raises(ConfigError, match=r"needs 8 distinct classes.*only 5"):
        MPerClassBatchSampler(labels, m=2, batch_size=16)
    with pytest.raises(ConfigError, match="needs 6 distinct"):
        MPerClassBatchSampler(labels, m=2, batch_size=4, world_size=3)


def test_len_is_at_least_one():
    labels = np.arange(6)
    assert len(MPerClassBatchSampler(labels, m=1, batch_size=4)) == 1


def test_fast_for_1e5_labels():
    labels = _labels(classes=1000, n=100_000)
    sampler = MPerClassBatchSampler(labels, m=4, batch_size=64, seed=0)
    start = time.perf_counter()
    batches = sampler.global_batches()
    elapsed = time.perf_counter() - start
    assert batches.shape == (100_000 // 64, 64)
    assert elapsed < 0.5, elapsed
    # coverage: most images are used once per epoch
    assert len(np.unique(batches)) > 0.6 * len(labels)
