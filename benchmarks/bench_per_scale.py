"""Speed of the per-scale protocol (mAP, Recall@1 and ASI at each semantic scale) against a
dense argsort reference, on the CPU or a GPU, in one run.

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_per_scale.py --n 20000 --dim 64 \\
        --out benchmarks/results/per_scale.json
    python benchmarks/bench_per_scale.py --n 100000 --dim 128 --device cuda   # on a GPU

Data: ``n`` float32 embeddings in ``fine`` classes (balanced), each fine class in one of
``middle`` classes and each middle class in one of ``coarse`` classes; an embedding is its fine,
middle and coarse centres plus Gaussian noise, so that every scale's metrics are neither 0 nor
1. Every row is a query ranked against all the others (self-retrieval). At the coarse scale a
query has ``n / coarse`` relevant items: the whole ranking is needed, no top-k list will do.

Ours: ``build_protocol({"name": "per_scale"}).evaluate``: exact streamed ranking (relevant
items' positions by binary search over value-sorted blocks), metrics per scale from those
positions, ASI by harmonic numbers. Reference: what one writes first (and what HAPPIER's
evaluation does): per block of queries, the full similarity rows, an argsort of each row,
the labels gathered in ranked order, and mAP, Recall@1 and ASI from the cumulative sum of the
ranked relevance at each scale. Both run on ``--device`` in this process; the figures must
agree to 1e-6.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dml.evaluate.protocols import EvalRows, build_protocol  # noqa: E402
from dml.io import write_json_atomic  # noqa: E402

REF_BLOCK = 512
SCALES = ("fine", "middle", "coarse")


def make_data(n: int, dim: int, fine: int, middle: int, coarse: int,
              seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Embeddings and their labels per scale (see the module docstring)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % fine
    rng.shuffle(labels)
    middle_of = np.arange(fine) % middle
    coarse_of = np.arange(middle) % coarse
    scales = {"fine": labels, "middle": middle_of[labels], "coarse": coarse_of[middle_of[labels]]}
    x = np.zeros((n, dim), dtype=np.float32)
    for scale, count, spread in (("fine", fine, 1.0), ("middle", middle, 1.0), ("coarse", coarse, 1.0)):
        centres = rng.standard_normal((count, dim)).astype(np.float32) * spread
        x += centres[scales[scale]]
    x += rng.standard_normal((n, dim), dtype=np.float32) * 2.0
    return x, {s: v.astype(np.int64) for s, v in scales.items()}


def reference(x: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    """Dense argsort per block; each scale's metrics from its ranked relevance."""
    xn = torch.nn.functional.normalize(x, dim=1)
    n = len(xn)
    sums = {f"{s}/{m}": 0.0 for s in labels for m in ("map", "recall@1", "asi")}
    for start in range(0, n, REF_BLOCK):
        rows = torch.arange(start, min(start + REF_BLOCK, n), device=x.device)
        sim = xn[rows] @ xn.T
        sim[torch.arange(len(rows), device=x.device), rows] = -torch.inf  # itself last ...
        order = torch.argsort(sim, dim=1, descending=True)[:, :-1]       # ... and dropped
        positions = torch.arange(1, n, device=x.device, dtype=torch.float64)
        for scale, y in labels.items():
            rel = (y[order] == y[rows, None]).double()
            hits = torch.cumsum(rel, dim=1)
            R = hits[:, -1]
            precision = hits / positions
            sums[f"{scale}/map"] += float(((precision * rel).sum(1) / R).sum())
            sums[f"{scale}/recall@1"] += float(rel[:, 0].sum())
            within = positions[None, :] <= R[:, None]
            sums[f"{scale}/asi"] += float(((precision * within).sum(1) / R).sum())
    return {k: v / n for k, v in sums.items()}


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--fine", type=int, default=1000)
    parser.add_argument("--middle", type=int, default=100)
    parser.add_argument("--coarse", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/per_scale.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    x_np, labels_np = make_data(args.n, args.dim, args.fine, args.middle, args.coarse, args.seed)
    x = torch.from_numpy(x_np).to(device)
    rows = EvalRows(ids=np.arange(args.n).astype(str).astype(object),
                    split=np.full(args.n, "test", dtype=object), role=np.full(args.n, "both", dtype=object),
                    domain=np.full(args.n, "photo", dtype=object), labels=labels_np)
    protocol = build_protocol({"name": "per_scale"})
    timed(lambda: protocol.evaluate(rows.subset(np.arange(args.n) < 256), x[:256], ks=(1,), nmi=False),
          device)  # warm-up (kernels, thread pools)
    ours, ours_s = timed(lambda: protocol.evaluate(rows, x, ks=(1,), nmi=False), device)
    labels = {s: torch.from_numpy(v).to(device) for s, v in labels_np.items()}
    ref, ref_s = timed(lambda: reference(x, labels), device)
    keys = sorted(ref)
    diff = {k: abs(ours[k] - ref[k]) for k in keys}
    agree = all(d <= 1e-6 for d in diff.values())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"n={args.n} dim={args.dim} scales fine/middle/coarse = {args.fine}/{args.middle}/{args.coarse} "
          f"(coarse R = {args.n // args.coarse}), on {name}")
    print(f"{'':<12}" + "".join(f"{k:>18}" for k in keys))
    print(f"{'dml':<12}" + "".join(f"{ours[k]:>18.6f}" for k in keys))
    print(f"{'reference':<12}" + "".join(f"{ref[k]:>18.6f}" for k in keys))
    print(f"dml per_scale {ours_s:.2f} s, dense argsort reference {ref_s:.2f} s: "
          f"speed-up {ref_s / ours_s:.2f}x; agreement to 1e-6: {'OK' if agree else 'FAIL'} "
          f"(max |diff| {max(diff.values()):.1e})")
    result = {
        "config": vars(args),
        "machine": {"device": name, "platform": platform.platform(), "torch": torch.__version__},
        "dml_seconds": ours_s, "reference_seconds": ref_s, "speedup": ref_s / ours_s,
        "dml": {k: ours[k] for k in keys}, "reference": ref, "agree_1e-6": agree,
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
