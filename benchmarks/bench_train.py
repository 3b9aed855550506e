"""Training throughput: Ray Train with 1 and 2 workers against a plain in-process loop.

    .venv/bin/python benchmarks/bench_train.py [--epochs 3] [--loss multi_similarity] [--batch-size 64] [--m-per-class 8] [--use-gpu]

All three train the same model on the same synthetic data in one run; the figure of merit is
images/s over the epochs after the first (which pays for start-up), reported as a ratio to
the in-process reference. Writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.data.ingest import ingest
from dml.data.splits import make_splits
from dml.io import write_json_atomic
from dml.runtime import ray_session
from dml.train.loop import DataSpec, LocalSession, fit, load_checkpoint
from dml.train.ray_trainer import latest_checkpoint, train_on_ray


def steady_throughput(history: list[dict]) -> float:
    rates = [h["images_per_s"] for h in history[1:]] or [history[0]["images_per_s"]]
    return statistics.median(rates)


def measure(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Images/s of the in-process loop and of Ray Train with 1 and 2 workers, on the same data."""
    import torch

    ingest("synthetic", {"seed": 0}, work / "manifest.parquet")
    pq.write_table(make_splits(pq.read_table(work / "manifest.parquet")), work / "splits.parquet")
    data = DataSpec(manifest=str(work / "manifest.parquet"), splits=str(work / "splits.parquet"))

    def spec(workers: int, cpus: int) -> RunSpec:
        return RunSpec(
            experiment=f"bench{workers}",
            loss_name=args.loss,
            loss_kwargs={},
            model=ModelConfig(),
            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, m_per_class=args.m_per_class,
                              num_workers=workers, cpus_per_worker=cpus, use_gpu=args.use_gpu,
                              max_failures=0),
        )

    session = LocalSession(device=torch.device("cuda" if args.use_gpu else "cpu"))
    fit(spec(1, 1), data, session)
    rows = {"in-process, 1 process": steady_throughput(session.history)}
    with ray_session():
        for workers, cpus in ((1, 2), (2, 1)):
            result = train_on_ray(spec(workers, cpus), data, storage_path=work / "runs")
            with latest_checkpoint(result) as folder:
                history = load_checkpoint(folder)["history"]
            # Per-worker throughput x workers: every worker processes batch_size images a step.
            rows[f"Ray Train, {workers} worker(s)"] = steady_throughput(history) * workers
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loss", default="multi_similarity")
    parser.add_argument("--batch-size", type=int, default=64, help="per worker")
    parser.add_argument("--m-per-class", type=int, default=8,
                        help="images per class in a batch; 2 workers need 2 x batch / m distinct classes")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dmlb-") as tmp:
        rows = measure(args, Path(tmp))
    reference = rows["in-process, 1 process"]
    print(f"{'run':<28} {'images/s':>10} {'ratio':>7}")
    for name, rate in rows.items():
        print(f"{name:<28} {rate:>10.1f} {rate / reference:>7.2f}")
    write_json_atomic(args.out, {"images_per_s": rows, "ratio_to_in_process": {k: v / reference for k, v in rows.items()},
                                 "epochs": args.epochs, "loss": args.loss, "batch_size": args.batch_size,
                                 "m_per_class": args.m_per_class, "gpu": args.use_gpu})


if __name__ == "__main__":
    main()
