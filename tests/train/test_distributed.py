"""The global-batch all-gather: 2 gloo processes on two halves == 1 process on the whole batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from dml.losses import build_loss
from dml.train.loop import MetricLearner
from dml.models import EmbeddingModel

B, D_IN, D = 8, 6, 4


class Flat(torch.nn.Module):
    out_dim = D_IN

    def forward(self, x):
        return x


def make_learner(loss_name: str) -> MetricLearner:
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "embed_dim": D} if loss_name == "proxy_anchor" else {}
    return MetricLearner(EmbeddingModel(Flat(), D), build_loss(loss_name, **kwargs))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, D_IN, generator=g), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])


def one_step(learner, x, y):
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    loss = learner(x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def worker(rank: int, port: int, loss_name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    learner = make_learner(loss_name)
    ddp = DistributedDataParallel(learner)
    x, y = batch()
    half = slice(rank * B // 2, (rank + 1) * B // 2)
    loss = one_step(ddp, x[half], y[half])
    if rank == 0:
        torch.save({"loss": loss, "state": learner.state_dict()}, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["multi_similarity", "contrastive", "proxy_anchor"])
def test_two_workers_equal_one_worker(loss_name, tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(worker, args=(free_port(), loss_name, out), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    single = make_learner(loss_name)
    loss = one_step(single, *batch())
    torch.testing.assert_close(distributed["loss"], loss)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(distributed["state"][key], value, rtol=1e-5, atol=1e-6)
