"""Distributed exactness: 2 gloo processes on two halves of a batch == 1 process on the whole.

One SGD step (plain SGD: an adaptive optimizer would hide a gradient scaled by the world size)
for every loss in the registry: the loss value and every updated weight, trunk and proxies;
and for timm trunks, one trained whole and one frozen with its BatchNorm in eval mode.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from dml.batch import Batch
from dml.losses import LOSSES, build_loss
from dml.train.learner import MetricLearner
from dml.models import EmbeddingModel
from dml.models.heads import AttributeHead
from dml.models.soft_pq import SoftProductQuantizer
from dml.models.timm_trunk import TimmTrunk
from dml.train.finetune import freeze_trunk

from losses.helpers import EXTRA_KWARGS

B, D_IN, D = 8, 6, 4


class Flat(torch.nn.Module):
    out_dim = D_IN

    def forward(self, x):
        return x


CASES = {name: {} for name in LOSSES.names()} | {
    f"triplet-{mining}": {"mining": mining} for mining in ("all", "semihard", "hard")
} | {
    # SGML: g from the attribute labels (the warm-up), and from the attribute head's
    # predictions, where a pair's g needs the other rank's rows.
    "soft_binomial_deviance-ground_truth": {"granularity": "ground_truth", "kappa": 2.0, "delta": 0.3},
    "soft_binomial_deviance-predicted": {"granularity": "predicted", "warmup_epochs": 0, "kappa": 2.0,
                                         "delta": 0.3},
    # CSL over three scales (its proxies are DDP parameters); the coarse scale has one class
    "csl-scales": {"margins": {"fine": 0.25, "middle": 0.35, "coarse": 0.45},
                   "hierarchy": {"middle": (0, 0, 1), "coarse": (0, 0, 0)},
                   "scale_classes": {"fine": 3, "middle": 2, "coarse": 1}},
    # Multi-object rows: triplets from the object counts of the global batch
    "adaptive_triplet-cosine-semihard": {"similarity": "cosine", "mining": "semihard", "margin": 0.5},
    # the soft-PQ head's code words are DDP parameters trained through the quantized term
    "quantized-soft_pq": {"weight": 1.0},
    # ECAML: random partners over the global batch, the model's embedding layer applied again
    # to the detached trunk features of every rank, and the row-norm penalty on it
    "energy_confusion-binomial": {"weight": 0.5, "partners": 3, "row_norm": 0.5},
    # MEMS with its full margin from the first step (its centres are DDP parameters)
    "mems-margin": {"margin": 2.0, "ramp": 0.0},
    # the signed weightings of SGML: negatives that share attributes up-weighted, positives by g
    "soft_binomial_deviance-up": {"granularity": "ground_truth", "kappa": -2.0, "pos_kappa": 1.5, "delta": 0.3},
    "soft_binomial_deviance-hard_positives": {"granularity": "predicted", "warmup_epochs": 0, "kappa": -1.0,
                                              "pos_kappa": -2.0, "delta": 0.3},
    # CosFace with its margin warming up over half of training: half of it at the batch's progress
    "cosface-anneal": {"margin": 0.35, "anneal": 0.5},
    # DyML's per-scale baseline: the positive pooled over the fine proxies of each scale's class
    "csl-per_scale": {"positive": "scale", "margins": {"fine": 0.25, "middle": 0.35, "coarse": 0.45},
                      "hierarchy": {"middle": (0, 0, 1), "coarse": (0, 0, 0)},
                      "scale_classes": {"fine": 3, "middle": 2, "coarse": 1}},
}
#: Timm trunks on images: ConvNeXt (LayerNorm: a sample's features do not depend on the rest
#: of its batch) trained whole, and EfficientNet-Lite0 with every group frozen (BatchNorm in
#: eval mode; a BatchNorm that trains normalizes per worker and is not exact by design).
TIMM_CASES = {"timm-convnext_atto": ("convnext_atto", 0), "timm-lite0-frozen": ("tf_efficientnet_lite0", 8)}
CASES |= {case: {} for case in TIMM_CASES}
#: Losses that read the attribute head (the model gets one for them).
WITH_ATTRIBUTE_HEAD = {"soft_binomial_deviance"}
A = 5
#: Object classes of the count vectors.
C = 3


def make_learner(case: str) -> MetricLearner:
    torch.manual_seed(0)
    if case in TIMM_CASES:
        arch, frozen = TIMM_CASES[case]
        model = EmbeddingModel(TimmTrunk(arch), D)
        freeze_trunk(model, frozen)
        return MetricLearner(model, build_loss("multi_similarity"))
    name = case.split("-")[0]
    kwargs = {**EXTRA_KWARGS.get(name, {}), **CASES[case]}
    if "num_classes" in LOSSES.parameters(name):
        kwargs.update(num_classes=3, embed_dim=D)
    heads = {"attributes": AttributeHead(D_IN, A)} if name in WITH_ATTRIBUTE_HEAD else {}
    if case == "quantized-soft_pq":
        heads = {"soft_pq": SoftProductQuantizer(D, bits=[2, 4], codeword_bits=1, temperature=0.5)}
    model = EmbeddingModel(Flat(), D, heads)
    if name == "energy_confusion":
        kwargs["embedding_head"] = model.head  # what build_learner's context hands it
    return MetricLearner(model, build_loss(name, **kwargs))


def batch() -> Batch:
    """Eight rows with labels, attributes and an attribute mask (one row has none known), and
    object counts (pair losses on multi-object rows read those), a quarter into training
    (margins that warm up are halfway there)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, D_IN, generator=g)
    attributes = (torch.rand(B, A, generator=g) < 0.5).float()
    known = torch.rand(B, A, generator=g) < 0.8
    known[5] = False
    counts = torch.randint(0, 3, (B, C), generator=g).float()
    counts[counts.sum(1) == 0, 0] = 1
    return Batch(images=x, index=torch.arange(B), labels=torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]),
                 attributes=attributes * known, attribute_mask=known, counts=counts, step=3, epoch=1,
                 progress=0.25)


