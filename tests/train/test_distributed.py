"""Distributed exactness: 2 gloo processes on two halves of a batch == 1 process on the whole.

One SGD step (plain SGD: an adaptive optimizer would hide a gradient scaled by the world size)
for every loss in the registry: the loss value and every updated weight, trunk and proxies.
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
from dml.train.loop import MetricLearner
from dml.models import EmbeddingModel

from losses.helpers import EXTRA_KWARGS

B, D_IN, D = 8, 6, 4


class Flat(torch.nn.Module):
    out_dim = D_IN

    def forward(self, x):
        return x


CASES = {name: {} for name in LOSSES.names()} | {
    f"triplet-{mining}": {"mining": mining} for mining in ("all", "semihard", "hard")
}


def make_learner(case: str) -> MetricLearner:
    torch.manual_seed(0)
    name = case.split("-")[0]
    kwargs = {**EXTRA_KWARGS.get(name, {}), **CASES[case]}
    if "num_classes" in LOSSES.parameters(name):
        kwargs.update(num_classes=3, embed_dim=D)
    return MetricLearner(EmbeddingModel(Flat(), D), build_loss(name, **kwargs))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, D_IN, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])


def one_step(learner, x, y):
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    loss = learner(Batch(images=x, index=torch.arange(len(y)), labels=y))
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
        x, y = batch()
        half = slice(rank * B // 2, (rank + 1) * B // 2)
        loss = one_step(ddp, x[half], y[half])
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
    loss = one_step(single, *batch())
    for ranks in two_worker_steps:  # every rank holds the same weights and proxies after the step
        distributed = ranks[case]
        torch.testing.assert_close(distributed["loss"], loss)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(distributed["state"][key], value, rtol=1e-5, atol=1e-6)
