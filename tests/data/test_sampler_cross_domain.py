"""The cross-domain sampler: every class of a batch with sketches and photos beside each other."""

from __future__ import annotations

import numpy as np
import pytest

from dml.data.samplers import cross_domain_epoch


def data():
    # classes 0..5: photos and sketches; class 6 photos only (never drawn)
    labels = np.concatenate([np.repeat(np.arange(7), 5), np.repeat(np.arange(6), 3)])
    domains = np.asarray(["photo"] * 35 + ["sketch"] * 18, dtype=object)
    return labels, domains


def test_each_class_slot_holds_half_sketches_then_half_photos() -> None:
    labels, domains = data()
    batches = cross_domain_epoch(labels, domains, m=4, global_batch=12, num_batches=5, seed=0, epoch=0)
    assert batches.shape == (5, 12)
    for batch in batches:
        groups = batch.reshape(3, 4)
        for group in groups:
            assert len(set(labels[group])) == 1 and labels[group[0]] != 6
            assert list(domains[group]) == ["sketch", "sketch", "photo", "photo"]
        assert len({labels[g[0]] for g in groups}) == 3  # distinct classes in a batch


def test_the_epoch_depends_on_seed_and_epoch_alone() -> None:
    labels, domains = data()
    first = cross_domain_epoch(labels, domains, m=4, global_batch=12, num_batches=4, seed=1, epoch=2)
    again = cross_domain_epoch(labels, domains, m=4, global_batch=12, num_batches=4, seed=1, epoch=2)
    np.testing.assert_array_equal(first, again)
    other = cross_domain_epoch(labels, domains, m=4, global_batch=12, num_batches=4, seed=1, epoch=3)
    assert not np.array_equal(first, other)


def test_errors_name_the_knob() -> None:
    from dml.data.samplers import CrossDomainBatchSampler
    from dml.errors import ConfigError

    labels, domains = data()
    with pytest.raises(ConfigError, match="train.sampler.m"):
        CrossDomainBatchSampler(labels, domains, m=3, batch_size=12)
    with pytest.raises(ConfigError, match="6 class"):  # class 6 has no sketch
        CrossDomainBatchSampler(labels, domains, m=2, batch_size=14)


def test_a_batch_too_big_for_the_classes_shrinks_with_the_reason():
    from types import SimpleNamespace

    from dml.data.samplers import classes_in_both, fitting_batch_size

    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    domains = np.array(["sketch", "photo"] * 3 + ["photo"], dtype=object)
    assert classes_in_both(labels, domains).tolist() == [0, 1, 2]  # class 3: photos only
    data = SimpleNamespace(require_labels=lambda where: labels, domains=domains)
    size, reason = fitting_batch_size("cross_domain", {"m": 2}, data, batch_size=16, world_size=1)
    assert size == 6
    assert reason == ("cross_domain with m=2 needs 8 classes per global batch of 16 x 1 worker(s), "
                      "the training rows have 3 classes with sketches and photos")
    assert fitting_batch_size("cross_domain", {"m": 2}, data, batch_size=6, world_size=1) == (6, "")
