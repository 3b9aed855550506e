"""Speed and memory of the adaptive-margin triplet loss against the ``triplet`` loss
(``mining: all``), forward and backward, in one run.

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_triplet.py --batch 128 256 512 \\
        --out benchmarks/results/triplet.json

Data: ``B`` float32 embeddings of size ``--dim`` and class labels (``B / 4`` classes), so both
losses mine the same triplets: with class-equality similarity and ``gamma = 0``,
``adaptive_triplet`` with ``reduction: non_zero`` is ``triplet`` exactly (the script checks
the two values agree). The adaptive loss mines in blocks of anchors without autograd and
back-propagates through one ``B x B`` matrix (it needs each triplet's own margin); ``triplet``
counts, per pair, the triplets it selects (two binary searches over sorted distances) and
never holds more than ``B x B`` either. Time: the median of ``--repeats`` forward+backward
passes. Memory: the largest tensor either creates (elements), from a dispatch-mode probe.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dml.io import write_json_atomic  # noqa: E402
from dml.losses import build_loss  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_losses import measure as timed  # noqa: E402
from bench_losses import step  # noqa: E402


class LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return out


def measure(loss, embeddings, labels, repeats: int) -> tuple[float, float, int]:
    """(value, median seconds per forward+backward, largest tensor in elements)."""
    value, seconds = timed(loss, embeddings, labels, repeats)
    with LargestTensor() as probe:
        step(loss, embeddings, labels)
    return value, seconds, probe.largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/triplet.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    ours = build_loss("adaptive_triplet", margin=0.2, gamma=0.0, reduction="non_zero")
    reference = build_loss("triplet", margin=0.2, mining="all")
    rows = []
    for b in args.batch:
        embeddings = torch.randn(b, args.dim)
        labels = torch.randint(0, max(2, b // 4), (b,))
        v_ours, t_ours, m_ours = measure(ours, embeddings, labels, args.repeats)
        v_ref, t_ref, m_ref = measure(reference, embeddings, labels, args.repeats)
        if abs(v_ours - v_ref) > 1e-5 * max(1.0, abs(v_ref)):
            raise SystemExit(f"B={b}: the losses disagree: {v_ours} vs {v_ref}")
        rows.append({"batch": b, "ours_s": t_ours, "reference_s": t_ref, "speedup": t_ref / t_ours,
                     "ours_largest_tensor": m_ours, "reference_largest_tensor": m_ref,
                     "memory_ratio": m_ref / m_ours})
        print(f"B={b}: adaptive_triplet {1e3 * t_ours:.1f} ms, triplet(all) {1e3 * t_ref:.1f} ms "
              f"-> {t_ref / t_ours:.2f}x; largest tensor {m_ours:,} vs {m_ref:,} elements")
    write_json_atomic(args.out, {"machine": platform.processor() or platform.machine(),
                                 "threads": torch.get_num_threads(), "dim": args.dim, "rows": rows})


if __name__ == "__main__":
    main()
