"""Each loss against a value worked out by hand on 3-4 samples.

Pair losses use four samples, labels [0, 0, 1, 1], whose pairwise cosines s_ij are chosen so
that the euclidean distances of the normalized embeddings, d = sqrt(2 − 2 s), are round:

    pair    s       d      kind
    0-1    0.68    0.8     positive
    2-3    0.50    1.0     positive
    0-2    0.595   0.9     negative
    0-3   -0.28    1.6     negative
    1-2    0.82    0.6     negative
    1-3    0.395   1.1     negative

The embeddings are the Cholesky rows of this Gram matrix scaled to lengths 1, 2, 0.5, 3 (the
losses normalize them).
"""

from __future__ import annotations

import math

import pytest
import torch

from .helpers import embeddings_from_gram, make_loss

GRAM = [
    [1.0, 0.68, 0.595, -0.28],
    [0.68, 1.0, 0.82, 0.395],
    [0.595, 0.82, 1.0, 0.5],
    [-0.28, 0.395, 0.5, 1.0],
]
EMBEDDINGS = embeddings_from_gram(GRAM, [1.0, 2.0, 0.5, 3.0])
LABELS = torch.tensor([0, 0, 1, 1])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_contrastive_by_hand() -> None:
    # positives relu(d − 0): 0.8, 1.0 (each twice, as (i,j) and (j,i)) -> mean 0.9
    # negatives relu(1 − d): 0.1, 0, 0.4, 0 -> mean over the non-zero ones (0.1 + 0.4)/2 = 0.25
    loss = make_loss("contrastive", 2, 4)
    assert loss(EMBEDDINGS, LABELS).item() == pytest.approx(1.15, abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # all, margin 0.2: per anchor (positive, negative) -> d_ap − d_an + 0.2
        #   a0 (1, 2): 0.8 − 0.9 + 0.2 = 0.1   a0 (1, 3): 0.8 − 1.6 + 0.2 < 0
        #   a1 (0, 2): 0.8 − 0.6 + 0.2 = 0.4   a1 (0, 3): 0.8 − 1.1 + 0.2 < 0
        #   a2 (3, 0): 1.0 − 0.9 + 0.2 = 0.3   a2 (3, 1): 1.0 − 0.6 + 0.2 = 0.6
        #   a3 (2, 0): 1.0 − 1.6 + 0.2 < 0     a3 (2, 1): 1.0 − 1.1 + 0.2 = 0.1
        #   mean over the 5 positive ones: 1.5 / 5 = 0.3
        ({"mining": "all"}, 0.3),
        # semihard keeps d_ap < d_an < d_ap + 0.2: a0 (1, 2) [0.8<0.9<1.0] and a3 (2, 1)
        # [1.0<1.1<1.2], both 0.1 -> 0.1
        ({"mining": "semihard"}, 0.1),
        # hard: farthest positive, nearest negative per anchor:
        #   a0 0.8 − 0.9, a1 0.8 − 0.6, a2 1.0 − 0.6, a3 1.0 − 1.1, each + 0.2
        #   -> 0.1, 0.4, 0.6, 0.1 -> mean 0.3
        ({"mining": "hard"}, 0.3),
        # hard with margin 0.05: 0 (−0.05), 0.25, 0.45, 0 (−0.05) -> 0.7 / 4 = 0.175 (zero-loss
        # anchors count in the mean)
        ({"mining": "hard", "margin": 0.05}, 0.175),
    ],
)
def test_triplet_by_hand(kwargs: dict, expected: float) -> None:
    loss = make_loss("triplet", 2, 4, **kwargs)
    assert loss(EMBEDDINGS, LABELS).item() == pytest.approx(expected, abs=1e-9)


def test_multi_similarity_by_hand() -> None:
    # alpha=2, beta=50, base=0.5, epsilon=0.1.
    # a0: P {0.68}, N {0.595, −0.28}; keep N > 0.68 − 0.1 = 0.58 -> {0.595};
    #     keep P < 0.595 + 0.1 -> {0.68}
    #     L0 = ½ log(1 + e^{−2·0.18}) + 1/50 log(1 + e^{50·0.095})
    #        = ½ log(1 + e^{−0.36}) + 1/50 log(1 + e^{4.75}) ≈ 0.264630 + 0.095172 ≈ 0.359803
    # a1: P {0.68}, N {0.82, 0.395}; keep N > 0.58 -> {0.82}; keep P < 0.92 -> {0.68}
    #     L1 = ½ log(1 + e^{−0.36}) + 1/50 log(1 + e^{16}) ≈ 0.264630 + 0.320000 ≈ 0.584630
    # a2: P {0.5}, N {0.595, 0.82}; keep N > 0.4 -> both; keep P < 0.92 -> {0.5}
    #     L2 = ½ log(1 + e^0) + 1/50 log(1 + e^{4.75} + e^{16}) ≈ 0.346574 + 0.320000 ≈ 0.666574
    # a3: P {0.5}, N {−0.28, 0.395}; keep N > 0.4 -> none: anchor skipped, L3 = 0
    # L = (L0 + L1 + L2 + L3) / 4 ≈ 1.611007 / 4 ≈ 0.402752
    half_pos = 0.5 * math.log(1 + math.exp(-0.36))
    l0 = half_pos + math.log(1 + math.exp(4.75)) / 50
    l1 = half_pos + math.log(1 + math.exp(16)) / 50
    l2 = 0.5 * math.log(2) + math.log(1 + math.exp(4.75) + math.exp(16)) / 50
    expected = (l0 + l1 + l2) / 4
    assert expected == pytest.approx(0.402752, abs=1e-6)
    loss = make_loss("multi_similarity", 2, 4)
    assert loss(EMBEDDINGS, LABELS).item() == pytest.approx(expected, abs=1e-9)


