"""The hierarchical sampler (DyML's CSL): per group, k images of one fine class, of one
middle class and of one coarse class; deterministic from the seed, sliced per rank, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from dml.data.samplers import SAMPLERS, HierarchicalBatchSampler
from dml.errors import ConfigError


def _scales(n: int = 600, seed: int = 0) -> dict[str, np.ndarray]:
    """24 fine classes, 6 middle (4 fine each), 2 coarse (3 middle each)."""
    fine = np.random.default_rng(seed).integers(0, 24, n)
    return {"fine": fine, "middle": fine // 4, "coarse": fine // 12}


def _groups(batch: list[int], k: int, scales: int) -> np.ndarray:
    return np.asarray(batch).reshape(-1, scales, k)  # [groups, scale, k]


def test_each_group_holds_k_images_of_one_class_per_scale():
    labels = _scales()
    sampler = HierarchicalBatchSampler(labels, k=4, batch_size=24, seed=1)
    batches = list(sampler)
    assert len(batches) == 600 // 24
    for batch in batches:
        groups = _groups(batch, 4, 3)
        for part, (scale, values) in enumerate(labels.items()):
            classes = values[groups[:, part]]  # [groups, k]
            assert (classes == classes[:, :1]).all(), scale
        fine_classes = labels["fine"][groups[:, 0, 0]]
        assert len(set(fine_classes)) == len(fine_classes)  # distinct where there are enough
    # the coarse scale has 2 classes for 2 groups per batch: both appear in every batch
    assert all(len(set(labels["coarse"][_groups(b, 4, 3)[:, 2, 0]])) == 2 for b in batches)


def test_fewer_classes_than_groups_repeat_evenly():
    labels = _scales()
    sampler = HierarchicalBatchSampler(labels, k=2, batch_size=30, seed=0)  # 5 groups, 2 coarse
    for batch in sampler:
        coarse = labels["coarse"][_groups(batch, 2, 3)[:, 2, 0]]
        assert sorted(np.bincount(coarse, minlength=2).tolist()) == [2, 3]


def test_ranks_slice_whole_groups_of_the_global_batch():
    labels = _scales()
    whole = HierarchicalBatchSampler(labels, k=2, batch_size=24, seed=3)
    ranks = [HierarchicalBatchSampler(labels, k=2, batch_size=12, rank=r, world_size=2, seed=3)
             for r in (0, 1)]
    assert len(whole) == len(ranks[0])
    for full, a, b in zip(whole, *ranks):
        assert a + b == full
        _groups(a, 2, 3)  # whole groups on each rank


def test_deterministic_epoch_dependent_and_resumable():
    labels = _scales()
    a, b = (HierarchicalBatchSampler(labels, k=4, batch_size=12, seed=7) for _ in range(2))
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert second != first
    iterator = iter(a)
    head = [next(iterator) for _ in range(5)]
    resumed = HierarchicalBatchSampler(labels, k=4, batch_size=12, seed=0)
    resumed.load_state_dict(a.state_dict())
    resumed.set_epoch(1)
    assert head + list(resumed) == second


def test_built_by_name_from_a_dataset_and_errors_name_the_keys():
    class Rows:  # what the factory reads from a ManifestDataset
        info = type("Info", (), {"fine": "fine"})()
        scale_labels = {"middle": _scales()["middle"], "coarse": _scales()["coarse"]}

        def require_labels(self, who):
            return _scales()["fine"]

    sampler = SAMPLERS.build("hierarchical", rows=Rows(), batch_size=12, rank=0, world_size=1,
                             seed=0, k=2, scales=["fine", "coarse"])
    assert list(sampler.scale_labels) == ["fine", "coarse"]
    with pytest.raises(ConfigError, match=r"train.sampler.scales: \['family'\] not among"):
        SAMPLERS.build("hierarchical", rows=Rows(), batch_size=12, rank=0, world_size=1,
                       seed=0, scales=["fine", "family"])
    with pytest.raises(ConfigError, match=r"train.batch_size \(16\) must be a multiple of "
                                          r"train.sampler.k \(2\) x 3 scale\(s\)"):
        HierarchicalBatchSampler(_scales(), k=2, batch_size=16)
