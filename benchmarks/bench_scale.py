"""Scale: wall time and peak memory of ingest, one training epoch, embedding and evaluation as
the number of images grows.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000 50000 200000] [--work DIR]
        [--actors 2] [--cache-mb 64]

For each size N it writes N small JPEGs (48 px, 50 per class, in class folders) under
``--work`` and runs each stage in a process of its own, as the pipeline would:

- ingest: the folder source into a sharded manifest, its shards on Ray Data tasks;
- split: class-disjoint train/test split (half the classes each);
- train: one epoch of the training loop (a narrow small CNN from random weights, 32 px,
  batches of 64, 4 per class; decoded images cached up to ``--cache-mb`` MiB);
- embed: every image, on Ray Data with ``--actors`` model actors;
- evaluate: the test half ranked exactly (Recall@1, MAP@R), then through the approximate
  candidate stage (an IVF index, exact re-ranking), with its measured recall.

Each row gives the stage's wall time, the peak RSS of the stage's own process (exact, from the
kernel) and of its largest Ray worker process (sampled every 0.2 s), and the number of Ray
worker processes. Writes benchmarks/results/scale.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PER_CLASS = 50
SIDE = 48
STAGES = ("ingest", "split", "train", "embed", "evaluate")


# ----------------------------------------------------------------------------- images


def _write_images(job: tuple[str, int, int]) -> None:
    """Class folders ``first..last-1`` of ``root``: a coloured disc or square per class on a
    noisy background, JPEG-encoded."""
    from PIL import Image, ImageDraw

    root, first, last = job
    for label in range(first, last):
        folder = Path(root) / f"c{label:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(label)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        square = bool(label % 2)
        for i in range(PER_CLASS):
            noise = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
            image = Image.fromarray(noise // 4 + 96)
            draw = ImageDraw.Draw(image)
            x, y = rng.integers(4, 20, 2)
            size = int(rng.integers(16, 26))
            box = (int(x), int(y), int(x) + size, int(y) + size)
            (draw.rectangle if square else draw.ellipse)(box, fill=colour)
            image.save(folder / f"{i:02d}.jpg", quality=85)


def write_images(root: Path, n: int) -> None:
    """``n`` JPEGs in ``n / PER_CLASS`` class folders (made once: kept between runs)."""
    done = root / ".done"
    if done.is_file() and done.read_text() == str(n):
        return
    classes = n // PER_CLASS
    step = max(1, classes // 64)
    jobs = [(str(root), first, min(first + step, classes)) for first in range(0, classes, step)]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(_write_images, jobs)
    done.write_text(str(n))


# ----------------------------------------------------------------------------- stages (children)


def run_stage(stage: str, work: Path, args: argparse.Namespace) -> None:
    """One stage, in this (child) process."""
    from dml.config import ModelConfig, RunSpec, TrainConfig

    manifest, splits, model = work / "manifest.parquet", work / "splits.parquet", work / "model"
    spec = RunSpec(
        experiment="scale", dataset="scale", loss={"name": "contrastive"},
        model=ModelConfig(backbone="small_cnn", backbone_options={"width": 8, "depth": 3},
                          image_size=32, embed_dim=64),
        train=TrainConfig(epochs=1, batch_size=64, sampler={"name": "m_per_class", "m": 4},
                          val_folds=[], select="last", max_failures=0, launcher="local",
                          image_cache_mb=args.cache_mb),
        protocol={"name": "self_retrieval"},
    )
    if stage == "ingest":
        from dml.data.ingest import ingest

        ingest("folder", {"root": str(work / "images")}, manifest)
    elif stage == "split":
        from dml.data.manifest import manifest_columns, read_manifest
        from dml.data.splits import make_splits, write_splits

        columns = [c for c in manifest_columns(manifest) if c not in ("image", "path")]
        write_splits(make_splits(read_manifest(manifest, columns=columns), test_fraction=0.5,
                                 num_folds=2, seed=0), splits)
    elif stage == "train":
        train(spec, manifest, splits, model)
    elif stage == "embed":
        embed(spec, manifest, splits, model, work / "embeddings.parquet", args.actors)
    elif stage == "evaluate":
        evaluate(spec, manifest, splits, work / "embeddings.parquet", work / "metrics.json")


def train(spec: Any, manifest: Path, splits: Path, model: Path) -> None:
    """One epoch of the training loop in this process (what each Ray Train worker runs)."""
    import torch

    from dml.context import BuildContext
    from dml.train.export import export_model
    from dml.train.loop import fit
    from dml.train.sessions import LocalSession
    from dml.train.training_data import DataSpec, training_set

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    data = DataSpec(manifest=str(manifest), splits=str(splits))
    session = LocalSession(device=torch.device("cpu"))
    learner = fit(spec, data, session)
    sizes = training_set(spec, data).rows.context_sizes()  # annotations only: no pixels read
    export_model(learner.model, spec.model, model, context=BuildContext(**sizes))
    print(json.dumps({"images_per_s": session.history[-1].get("images_per_s")}))


def embed(spec: Any, manifest: Path, splits: Path, model: Path, out: Path, actors: int) -> None:
    """Every image's embedding on Ray Data model actors, written as shards."""
    from dml.embed_ray import embed_to

    embed_to(out, model, manifest, splits, domains=spec.domains, normalize=True, views=(),
             batch_size=256, actors=actors)