def test_binomial_deviance_by_hand() -> None:
    # alpha=2, beta=0.5, C_n=25 (alpha·C_n = 50).
    # P: softplus(−2(0.68 − 0.5)) = softplus(−0.36) ≈ 0.529260, softplus(0) = log 2 ≈ 0.693147
    #    mean ≈ 0.611204
    # N: softplus(50·0.095) = softplus(4.75) ≈ 4.758614, softplus(50·(−0.78)) = softplus(−39) ≈ 0,
    #    softplus(50·0.32) = softplus(16) ≈ 16.000000, softplus(50·(−0.105)) = softplus(−5.25)
    #    ≈ 0.005234; mean ≈ 5.190962
    # L ≈ 5.802166
    expected = (_softplus(-0.36) + math.log(2)) / 2 + (
        _softplus(4.75) + _softplus(-39) + _softplus(16) + _softplus(-5.25)
    ) / 4
    assert expected == pytest.approx(5.802166, abs=1e-6)
    loss = make_loss("binomial_deviance", 2, 4)
    assert loss(EMBEDDINGS, LABELS).item() == pytest.approx(expected, abs=1e-9)


# Proxy losses: two classes with proxies p0 = (1, 0), p1 = (0, 1) (stored unnormalized), and
# three samples x0 = (1, 0) [class 0], x1 = (0.6, 0.8) [class 0], x2 = (0.8, 0.6) [class 1],
# so the sample-proxy cosines are x0: (1, 0), x1: (0.6, 0.8), x2: (0.8, 0.6).
PROXY_EMBEDDINGS = torch.tensor([[2.0, 0.0], [0.6, 0.8], [4.0, 3.0]], dtype=torch.float64)
PROXY_LABELS = torch.tensor([0, 0, 1])
PROXIES = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=torch.float64)


def _with_proxies(name: str, **kwargs: float) -> torch.nn.Module:
    loss = make_loss(name, 2, 2, **kwargs).double()
    with torch.no_grad():
        loss.proxies.copy_(PROXIES)
    return loss


def test_proxy_anchor_by_hand() -> None:
    # alpha=32, margin=0.1. Both proxies have a sample in the batch (|P+| = 2), C = 2.
    # p0: positives x0 (1), x1 (0.6): log(1 + e^{−32·0.9} + e^{−32·0.5})
    #                                  = log(1 + e^{−28.8} + e^{−16})
    #     negatives x2 (0.8):          log(1 + e^{32·0.9}) = log(1 + e^{28.8})
    # p1: positives x2 (0.6):          log(1 + e^{−32·0.5}) = log(1 + e^{−16})
    #     negatives x0 (0), x1 (0.8):  log(1 + e^{32·0.1} + e^{32·0.9})
    #                                  = log(1 + e^{3.2} + e^{28.8})
    # L = (pos p0 + pos p1)/2 + (neg p0 + neg p1)/2 ≈ (1.1e−7 + 1.1e−7)/2 + (28.8 + 28.8)/2 ≈ 28.8
    pos = math.log(1 + math.exp(-28.8) + math.exp(-16)) + math.log(1 + math.exp(-16))
    neg = math.log(1 + math.exp(28.8)) + math.log(1 + math.exp(3.2) + math.exp(28.8))
    expected = pos / 2 + neg / 2
    assert expected == pytest.approx(28.8, abs=1e-4)
    loss = _with_proxies("proxy_anchor")
    assert loss(PROXY_EMBEDDINGS, PROXY_LABELS).item() == pytest.approx(expected, abs=1e-9)


def test_normalized_softmax_by_hand() -> None:
    # temperature 0.05 -> logits = 20·cos: x0 (20, 0), x1 (12, 16), x2 (16, 12)
    # CE: x0 log(1 + e^{−20}), x1 (class 0) log(1 + e^{4}), x2 (class 1) log(1 + e^{4})
    # mean ≈ (2.1e−9 + 4.018150 + 4.018150)/3 ≈ 2.678767
    expected = (math.log1p(math.exp(-20)) + 2 * math.log1p(math.exp(4))) / 3
    assert expected == pytest.approx(2.678767, abs=1e-6)
    loss = _with_proxies("normalized_softmax")
    assert loss(PROXY_EMBEDDINGS, PROXY_LABELS).item() == pytest.approx(expected, abs=1e-9)


def test_cosface_by_hand() -> None:
    # scale 32, margin 0.35: true-class logit 32(cos − 0.35), others 32·cos
    # x0: (32·0.65, 0) = (20.8, 0)      CE = log(1 + e^{−20.8})
    # x1: (32·0.25, 32·0.8) = (8, 25.6)  CE = log(1 + e^{17.6})
    # x2: (32·0.8, 32·0.25) = (25.6, 8)  CE = log(1 + e^{17.6})   (class 1)
    # mean ≈ (9.2e−10 + 17.600000 + 17.600000)/3 ≈ 11.733333
    expected = (math.log1p(math.exp(-20.8)) + 2 * math.log1p(math.exp(17.6))) / 3
    assert expected == pytest.approx(11.733333, abs=1e-6)
    loss = _with_proxies("cosface")
    assert loss(PROXY_EMBEDDINGS, PROXY_LABELS).item() == pytest.approx(expected, abs=1e-9)
