"""The embedding head started from the principal components of the trunk's features
(dml/train/head_init.py, ``train.head_init: pca``): hand-computed directions, the head it
gives, the same start on every worker, and its wiring in ``fit`` (cached and uncached)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.train.feature_cache import trunk_features
from dml.train.head_init import init_head_from_features, principal_directions
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec, training_set

#: Four points on a 2 x 1 rectangle: mean (1, 0.5), variance 4/3 along x and 1/3 along y.
RECTANGLE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 1.0]])


def test_directions_and_mean_of_a_rectangle_by_hand():
    directions, mean = principal_directions(RECTANGLE, 2)
    torch.testing.assert_close(mean, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(directions, torch.eye(2))  # x first (larger variance), signs positive


def test_each_direction_has_its_largest_component_positive():
    flipped = -RECTANGLE @ torch.tensor([[0.6, -0.8], [0.8, 0.6]])  # rotated and mirrored
    directions, _ = principal_directions(flipped, 2)
    largest = directions.gather(1, directions.abs().argmax(1, keepdim=True))
    assert (largest > 0).all()
    torch.testing.assert_close(directions @ directions.T, torch.eye(2))


def test_more_directions_than_features_is_an_error():
    with pytest.raises(ValueError, match="3 principal directions asked of 2-d features"):
        principal_directions(RECTANGLE, 3)


def test_the_head_projects_centred_features_onto_uncorrelated_components_by_decreasing_variance():
    features = torch.randn(200, 12, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.2, 3.0, 12)
    head = nn.Linear(12, 4)
    init_head_from_features(head, features)
    out = head(features).detach()
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    covariance = out.T @ out / (len(out) - 1)
    variances = covariance.diagonal()
    assert (variances[:-1] > variances[1:]).all()
    torch.testing.assert_close(covariance - torch.diag(variances), torch.zeros(4, 4), atol=1e-4, rtol=0)


def test_a_head_as_wide_as_the_features_keeps_every_distance():
    """All components: a rotation of the centred features, so euclidean retrieval is unchanged."""
    features = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    head = nn.Linear(6, 6)
    init_head_from_features(head, features)
    exact = "donot_use_mm_for_euclid_dist"
    out = head(features).detach()
    torch.testing.assert_close(torch.cdist(out, out, compute_mode=exact),
                               torch.cdist(features, features, compute_mode=exact), atol=1e-5, rtol=0)


def test_rows_beyond_the_feature_size_keep_their_weights():
    head = nn.Linear(2, 3)
    last = head.weight[2].detach().clone()
    init_head_from_features(head, RECTANGLE)
    torch.testing.assert_close(head.weight[:2].detach(), torch.eye(2))
    assert torch.equal(head.weight[2].detach(), last)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    head = nn.Linear(5, 3)
    # each rank sees different features (as GPUs may differ in the last bit): rank 0's start wins
    init_head_from_features(head, torch.randn(40, 5, generator=torch.Generator().manual_seed(rank)))
    torch.save(head.state_dict(), out.format(rank=rank))
    dist.destroy_process_group()


def test_every_worker_starts_from_rank_zeros_head(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank{rank}.pt")
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    heads = [torch.load(out.format(rank=rank), weights_only=True) for rank in (0, 1)]
    expected = nn.Linear(5, 3)
    init_head_from_features(expected, torch.randn(40, 5, generator=torch.Generator().manual_seed(0)))
    for state in heads:
        for key, value in expected.state_dict().items():
            assert torch.equal(state[key], value), key


# --- in fit --------------------------------------------------------------------------------

SMALL = ModelConfig(backbone="small_cnn", embed_dim=8, image_size=32)


def spec_of(**train) -> RunSpec:
    """One epoch at a learning rate too small to move the weights: what fit started from."""
    return RunSpec(experiment="init", dataset="tiny", loss={"name": "multi_similarity"}, model=SMALL,
                   train=TrainConfig(**({"epochs": 1, "batch_size": 16, "lr": 1e-12, "augment": [],
                                         "head_init": "pca"} | train)))


@pytest.mark.parametrize("freeze", ["all", 0], ids=["cached features", "trunk trains"])
def test_fit_starts_the_head_from_the_training_features(tiny_data, freeze):
    data = DataSpec(**tiny_data)
    spec = spec_of(freeze=freeze)
    learner = fit(spec, data, LocalSession())
    model = learner.model
    features = trunk_features(model, training_set(spec, data), views=1, seed=0, device=torch.device("cpu"))[0]
    directions, mean = principal_directions(features, 8)
    torch.testing.assert_close(model.head.weight.detach(), directions, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.head.bias.detach(), -(directions @ mean), atol=1e-5, rtol=0)
    random = fit(spec_of(freeze=freeze, head_init="random"), data, LocalSession()).model.head.weight.detach()
    assert not torch.allclose(random, directions, atol=1e-2)