def evaluate(spec: Any, manifest: Path, splits: Path, embeddings: Path, out: Path) -> None:
    """Exact, then approximate, evaluation of the test rows."""
    from dml.embed import read_embeddings
    from dml.evaluate.candidates import Candidates
    from dml.evaluate.experiment import aligned_rows, evaluate_test_split
    from dml.evaluate.protocols import build_protocol

    table, vectors, _ = read_embeddings(embeddings)
    rows = aligned_rows(spec, str(manifest), str(splits), table)
    protocol = build_protocol(spec.protocol)
    figures = {}
    start = time.perf_counter()
    figures["exact"] = evaluate_test_split(rows, vectors, protocol, {}, ks=(1,))
    figures["exact_s"] = time.perf_counter() - start
    start = time.perf_counter()
    # about 4 sqrt(gallery) inverted lists, a sixteenth of them visited: faiss's usual start
    gallery = int((np.asarray(rows.split) == "test").sum())
    lists = 2 ** round(np.log2(4 * np.sqrt(gallery)))
    candidates = Candidates(index=f"IVF{lists},Flat", nprobe=max(1, lists // 16), k=100,
                            recall_sample=1000)
    figures["approximate"] = evaluate_test_split(rows, vectors, protocol, {}, ks=(1,),
                                                 candidates=candidates)
    figures["approximate_s"] = time.perf_counter() - start
    out.write_text(json.dumps(figures, default=float))


# ----------------------------------------------------------------------------- measuring (parent)


class PeakMemory:
    """The peak RSS of each process descending from ``pid``, sampled every ``every`` seconds
    (a process's own peak comes exactly from the kernel when it ends; this is for the Ray
    processes a stage starts)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                processes = self.root.children(recursive=True)
            except psutil.Error:
                return
            for process in processes:
                try:
                    name = " ".join(process.cmdline()[:1]) or process.name()
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                previous = self.peaks.get(process.pid, (name, 0))[1]
                self.peaks[process.pid] = (name, max(previous, rss))
            time.sleep(every)

    def stop(self) -> dict[str, Any]:
        """The largest Ray worker's peak RSS (MiB) and how many worker processes there were."""
        self._stop.set()
        self._thread.join()
        workers = [rss for name, rss in self.peaks.values() if name.startswith("ray::")]
        return {"ray_workers": len(workers), "worker_peak_mib": max(workers, default=0) / 2**20}


def measure(stage: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``stage`` in a child process: its wall time and peak memory."""
    command = [sys.executable, __file__, "--stage", stage, "--work", str(work),
               "--actors", str(args.actors), "--cache-mb", str(args.cache_mb)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    memory = PeakMemory(child.pid)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"stage {stage} at {work.name} failed ({child.returncode})")
    row = {"wall_s": wall, "process_peak_mib": usage.ru_maxrss / 1024, **memory.stop()}
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if lines:
        row.update(json.loads(lines[-1]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--work", type=Path, default=None, help="kept images (default: a temp folder)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.work, args)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = args.work or Path(tempfile.mkdtemp(prefix="dml-scale-"))
    results: dict[str, Any] = {"processor": _processor(), "cpus": os.cpu_count(), "sizes": {}}
    print(f"{'images':>8} {'stage':<9} {'wall s':>8} {'process MiB':>12} {'worker MiB':>11} {'workers':>8}")
    for n in args.sizes:
        folder = work / f"n{n}"
        write_images(folder / "images", n)
        rows = results["sizes"][str(n)] = {}
        for stage in STAGES:
            row = rows[stage] = measure(stage, folder, args)
            print(f"{n:>8} {stage:<9} {row['wall_s']:>8.1f} {row['process_peak_mib']:>12.0f} "
                  f"{row['worker_peak_mib']:>11.0f} {row['ray_workers']:>8}", flush=True)
        metrics = json.loads((folder / "metrics.json").read_text())
        rows["evaluate"]["exact_s"] = metrics["exact_s"]
        rows["evaluate"]["approximate_s"] = metrics["approximate_s"]
        rows["evaluate"]["ranking"] = metrics["approximate"].get("ranking")
        print(f"{n:>8} evaluate: exact {metrics['exact_s']:.1f} s, approximate "
              f"{metrics['approximate_s']:.1f} s, {metrics['approximate'].get('ranking')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


def _processor() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
