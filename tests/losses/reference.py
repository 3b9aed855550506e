"""Slow loop-based reference implementations of every loss, for tests only.

Written independently of ``dml.losses``: plain Python floats (float64), explicit loops over
anchors, pairs and triplets, distances as ``‖x_i − x_j‖`` computed coordinate by coordinate.
Pairs come from a similarity matrix: positive where ``sim > 0``, negative where ``sim == 0``,
never ``i == j``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Matrix = list[list[float]]


def _rows(t: torch.Tensor) -> Matrix:
    return [[float(v) for v in row] for row in t.detach().to(torch.float64).cpu()]


def _normalize(rows: Matrix) -> Matrix:
    out = []
    for row in rows:
        norm = math.sqrt(sum(v * v for v in row))
        out.append([v / norm for v in row])
    return out


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _dist(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _pairs(sim: torch.Tensor) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    s = _rows(sim)
    n = len(s)
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and s[i][j] > 0]
    neg = [(i, j) for i in range(n) for j in range(n) if i != j and s[i][j] == 0]
    return pos, neg


def contrastive(
    emb: torch.Tensor, sim: torch.Tensor, pos_margin: float = 0.0, neg_margin: float = 1.0
) -> float:
    x = _normalize(_rows(emb))
    pos, neg = _pairs(sim)
    pos_losses = [max(0.0, _dist(x[i], x[j]) - pos_margin) for i, j in pos]
    neg_losses = [max(0.0, neg_margin - _dist(x[i], x[j])) for i, j in neg]
    total = 0.0
    for losses in (pos_losses, neg_losses):
        nonzero = [v for v in losses if v > 0]
        if nonzero:
            total += sum(nonzero) / len(nonzero)
    return total


def triplet(
    emb: torch.Tensor, sim: torch.Tensor, margin: float = 0.2, mining: str = "all"
) -> float:
    x = _normalize(_rows(emb))
    s = _rows(sim)
    n = len(x)
    d = [[_dist(x[i], x[j]) for j in range(n)] for i in range(n)]
    positives = [[p for p in range(n) if p != a and s[a][p] > 0] for a in range(n)]
    negatives = [[q for q in range(n) if q != a and s[a][q] == 0] for a in range(n)]
    if mining == "hard":
        losses = []
        for a in range(n):
            if positives[a] and negatives[a]:
                d_ap = max(d[a][p] for p in positives[a])
                d_an = min(d[a][q] for q in negatives[a])
                losses.append(max(0.0, d_ap - d_an + margin))
        return sum(losses) / len(losses) if losses else 0.0
    losses = []
    for a in range(n):
        for p in positives[a]:
            for q in negatives[a]:
                d_ap, d_an = d[a][p], d[a][q]
                if mining == "semihard" and not (d_ap < d_an < d_ap + margin):
                    continue
                loss = d_ap - d_an + margin
                if loss > 0:
                    losses.append(loss)
    return sum(losses) / len(losses) if losses else 0.0


def multi_similarity(
    emb: torch.Tensor,
    sim: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    epsilon: float = 0.1,
) -> float:
    """Transcribes the official research-ms-loss loop (anchors skipped unless both kinds kept)."""
    x = _normalize(_rows(emb))
    s = _rows(sim)
    n = len(x)
    total = 0.0
    for a in range(n):
        pos_s = [_dot(x[a], x[p]) for p in range(n) if p != a and s[a][p] > 0]
        neg_s = [_dot(x[a], x[q]) for q in range(n) if q != a and s[a][q] == 0]
        if not pos_s or not neg_s:
            continue
        kept_neg = [v for v in neg_s if v + epsilon > min(pos_s)]
        kept_pos = [v for v in pos_s if v - epsilon < max(neg_s)]
        if not kept_neg or not kept_pos:
            continue
        pos_loss = math.log(1 + sum(math.exp(-alpha * (v - base)) for v in kept_pos)) / alpha
        neg_loss = math.log(1 + sum(math.exp(beta * (v - base)) for v in kept_neg)) / beta
        total += pos_loss + neg_loss
    return total / n


def binomial_deviance(
    emb: torch.Tensor,
    sim: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 0.5,
    neg_weight: float = 25.0,
) -> float:
    x = _normalize(_rows(emb))
    pos, neg = _pairs(sim)
    total = 0.0
    if pos:
        total += sum(_softplus(-alpha * (_dot(x[i], x[j]) - beta)) for i, j in pos) / len(pos)
    if neg:
        total += sum(
            _softplus(alpha * neg_weight * (_dot(x[i], x[j]) - beta)) for i, j in neg
        ) / len(neg)
    return total


def proxy_anchor(
    emb: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    margin: float = 0.1,
    alpha: float = 32.0,
) -> float:
    x = _normalize(_rows(emb))
    p = _normalize(_rows(proxies))
    y = [int(v) for v in labels]
    num_classes = len(p)
    pos_sum, neg_sum, present = 0.0, 0.0, 0
    for c in range(num_classes):
        members = [i for i in range(len(x)) if y[i] == c]
        others = [i for i in range(len(x)) if y[i] != c]
        if members:
            present += 1
            pos_sum += math.log(
                1 + sum(math.exp(-alpha * (_dot(x[i], p[c]) - margin)) for i in members)
            )
        neg_sum += math.log(1 + sum(math.exp(alpha * (_dot(x[i], p[c]) + margin)) for i in others))
    return pos_sum / present + neg_sum / num_classes


def _cross_entropy(logits: Sequence[float], target: int) -> float:
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[target]


def normalized_softmax(
    emb: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, temperature: float = 0.05
) -> float:
    x = _normalize(_rows(emb))
    w = _normalize(_rows(proxies))
    losses = [
        _cross_entropy([_dot(xi, wc) / temperature for wc in w], int(y))
        for xi, y in zip(x, labels, strict=True)
    ]
    return sum(losses) / len(losses)


def cosface(
    emb: torch.Tensor,
    labels: torch.Tensor,
    proxies: torch.Tensor,
    scale: float = 32.0,
    margin: float = 0.35,
) -> float:
    x = _normalize(_rows(emb))
    w = _normalize(_rows(proxies))
    losses = []
    for xi, y in zip(x, labels, strict=True):
        logits = [
            scale * (_dot(xi, wc) - (margin if c == int(y) else 0.0)) for c, wc in enumerate(w)
        ]
        losses.append(_cross_entropy(logits, int(y)))
    return sum(losses) / len(losses)


def adaptive_triplet(
    emb: torch.Tensor, sim: torch.Tensor, margin: float = 0.1, gamma: float = 0.5,
    mining: str = "all", reduction: str = "mean", block_elements: int = 0,
) -> float:
    """Every (a, p, n) of distinct samples with S(a,p) > S(a,n), one at a time
    (``block_elements`` is the loss's memory bound, nothing to compute here)."""
    x = _normalize(_rows(emb))
    s = _rows(sim)
    n = len(x)
    losses = []
    for a in range(n):
        for p in range(n):
            for q in range(n):
                if len({a, p, q}) < 3 or not s[a][p] > s[a][q]:
                    continue
                d_ap, d_an = _dist(x[a], x[p]), _dist(x[a], x[q])
                loss = d_ap - d_an + margin + gamma * (s[a][p] - s[a][q])
                if mining == "semihard" and not (d_an > d_ap and loss > 0):
                    continue
                losses.append(max(0.0, loss))
    if reduction == "non_zero" or mining == "semihard":
        losses = [v for v in losses if v > 0]
    return sum(losses) / len(losses) if losses else 0.0
