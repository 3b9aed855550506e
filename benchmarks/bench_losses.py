"""Forward + backward time of each loss against pytorch-metric-learning's implementation of it,
measured in one run on the same embeddings and labels.

Command (from the repository root; the peer library comes with the ``bench`` extra, which
neither the library nor the tests need)::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench_losses.py --batch 512 --dim 128 --classes 64 \\
        --out benchmarks/results/losses.json

Each pair is configured alike (margins, scales, mining) so that both do the same work; where
both define the loss the same way (triplet over all triplets, contrastive with the
average-over-non-zero reduction) the script also checks the values agree. Proxy losses start
from different random proxies, so only their times compare. Time: the median of
``--repeats`` passes after a warm-up, on ``torch.get_num_threads()`` threads; the ratio is
ours / theirs (below 1: faster).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dml.context import BuildContext  # noqa: E402
from dml.io import write_json_atomic  # noqa: E402
from dml.losses import build_loss  # noqa: E402


def peers(classes: int, dim: int) -> dict[str, tuple[dict, Callable, bool]]:
    """Loss name -> (our spec, a factory of the peer's loss, whether the values must agree)."""
    try:
        from pytorch_metric_learning import losses, miners
    except ImportError:
        raise SystemExit("pytorch-metric-learning is not installed: .venv/bin/pip install -e '.[bench]'") from None

    def with_miner(loss, miner):
        return lambda x, y: loss(x, y, miner(x, y))

    return {
        "triplet (all)": ({"name": "triplet", "margin": 0.2, "mining": "all"},
                          lambda: losses.TripletMarginLoss(margin=0.2), True),
        "triplet (semihard)": ({"name": "triplet", "margin": 0.2, "mining": "semihard"},
                               lambda: with_miner(losses.TripletMarginLoss(margin=0.2),
                                                  miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
                               False),
        "contrastive": ({"name": "contrastive", "pos_margin": 0.0, "neg_margin": 0.6},
                        lambda: losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.6), False),
        "multi_similarity": ({"name": "multi_similarity", "alpha": 2.0, "beta": 50.0, "base": 0.5,
                              "epsilon": 0.1},
                             lambda: with_miner(losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5),
                                                miners.MultiSimilarityMiner(epsilon=0.1)), False),
        "proxy_anchor": ({"name": "proxy_anchor", "margin": 0.1, "alpha": 32.0},
                         lambda: losses.ProxyAnchorLoss(classes, dim, margin=0.1, alpha=32), False),
        "normalized_softmax": ({"name": "normalized_softmax", "temperature": 0.05},
                               lambda: losses.NormalizedSoftmaxLoss(classes, dim, temperature=0.05), False),
        "cosface": ({"name": "cosface", "scale": 64.0, "margin": 0.35},
                    lambda: losses.CosFaceLoss(classes, dim, margin=0.35, scale=64), False),
    }


def step(loss: Callable, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    x = embeddings.detach().requires_grad_(True)
    value = loss(x, labels)
    value.backward()
    return float(value.detach())


def measure(loss: Callable, embeddings: torch.Tensor, labels: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(value, median seconds of one forward + backward pass)."""
    value = step(loss, embeddings, labels)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(loss, embeddings, labels)
        times.append(time.perf_counter() - start)
    return value, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/losses.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    embeddings = torch.randn(args.batch, args.dim)
    labels = torch.arange(args.batch) % args.classes
    context = BuildContext(num_classes=args.classes, embed_dim=args.dim)
    rows = []
    for name, (spec, peer, agree) in peers(args.classes, args.dim).items():
        ours = build_loss(spec, context=context)
        v_ours, t_ours = measure(ours, embeddings, labels, args.repeats)
        v_peer, t_peer = measure(peer(), embeddings, labels, args.repeats)
        if agree and abs(v_ours - v_peer) > 1e-4 * max(1.0, abs(v_peer)):
            raise SystemExit(f"{name}: the values disagree: ours {v_ours}, pytorch-metric-learning {v_peer}")
        rows.append({"loss": name, "ours_ms": 1e3 * t_ours, "peer_ms": 1e3 * t_peer,
                     "ratio": t_ours / t_peer, "ours_value": v_ours, "peer_value": v_peer})
        print(f"{name}: ours {1e3 * t_ours:.1f} ms, pytorch-metric-learning {1e3 * t_peer:.1f} ms "
              f"-> {t_ours / t_peer:.2f}x")
    write_json_atomic(args.out, {"machine": platform.processor() or platform.machine(),
                                 "threads": torch.get_num_threads(), "batch": args.batch,
                                 "dim": args.dim, "classes": args.classes, "rows": rows})


if __name__ == "__main__":
    main()
