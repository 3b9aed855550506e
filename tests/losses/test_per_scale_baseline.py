"""DyML's per-scale baseline (``csl`` with ``positive: scale``, METHODS.md §3): hand values, the
double sum written out, its reductions to the fine-only baseline and to CSL where they
coincide, gradients, the knob's errors and the experiment beside csl in params.yaml."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dml.losses.base import logged_terms
from dml.config import load_params
from dml.context import BuildContext
from dml.errors import ConfigError
from dml.losses import CosFaceLoss, CrossScaleLoss, build_loss

from .helpers import random_batch

REPO = Path(__file__).resolve().parents[2]
HIERARCHY = {"middle": (0, 0, 1, 1, 2), "coarse": (0, 0, 0, 0, 1)}
SCALES = {"fine": 5, "middle": 3, "coarse": 2}
MARGINS = {"fine": 0.25, "middle": 0.35, "coarse": 0.45}


def csl(positive: str, margins=MARGINS, scale: float = 32.0, hierarchy=HIERARCHY) -> CrossScaleLoss:
    torch.manual_seed(0)
    return CrossScaleLoss(5, 3, margins=margins, scale=scale, hierarchy=hierarchy, scale_classes=SCALES,
                          positive=positive).double()


def double_sum(embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, gamma: float,
               margins: dict, hierarchy: dict, positive: str) -> dict[str, float]:
    """Each scale's term, sample by sample in plain floats: the positive set P_k holds the fine
    classes of the sample's class at scale k (``scale``) or its own fine class alone (``fine``),
    the negative set N_k the fine classes outside its class at scale k, and
    ``L_k = mean_i log(1 + Σ_{p ∈ P_k} Σ_{n ∈ N_k} exp(γ (s_in − s_ip + m_k)))``
    (0 for a sample without negatives)."""
    num_classes = proxies.shape[0]
    cos = [[float(embeddings[i] @ proxies[c] / (embeddings[i].norm() * proxies[c].norm()))
            for c in range(num_classes)] for i in range(embeddings.shape[0])]
    terms = {}
    for name, margin in margins.items():
        parent = list(range(num_classes)) if name == "fine" else list(hierarchy[name])
        total = 0.0
        for i, y in enumerate(labels.tolist()):
            negatives = [c for c in range(num_classes) if parent[c] != parent[y]]
            positives = [c for c in range(num_classes) if parent[c] == parent[y]]
            if positive == "fine":
                positives = [y]
            inner = sum(math.exp(gamma * (cos[i][n] - cos[i][p] + margin))
                        for p in positives for n in negatives)
            total += math.log1p(inner) if negatives else 0.0
        terms[name] = total / len(labels)
    return terms


def test_by_hand() -> None:
    """Proxies (1,0), (0,1), (-1,0), (0,-1) (lengths 1, 3, 2, 1); fine classes 0, 1 form middle
    class 0 and 2, 3 middle class 1; gamma 2, margins 0.1 (fine), 0.2 (middle).
    x0 = (1,0) of class 0 has cosines [1, 0, -1, 0], x1 = (0,2) of class 1 [0, 1, 0, -1].

    fine, x0: P = {0} (s 1), N = {1, 2, 3} (0, -1, 0): log(1 + 2e^{2(0-1+.1)} + e^{2(-1-1+.1)});
    middle, x0: P = {0, 1} (1, 0), N = {2, 3} (-1, 0):
      log(1 + e^{2(-1-1+.2)} + e^{2(0-1+.2)} + e^{2(-1-0+.2)} + e^{2(0-0+.2)}); x1 mirrors x0."""
    loss = CrossScaleLoss(4, 2, margins={"fine": 0.1, "middle": 0.2}, scale=2.0,
                          hierarchy={"middle": (0, 0, 1, 1)}, scale_classes={"fine": 4, "middle": 2},
                          positive="scale").double()
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [0.0, -1.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    fine = math.log(1 + 2 * math.exp(-1.8) + math.exp(-3.8))
    middle = math.log(1 + math.exp(-3.6) + 2 * math.exp(-1.6) + math.exp(0.4))
    with logged_terms() as terms:
        assert loss(x, torch.tensor([0, 1])).item() == pytest.approx(fine + middle, abs=1e-12)
    assert terms == pytest.approx({"fine": fine, "middle": middle}, abs=1e-12)
    # CSL keeps the positive at the fine proxy: its middle term pairs the negatives with s = 1 only
    csl_middle = math.log(1 + math.exp(-3.6) + math.exp(-1.6))
    loss.positive = "fine"
    with logged_terms() as terms:
        loss(x, torch.tensor([0, 1]))
    assert terms == pytest.approx({"fine": fine, "middle": csl_middle}, abs=1e-12)


@pytest.mark.parametrize("positive", ["scale", "fine"])
def test_the_double_sum_written_out(positive: str) -> None:
    embeddings, labels = random_batch(11, 12, 5, dim=3)
    loss = csl(positive, scale=4.0)
    with logged_terms() as terms:
        value = loss(embeddings, labels)
    expected = double_sum(embeddings, labels, loss.proxies.detach(), 4.0, MARGINS, HIERARCHY, positive)
    assert terms == pytest.approx(expected, abs=1e-12)
    assert value.item() == pytest.approx(sum(expected.values()), abs=1e-12)


def test_the_fine_scale_alone_is_the_fine_only_baseline() -> None:
    """With only the fine scale named, the positive at scale k is the own fine proxy: the same
    value and gradients as csl's fine-only baseline (bit for bit) and as CosFace."""
    embeddings, labels = random_batch(12, 12, 5, dim=3)
    embeddings.requires_grad_(True)
    ours, fine_only = csl("scale", margins={"fine": 0.3}), csl("fine", margins={"fine": 0.3})
    cosface = CosFaceLoss(5, 3, scale=32.0, margin=0.3).double()
    with torch.no_grad():
        cosface.proxies.copy_(ours.proxies)
    a, b, c = ours(embeddings, labels), fine_only(embeddings, labels), cosface(embeddings, labels)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    grads = [torch.autograd.grad(v, (embeddings, loss.proxies)) for v, loss in ((a, ours), (b, fine_only))]
    for ga, gb in zip(*grads):
        assert torch.equal(ga, gb)


