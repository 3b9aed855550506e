"""Training throughput: the trunk alone, the whole loop (with DataLoader processes), Ray Train.

    .venv/bin/python benchmarks/bench_train.py [--workers 1 2] [--loader-workers 0 2] [--epochs 3]
        [--loss multi_similarity] [--batch-size 64] [--m-per-class 8] [--use-gpu] [--precision bf16]
        [--backbone small_cnn] [--image-size 32]

The reference is the trunk alone: forward and backward of the model with an Adam step on a
random tensor of one batch's shape, no data, no loss, measured in the same run. Every other
row trains the same model on the same synthetic data, and its images/s (over the epochs after
the first, which pays for start-up) is reported as a ratio to the trunk's: what the data
pipeline, the loss and the loop cost shows as the distance from 1. Rows: the in-process loop
with each ``--loader-workers`` count of DataLoader processes (``train.loader_workers``), then
Ray Train with each ``--workers`` count (with the share of step time in the global-batch
all-gather). Workers share this machine's CPUs (``--cpus`` in all) unless RAY_ADDRESS points at
a cluster, where each worker gets ``--cpus`` / workers CPUs or a GPU. Writes
benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.data.ingest import ingest
from dml.data.splits import make_splits
from dml.io import write_json_atomic
from dml.pipeline.ray_cluster import available_cpus
from dml.train.checkpoints import load_checkpoint
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec


def steady(history: list[dict], key: str) -> float:
    """Median of ``key`` over the epochs after the first (all epochs if there is only one)."""
    return statistics.median(h[key] for h in (history[1:] or history))


def trunk_alone(args: argparse.Namespace, steps: int = 30) -> float:
    """Images/s of forward + backward + an Adam step of the model on a random batch."""
    import torch

    from dml.batch import Batch
    from dml.models import build_model

    device = torch.device("cuda" if args.use_gpu else "cpu")
    model = build_model(ModelConfig(backbone=args.backbone, image_size=args.image_size)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    size = args.image_size
    batch = Batch(images=torch.randn(args.batch_size, 3, size, size, device=device),
                  index=torch.arange(args.batch_size, device=device))
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.forward_batch(batch).embeddings.float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - start)


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    """Images/s (and all-gather share) of the trunk alone, the loop and each Ray Train worker count."""
    import torch

    ingest("synthetic", {"seed": 0, "image_size": args.image_size}, work / "manifest.parquet")
    pq.write_table(make_splits(pq.read_table(work / "manifest.parquet")), work / "splits.parquet")
    data = DataSpec(manifest=str(work / "manifest.parquet"), splits=str(work / "splits.parquet"))

    def spec(workers: int, cpus: int, loader_workers: int = 0) -> RunSpec:
        return RunSpec(
            experiment=f"bench{workers}",
            dataset="synthetic",
            loss={"name": args.loss},
            model=ModelConfig(backbone=args.backbone, image_size=args.image_size),
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                              sampler={"name": "m_per_class", "m": args.m_per_class}, val_folds=[], select="last",
                              num_workers=workers, cpus_per_worker=cpus, use_gpu=args.use_gpu,
                              max_failures=0, loader_workers=loader_workers, precision=args.precision),
        )

    rows = {REFERENCE: {"images_per_s": trunk_alone(args), "gather_share": 0.0}}
    for loader_workers in args.loader_workers:
        session = LocalSession(device=torch.device("cuda" if args.use_gpu else "cpu"))
        fit(spec(1, args.cpus, loader_workers), data, session)
        rows[f"loop, {loader_workers} loader process(es)"] = {
            "images_per_s": steady(session.history, "images_per_s"), "gather_share": 0.0}
    if not args.workers:
        return rows
    from dml.pipeline.ray_cluster import ray_session
    from dml.train.ray_trainer import latest_checkpoint, train_on_ray

    with ray_session():
        for workers in args.workers:
            result = train_on_ray(spec(workers, max(1, args.cpus // workers)), data, storage_path=work / "runs")
            with latest_checkpoint(result) as folder:
                history = load_checkpoint(folder)["history"]
            # Rank 0's images/s x workers: every worker processes batch_size images a step.
            rows[f"Ray Train, {workers} worker(s)"] = {
                "images_per_s": steady(history, "images_per_s") * workers,
                "gather_share": steady(history, "gather_share"),
            }
    return rows


REFERENCE = "trunk alone, random tensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2],
                        help="Ray Train worker counts to measure (none: the in-process loop alone)")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=available_cpus(), help="CPUs shared by the workers")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loss", default="multi_similarity")
    parser.add_argument("--batch-size", type=int, default=64, help="per worker")
    parser.add_argument("--m-per-class", type=int, default=8,
                        help="images per class in a batch; 2 workers need 2 x batch / m distinct classes")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader process counts of the in-process loop rows")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dmlb-") as tmp:
        rows = measure(args, Path(tmp))
    reference = rows[REFERENCE]["images_per_s"]
    print(f"{'run':<30} {'images/s':>10} {'/ trunk':>8} {'all-gather':>11}")
    for name, row in rows.items():
        row["ratio"] = row["images_per_s"] / reference
        print(f"{name:<30} {row['images_per_s']:>10.1f} {row['ratio']:>8.2f} {row['gather_share']:>10.1%}")
    write_json_atomic(args.out, {"runs": rows, "reference": REFERENCE, "epochs": args.epochs,
                                 "loader_workers": args.loader_workers, "precision": args.precision,
                                 "loss": args.loss, "batch_size": args.batch_size, "m_per_class": args.m_per_class,
                                 "cpus": args.cpus, "gpu": args.use_gpu,
                                 "backbone": args.backbone, "image_size": args.image_size})


if __name__ == "__main__":
    main()
