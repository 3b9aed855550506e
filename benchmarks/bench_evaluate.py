"""Exact evaluation against pytorch-metric-learning's AccuracyCalculator, in the same run.

Commands (from the repository root; the peer comes with the ``bench`` extra,
``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/bench_evaluate.py --n 20000 --dim 64
    .venv/bin/python benchmarks/bench_evaluate.py --n 100000 --dim 128
    .venv/bin/python benchmarks/bench_evaluate.py --n 1000000 --dim 128 --queries 2000 \\
        --modes query_gallery --peer 0        # memory flat in the gallery size

Data: ``n`` random ``dim``-d embeddings in ``classes`` classes (class centres plus Gaussian
noise, so that the metrics are neither 0 nor 1), L2-normalized, generated from ``--seed``.
``--noise`` sets how well the classes separate: 2 (the default) is an untrained model's
MAP@R of about 0.1, relevant items at every depth; 0.5 a well-trained one's, where the
full-ranking mAP compares exactly only the scores near a relevant one (``dml.evaluate.kernels.ranks_in_block``).
Two protocols: ``self`` (every embedding ranked against all the others) and
``query_gallery`` (``--queries`` embeddings, n/2 by default, against the rest).

Measured, each in a fresh subprocess:

- ``dml``: ``retrieval_metrics(..., nmi=False, full_map=False)``: P@1, R-Precision and MAP@R
  (plus recall@K), every query against the whole gallery, each query's own R deep;
- ``dml full``: the same with ``full_map=True``, which also ranks every relevant item for
  the average precision over the whole ranking (no peer computes it; shown for its cost);
- ``pml``: ``AccuracyCalculator(include=(precision_at_1, r_precision,
  mean_average_precision_at_r), k="max_bin_count").get_accuracy(...)`` (faiss k-NN with
  k = the largest class, then the metrics from the top k).

Time is the fastest of ``--repeats`` calls in the process (wall seconds; this machine's speed
drifts between runs, so each method's best is compared); memory is the process's peak RSS
(``VmHWM``), in total and above the RSS before the call (data, interpreter and libraries; on Linux the peak is reset before the call, so that generating the data does not
hide it). Ratios are dml / pml from the same run. The metrics must agree with the peer's
within 1e-4; the script exits non-zero when they do not. Figures go to
``benchmarks/results/evaluate-<n>x<dim>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dml.io import write_json_atomic  # noqa: E402

METRICS = {"precision@1": "precision_at_1", "r_precision": "r_precision", "map@r": "mean_average_precision_at_r"}
TOLERANCE = 1e-4


def make_data(n: int, dim: int, classes: int, seed: int, noise: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` L2-normalized float32 embeddings of ``classes`` balanced classes, and their labels:
    unit-variance class centres plus Gaussian ``noise`` of that standard deviation."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    x = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32) * noise
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels.astype(np.int64)


def protocol(args: argparse.Namespace, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(query, query_labels, gallery, gallery_labels)``; no gallery for ``self``."""
    x, y = make_data(args.n, args.dim, args.classes, args.seed, args.noise)
    if mode == "self":
        return x, y, None, None
    queries = args.queries or args.n // 2
    return x[:queries], y[:queries], x[queries:], y[queries:]


def prepare(kind: str):
    """The call to time, with its libraries imported and threads set (not timed)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    if kind == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=tuple(METRICS.values()), k="max_bin_count")

        def run_pml(query, query_labels, gallery, gallery_labels) -> dict[str, float]:
            tensors = [torch.from_numpy(a) if a is not None else None
                       for a in (query, query_labels, gallery, gallery_labels)]
            result = calculator.get_accuracy(*tensors, ref_includes_query=gallery is None)
            return {name: float(result[peer]) for name, peer in METRICS.items()}

        return run_pml
    from dml.evaluate import retrieval_metrics

    def run_dml(query, query_labels, gallery, gallery_labels) -> dict[str, float]:
        result = retrieval_metrics(query, query_labels, gallery, gallery_labels, nmi=False,
                                   full_map=kind == "dml-full")
        return {name: result[name] for name in METRICS}

    return run_dml


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    data = protocol(args, args.mode)
    call = prepare(args.worker)
    before = _reset_peak()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        metrics = call(*data)
        times.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": min(times), "all_seconds": times, "peak_rss_mib": peak / 1024,
                      "call_rss_mib": (peak - before) / 1024, "metrics": metrics}))


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field in KiB (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> int:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``), so that the
    peak measured after the call is the call's, not data generation's; the current RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # elsewhere the peak since start is what there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _status_kib("VmRSS")


def measure(kind: str, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--mode", mode] + [
        f"--{name}={getattr(args, name)}" for name in ("n", "dim", "classes", "seed", "noise", "queries", "repeats")
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=2.0,
                        help="class noise: 2 gives MAP@R ~0.1 (an untrained model), 0.5 a well-trained one")
    parser.add_argument("--queries", type=int, default=0, help="queries of query_gallery (0: n/2; the rest is the gallery)")
    parser.add_argument("--modes", nargs="+", default=["self", "query_gallery"], choices=["self", "query_gallery"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method: the fastest counts")
    parser.add_argument("--peer", type=int, default=1, help="also run pytorch-metric-learning (1/0)")
    parser.add_argument("--full", type=int, default=1, help="also time full_map=True (1/0)")
    parser.add_argument("--out", default="")
    parser.add_argument("--worker", choices=["dml", "dml-full", "pml"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["self", "query_gallery"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    kinds = ["dml"] + (["dml-full"] if args.full else []) + (["pml"] if args.peer else [])
    print(f"n={args.n} dim={args.dim} classes={args.classes} noise={args.noise:g}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{'protocol':<14}{'method':<10}{'wall s':>9}{'peak MiB':>10}{'+call MiB':>11}"
          + "".join(f"{name:>13}" for name in METRICS) + f"{'time / pml':>12}")
    results, agree = {}, True
    for mode in args.modes:
        rows = {kind: measure(kind, mode, args) for kind in kinds}
        peer = rows.get("pml")
        for kind, row in rows.items():
            if peer is not None:
                row["time_ratio_to_pml"] = row["seconds"] / peer["seconds"]
                row["abs_diff_to_pml"] = {k: abs(row["metrics"][k] - peer["metrics"][k]) for k in METRICS}
                agree &= max(row["abs_diff_to_pml"].values()) <= TOLERANCE
            ratio = f"{row['time_ratio_to_pml']:.2f}x" if peer is not None else "-"
            print(f"{mode:<14}{kind:<10}{row['seconds']:>9.2f}{row['peak_rss_mib']:>10.0f}{row['call_rss_mib']:>11.0f}"
                  + "".join(f"{row['metrics'][k]:>13.6f}" for k in METRICS) + f"{ratio:>12}")
        results[mode] = rows
    if args.peer:
        print(f"metrics equal to the peer's within {TOLERANCE:g}: {'OK' if agree else 'FAIL'}")
    out = args.out or f"benchmarks/results/evaluate-{args.n}x{args.dim}.json"
    write_json_atomic(out, {
        "config": {k: getattr(args, k) for k in ("n", "dim", "classes", "seed", "noise", "queries", "modes", "repeats")},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "results": results, "agree": agree,
    })
    print(f"wrote {out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