def test_it_is_csl_where_every_class_holds_one_fine_class() -> None:
    """A hierarchy whose middle classes hold one fine class each: P_k is the own fine class,
    so the two losses coincide at every scale."""
    one_each = {"middle": (2, 0, 1, 4, 3), "coarse": (0, 0, 0, 1, 1)}
    embeddings, labels = random_batch(13, 10, 5, dim=3)
    margins = {"fine": 0.25, "middle": 0.35}
    assert torch.equal(csl("scale", margins, hierarchy=one_each)(embeddings, labels),
                       csl("fine", margins, hierarchy=one_each)(embeddings, labels))
    # and per sample: fine class 4 is middle class 2 alone, so its middle terms agree
    only_4 = torch.full((6,), 4)
    middle = {"middle": 0.35}
    assert torch.equal(csl("scale", middle)(embeddings[:6], only_4), csl("fine", middle)(embeddings[:6], only_4))


def test_a_pooled_positive_costs_more_than_the_fine_one() -> None:
    """−logsumexp(−γ s) over a class's fine proxies is at most the own proxy's γ s, so each term
    of the per-scale baseline is at least CSL's, and larger where a class pools several."""
    embeddings, labels = random_batch(14, 16, 5, dim=3)
    scale, fine = csl("scale"), csl("fine")
    with logged_terms() as ours:
        scale(embeddings, labels)
    with logged_terms() as theirs:
        fine(embeddings, labels)
    assert ours["fine"] == theirs["fine"]
    assert ours["middle"] > theirs["middle"] and ours["coarse"] > theirs["coarse"]


def test_gradcheck_with_a_scale_without_negatives() -> None:
    """float64 gradients over three scales, the coarse one a single class (its term is 0)."""
    one_coarse = {"middle": (0, 0, 1, 1, 2), "coarse": (0, 0, 0, 0, 0)}
    loss = csl("scale", scale=4.0, hierarchy=one_coarse)
    embeddings, labels = random_batch(15, 7, 5, dim=3)
    proxies = loss.proxies.detach().clone().requires_grad_(True)
    embeddings.requires_grad_(True)

    def run(e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(loss, {"proxies": p}, (e, labels))

    assert torch.autograd.gradcheck(run, (embeddings, proxies))
    with logged_terms() as terms:
        loss(embeddings, labels)
    assert terms["coarse"] == 0.0


def test_built_from_the_data_context() -> None:
    context = BuildContext(num_classes=5, scale_classes=SCALES, hierarchy=HIERARCHY, embed_dim=3)
    loss = build_loss({"name": "csl", "positive": "scale", "scale": 32.0}, context=context)
    assert loss.positive == "scale" and loss.margins == MARGINS
    assert build_loss({"name": "csl"}, context=context).positive == "fine"  # CSL by default


@pytest.mark.parametrize("value", ["coarse", "Scale", None, 1])
def test_bad_positive_names_the_key(value) -> None:
    with pytest.raises(ConfigError, match=r"^experiments\.x\.loss\.positive: .* is not one of: fine, scale$"):
        build_loss({"name": "csl", "positive": value}, num_classes=2, embed_dim=2,
                   where="experiments.x.loss")


def test_the_experiment_is_csl_less_one_knob() -> None:
    """per_scale_proxy (params.yaml) runs csl's protocol, trunk, batch, sampler, budget and
    search with the positive at each scale, and csl is compared against it and fine_only."""
    params = load_params(REPO / "params.yaml")
    ours, theirs = params.experiment("per_scale_proxy"), params.experiment("csl")
    assert ours.loss.knobs() == {**theirs.loss.knobs(), "positive": "scale"}
    assert ours.loss.name == theirs.loss.name == "csl"
    fine_only = params.experiment("fine_only")
    for key in ("dataset", "protocol", "train", "model", "quantize"):
        assert getattr(ours, key) == getattr(theirs, key) == getattr(fine_only, key), key
    assert ours.search == theirs.search
    assert set(theirs.baselines) == {"fine_only", "per_scale_proxy"}
