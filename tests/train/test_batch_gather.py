"""The batch record and the model outputs through a real 2-process gloo all-gather: every
field arrives in rank order, and gradients flow back to each rank's own slice, scaled so that
DDP's average over ranks equals one process on the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dml.batch import Batch, ModelOutput
from dml.train.distributed import gather_global_batch

B = 3  # per rank


def full_batch() -> tuple[Batch, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    n = 2 * B
    batch = Batch(
        images=torch.randn(n, 3, 4, 4, generator=g),
        index=torch.arange(10, 10 + n),
        labels=torch.tensor([0, 1, 0, 2, 1, 2]),
        scales={"middle": torch.tensor([0, 0, 0, 1, 0, 1]), "coarse": torch.zeros(n, dtype=torch.long)},
        attributes=torch.randint(0, 2, (n, 5), generator=g).float(),
        attribute_mask=torch.tensor([[True] * 5, [False] * 5] * 3),
        counts=torch.randint(0, 3, (n, 4), generator=g).float(),
        domain=torch.tensor([1, 0, 1, 0, 1, 0]),
        instance=torch.tensor([0, 0, 1, 1, 2, -1]),
        step=7, epoch=1, progress=0.25,
    )
    params = {"embeddings": torch.randn(n, 4, generator=g), "features": torch.randn(n, 6, generator=g),
              "attributes": torch.randn(n, 5, generator=g)}
    return batch, params


def slice_batch(batch: Batch, lo: int, hi: int) -> Batch:
    def cut(t):
        return t[lo:hi]
    return batch.replace(images=cut(batch.images), index=cut(batch.index), labels=cut(batch.labels),
                         scales={k: cut(v) for k, v in batch.scales.items()}, attributes=cut(batch.attributes),
                         attribute_mask=cut(batch.attribute_mask), counts=cut(batch.counts), domain=cut(batch.domain),
                         instance=cut(batch.instance))


def objective(output: ModelOutput, batch: Batch) -> torch.Tensor:
    """A loss that reads every output and several annotations across the whole global batch."""
    e = output.embeddings
    pairwise = (e @ e.T * (batch.labels[:, None] == batch.labels[None, :])).sum()
    attrs = ((torch.sigmoid(output.heads["attributes"]) - batch.attributes) ** 2 * batch.attribute_mask).sum()
    return pairwise + attrs + (output.features ** 2 * batch.domain[:, None]).sum() * batch.progress


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    batch, params = full_batch()
    local = slice_batch(batch, rank * B, (rank + 1) * B)
    leaves = {k: v[rank * B:(rank + 1) * B].clone().requires_grad_(True) for k, v in params.items()}
    output = ModelOutput(embeddings=leaves["embeddings"], features=leaves["features"],
                         heads={"attributes": leaves["attributes"]})
    g_output, g_batch = gather_global_batch(output, local)
    loss = objective(g_output, g_batch)
    loss.backward()
    torch.save({
        "loss": loss.detach(),
        "images": g_batch.images,
        "batch": {k: getattr(g_batch, k) for k in ("index", "labels", "attributes", "attribute_mask", "counts",
                                                     "domain", "instance", "step", "epoch", "progress")},
        "scales": g_batch.scales,
        "outputs": {"embeddings": g_output.embeddings.detach(), "features": g_output.features.detach(),
                    "attributes": g_output.heads["attributes"].detach()},
        "grads": {k: v.grad for k, v in leaves.items()},
    }, out.format(rank=rank))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_field_is_gathered_and_gradients_reach_the_local_slice(tmp_path):
    out = str(tmp_path / "rank{rank}.pt")
    mp.spawn(worker, args=(free_port(), out), nprocs=2, join=True)
    batch, params = full_batch()
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    output = ModelOutput(embeddings=leaves["embeddings"], features=leaves["features"],
                         heads={"attributes": leaves["attributes"]})
    loss = objective(output, batch)
    loss.backward()
    for rank in (0, 1):
        got = torch.load(out.format(rank=rank), weights_only=True)
        torch.testing.assert_close(got["loss"], loss.detach())
        assert got["images"] is None  # pixels stay on their rank
        for key, value in got["batch"].items():
            expected = getattr(batch, key)
            if isinstance(expected, torch.Tensor):
                assert torch.equal(value, expected) and value.dtype == expected.dtype, key
            else:
                assert value == expected, key
        assert set(got["scales"]) == {"middle", "coarse"}
        for key, value in got["scales"].items():
            assert torch.equal(value, batch.scales[key])
        for key, value in got["outputs"].items():
            torch.testing.assert_close(value, params[key])
        for key, grad in got["grads"].items():
            # world_size x d(global loss)/d(this rank's rows): DDP's average over ranks then
            # gives each parameter exactly its single-process gradient
            torch.testing.assert_close(grad, 2 * leaves[key].grad[rank * B:(rank + 1) * B])