def case_batch(case: str) -> Batch:
    """:func:`batch`, with images for the cases that have a convolutional trunk."""
    full = batch()
    if case in TIMM_CASES:
        full = full.replace(images=torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    return full


def half(full: Batch, rank: int) -> Batch:
    rows = slice(rank * B // 2, (rank + 1) * B // 2)
    return full.replace(images=full.images[rows], index=full.index[rows], labels=full.labels[rows],
                        attributes=full.attributes[rows], attribute_mask=full.attribute_mask[rows],
                        counts=full.counts[rows])


def one_step(learner, rows: Batch):
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    loss, _ = learner(rows)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def worker(rank: int, port: int, out: str) -> None:
    """One SGD step of every case on this rank's half of the batch, in one process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    results = {}
    for case in sorted(CASES):
        learner = make_learner(case)
        ddp = DistributedDataParallel(learner)
        loss = one_step(ddp, half(case_batch(case), rank))
        results[case] = {"loss": loss, "state": learner.state_dict()}
    torch.save(results, out.format(rank=rank))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_worker_steps(tmp_path_factory) -> list[dict]:
    """Each rank's results for every case: two processes are started once for all of them."""
    out = str(tmp_path_factory.mktemp("distributed") / "rank{rank}.pt")
    mp.spawn(worker, args=(free_port(), out), nprocs=2, join=True)
    return [torch.load(out.format(rank=rank), weights_only=True) for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_workers_equal_one_worker(case, two_worker_steps):
    single = make_learner(case)
    loss = one_step(single, case_batch(case))
    for ranks in two_worker_steps:  # every rank holds the same weights and proxies after the step
        distributed = ranks[case]
        torch.testing.assert_close(distributed["loss"], loss)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(distributed["state"][key], value, rtol=1e-5, atol=1e-6)
