"""The extension points, used as a method would: a loss that reads attributes and the training
progress, registered by name and trained through the real loop; a sampler and a head named in
the run; a conditioned trunk."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dml.batch import Batch, ModelOutput
from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.context import BuildContext
from dml.data.samplers import MPerClassBatchSampler, RandomBatchSampler
from dml.losses import LOSSES, MetricLoss
from dml.models import BACKBONES, build_model
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec, build_sampler, training_set

SEEN: list[dict] = []


@LOSSES.register("probe_attributes_and_progress")
class ProbeLoss(MetricLoss):
    """Contrastive-like pull on same-label pairs plus attribute BCE, weighted by progress."""

    def __init__(self, num_attributes: int, weight: float = 1.0) -> None:
        super().__init__()
        self.num_attributes = num_attributes
        self.weight = weight

    def forward_batch(self, output: ModelOutput, batch: Batch) -> torch.Tensor:
        attributes = batch.require("attributes", "probe")
        mask = batch.require("attribute_mask", "probe")
        logits = output.head("attributes", "probe")
        SEEN.append({"step": batch.step, "epoch": batch.epoch, "progress": batch.progress,
                     "attributes": tuple(attributes.shape), "masked": int((~mask).sum()),
                     "scales": sorted(batch.scales), "num_attributes": self.num_attributes})
        bce = nn.functional.binary_cross_entropy_with_logits(logits, attributes, reduction="none")
        bce = (bce * mask).sum() / mask.sum().clamp_min(1)
        x = nn.functional.normalize(output.embeddings, dim=1)
        same = (batch.labels[:, None] == batch.labels[None, :]).float()
        pull = ((1 - x @ x.T) * same).sum() / same.sum()
        self.log_term("bce", bce)
        return pull + self.weight * (1 + batch.progress) * bce


def spec(**changes) -> RunSpec:
    base = dict(
        experiment="probe", dataset="tiny", loss={"name": "probe_attributes_and_progress", "weight": 0.5},
        model=ModelConfig(backbone="small_cnn", backbone_options={"width": 8}, embed_dim=8, image_size=32,
                          heads={"attributes": {}}),
        train=TrainConfig(epochs=2, batch_size=16),
    )
    return RunSpec(**(base | changes))


def test_a_registered_loss_reads_attributes_and_progress_through_the_real_loop(tiny_data):
    SEEN.clear()
    session = LocalSession()
    learner = fit(spec(), DataSpec(**tiny_data), session)
    steps = [s["step"] for s in SEEN]
    per_epoch = len(steps) // 2
    assert steps == list(range(len(steps))) and per_epoch >= 1
    assert [s["epoch"] for s in SEEN] == [0] * per_epoch + [1] * per_epoch
    progress = [s["progress"] for s in SEEN]
    assert progress[0] == 0.0 and progress == sorted(progress) and progress[-1] < 1.0
    assert all(s["attributes"] == (16, 8) and s["num_attributes"] == 8 for s in SEEN)  # size injected from the data
    assert all(s["scales"] == ["coarse", "middle"] for s in SEEN)
    assert all("loss/bce" in h for h in session.history)  # the loss's own term, per epoch
    assert learner.model.heads["attributes"].net.out_features == 8


def test_the_sampler_is_chosen_by_name(tiny_data):
    data = DataSpec(**tiny_data)
    dataset = training_set(spec(), data)
    default = build_sampler(spec(), dataset, rank=0, world_size=1)
    assert isinstance(default, MPerClassBatchSampler) and default.m == 4
    two = spec(train=TrainConfig(batch_size=16, sampler={"name": "m_per_class", "m": 2}))
    assert build_sampler(two, dataset, rank=0, world_size=1).m == 2
    plain = spec(train=TrainConfig(batch_size=16, sampler={"name": "random"}))
    sampler = build_sampler(plain, dataset, rank=0, world_size=1)
    assert isinstance(sampler, RandomBatchSampler)
    session = LocalSession()
    fit(plain.model_copy(update={"train": plain.train.model_copy(update={"epochs": 1})}), data, session)
    assert session.history[0]["steps"] == len(dataset) // 16


def test_random_sampler_is_deterministic_sliced_by_rank_and_resumable():
    whole = RandomBatchSampler(50, batch_size=8, seed=3)
    ranks = [RandomBatchSampler(50, batch_size=4, rank=r, world_size=2, seed=3) for r in (0, 1)]
    glob = list(whole)
    assert len(glob) == 50 // 8 and len({i for b in glob for i in b}) == 48  # no repeats in an epoch
    for b, batch in enumerate(glob):
        assert list(ranks[0])[b] + list(ranks[1])[b] == batch
    whole.set_epoch(1)
    assert list(whole) != glob
    it = iter(whole)
    head = [next(it) for _ in range(2)]
    resumed = RandomBatchSampler(50, batch_size=8, seed=0)
    resumed.load_state_dict(whole.state_dict())
    whole.set_epoch(1)
    assert head + list(resumed) == list(RandomBatchSampler(50, batch_size=8, seed=3).global_batches(1).tolist())


@BACKBONES.register("probe_conditioned")
class ConditionedTrunk(nn.Module):
    """A trunk whose output depends on a per-sample scalar (the way DASE sees the domain)."""

    accepts_condition = True
    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.conv(images).mean((2, 3)) * (1 + condition[:, None])


def test_the_trunk_is_conditioned_on_the_batch_domain():
    model = build_model(ModelConfig(backbone="probe_conditioned", embed_dim=3, condition="domain"))
    images = torch.randn(2, 3, 8, 8)
    photo = Batch(images=images, index=torch.arange(2), domain=torch.tensor([1, 1]))
    sketch = photo.replace(domain=torch.tensor([0, 0]))
    assert not torch.allclose(model.forward_batch(photo).embeddings, model.forward_batch(sketch).embeddings)
    unconditioned = build_model(ModelConfig(backbone="small_cnn", embed_dim=3))
    assert unconditioned.forward_batch(photo).embeddings.shape == (2, 3)


def test_build_context_sizes_reach_heads_and_losses(tiny_data):
    dataset = training_set(spec(), DataSpec(**tiny_data))
    context = BuildContext(**dataset.rows.context_sizes(), embed_dim=8)
    assert context.num_classes == len(np.unique(dataset.rows.labels)) and context.num_attributes == 8
    assert set(context.hierarchy) == {"middle", "coarse"}
