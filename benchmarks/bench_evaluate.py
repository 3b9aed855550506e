"""Speed and memory of ``dml.evaluate.retrieval_metrics`` against a brute-force numpy reference.

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_evaluate.py --n 100000 --dim 128 --classes 1000 \\
        --out benchmarks/results/evaluate.json

Data: ``n`` random ``dim``-d embeddings in ``classes`` classes (class centres plus Gaussian noise,
so that the metrics are neither 0 nor 1), float32, generated from ``--seed``; the query set is
the gallery (each query ranked against all the others).

Reference: what one would write first with numpy: row blocks of 2,048 queries, the full
``[2048, n]`` cosine matrix, ``np.argsort`` of every row, labels gathered in ranked order,
recall@1 and MAP@R from the whole ranked relevance matrix.

Each measurement runs in a fresh subprocess; peak memory is that process's
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (which sees torch's allocations, unlike
tracemalloc), reported in total and above the process's peak before the timed call (data,
interpreter and libraries). The two must agree on recall@1 and MAP@R to 1e-6.

``--ref-queries m`` (m < n) runs the reference on a seeded sample of m queries against the whole
gallery and scales its time by n/m (its memory does not depend on m beyond one block); the
agreement check then compares the reference with ``retrieval_metrics`` on the same sampled
queries. The output says when it did this.
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

REF_BLOCK = 2048


def make_data(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes  # balanced: n / classes items per class
    rng.shuffle(labels)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * 2.0
    return centres[labels] + noise, labels.astype(np.int64)


def reference_metrics(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """Brute force: full similarity rows, np.argsort, metrics from the ranked relevance matrix."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    recall1, map_r = [], []
    for start in range(0, len(rows), REF_BLOCK):
        block = rows[start : start + REF_BLOCK]
        sim = xn[block] @ xn.T
        sim[np.arange(len(block)), block] = -np.inf  # the query itself goes last ...
        order = np.argsort(-sim, axis=1)[:, :-1]  # ... and is dropped
        rel = y[order] == y[block, None]
        n_rel = rel.sum(axis=1)
        valid = n_rel > 0
        width = int(n_rel.max())
        top = rel[:, :width]
        precision = np.cumsum(top, axis=1) / np.arange(1, width + 1)
        within_r = np.arange(width) < n_rel[:, None]
        recall1.append(rel[valid, 0])
        map_r.append(((precision * top * within_r).sum(axis=1) / np.maximum(n_rel, 1))[valid])
    return {"recall@1": float(np.concatenate(recall1).mean()), "map@r": float(np.concatenate(map_r).mean())}


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    x, y = make_data(args.n, args.dim, args.classes, args.seed)
    sample = None
    if args.ref_queries and args.ref_queries < args.n:
        sample = np.sort(np.random.default_rng(args.seed + 1).choice(args.n, args.ref_queries, replace=False))
    if args.worker == "ours":
        import torch

        from dml.evaluate import retrieval_metrics

        torch.set_num_threads(os.cpu_count() or 1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        result = retrieval_metrics(x, y, ks=(1,), nmi=False, block_bytes=args.block_bytes)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        metrics = {"recall@1": result["recall@1"], "map@r": result["map@r"]}
        extra = {}
        if args.time_nmi:  # clustering is not part of the reference: timed on its own, after the peak
            from dml.evaluate.metrics import clustering_scores

            xn = torch.nn.functional.normalize(torch.from_numpy(x), dim=1).numpy()
            start_nmi = time.perf_counter()
            extra = {"nmi": clustering_scores(xn, y, seed=args.seed)["nmi"], "nmi_seconds": time.perf_counter() - start_nmi}
        if sample is not None:  # the same sampled queries as the reference, self excluded
            sampled = retrieval_metrics(x[sample], y[sample], x, y, ks=(1,), nmi=False, query_gallery_index=sample)
            metrics = {"recall@1": sampled["recall@1"], "map@r": sampled["map@r"]}
        scale = 1.0
    else:
        extra = {}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = np.arange(args.n) if sample is None else sample
        start = time.perf_counter()
        metrics = reference_metrics(x, y, rows)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = args.n / len(rows)
    print(
        json.dumps(
            {
                "seconds": seconds * scale,
                "seconds_measured": seconds,
                "time_scaled_from_queries": None if scale == 1.0 else len(rows),
                "peak_rss_mib": peak / 1024,
                "peak_rss_before_call_mib": before / 1024,
                "metrics": metrics,
                **extra,
            }
        )
    )


def measure(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind] + [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in ("n", "dim", "classes", "seed", "block_bytes", "ref_queries", "time_nmi")
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-bytes", type=int, default=256 << 20)
    parser.add_argument("--ref-queries", type=int, default=0, help="time the reference on this many queries and scale (0: all)")
    parser.add_argument("--time-nmi", type=int, default=1, help="also time clustering (k-means, K=classes) on its own (1/0)")
    parser.add_argument("--out", default="benchmarks/results/evaluate.json")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    load_before = os.getloadavg()
    ours = measure("ours", args)
    reference = measure("reference", args)
    diff = {key: abs(ours["metrics"][key] - reference["metrics"][key]) for key in ("recall@1", "map@r")}
    agree = all(d <= 1e-6 for d in diff.values())
    sampled = reference["time_scaled_from_queries"]

    rows = [("dml retrieval_metrics", ours), ("numpy argsort reference", reference)]
    print(f"n={args.n} dim={args.dim} classes={args.classes} (query set = gallery), {os.cpu_count()} CPUs")
    print(f"{'method':<26}{'wall s':>10}{'peak MiB':>11}{'+call MiB':>11}{'recall@1':>11}{'map@r':>10}")
    for name, r in rows:
        print(
            f"{name:<26}{r['seconds']:>10.1f}{r['peak_rss_mib']:>11.0f}"
            f"{r['peak_rss_mib'] - r['peak_rss_before_call_mib']:>11.0f}"
            f"{r['metrics']['recall@1']:>11.6f}{r['metrics']['map@r']:>10.6f}"
        )
    ratio = reference["seconds"] / ours["seconds"]
    print(f"speed-up (reference time / dml time): {ratio:.2f}x")
    if "nmi_seconds" in ours:
        print(f"clustering (not in the times above): nmi={ours['nmi']:.4f} in {ours['nmi_seconds']:.1f} s")
    print(f"peak memory ratio (reference / dml): {reference['peak_rss_mib'] / ours['peak_rss_mib']:.2f}x")
    if sampled:
        print(f"NOTE: reference timed on {sampled} sampled queries and scaled by {args.n / sampled:.1f}; "
              "agreement checked on those queries")
    print(f"agreement |diff| recall@1={diff['recall@1']:.2e} map@r={diff['map@r']:.2e}: {'OK' if agree else 'FAIL'}")

    result = {
        "config": {k: getattr(args, k) for k in ("n", "dim", "classes", "seed", "block_bytes", "ref_queries", "time_nmi")},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "dml": ours,
        "reference": reference,
        "speedup": ratio,
        "abs_diff": diff,
        "agree_1e-6": agree,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
