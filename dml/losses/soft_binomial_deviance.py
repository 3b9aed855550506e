"""SGML's soft-binomial deviance with its attribute task (METHODS.md §1).

Pairs are weighted by ``g_ij``, the semantic granularity similarity of the two samples'
attribute vectors (:func:`dml.label_similarity.attribute_similarity`), and a negative may sit
closer by ``delta · g_ij``::

    L_SBD = 1/Σ_P p_ij · Σ_P p_ij · softplus(−α (s_ij − β))
          + 1/Σ_N w_ij · Σ_N w_ij · softplus(α · C_n · (s_ij − β − δ · g_ij))
    L     = L_SBD + λ_attr · BCE(attribute logits, attributes)      (known entries only)

    w_ij = (1 − g_ij)^κ      κ ≥ 0: negatives that share attributes count less
         = (1 + g_ij)^|κ|    κ < 0: they count more (hard negatives that share a look)
    p_ij = (1 + g_ij)^κ_p    κ_p > 0: positives that share many attributes count more;
                             κ_p < 0: those that share few (hard positives) do

METHODS.md's reconstructed form is κ ≥ 0 with κ_p = 0 (a plain mean over P), the default.
Each knob is signed so that one search range (say −3 to 3) covers both directions; at 0 it
weighs every pair alike. The other directions use ``1 + g``: ``(1 − g)^κ`` with κ < 0 is
infinite at g = 1, and on positives it would zero every pair with g = 1 (all positives
when attributes follow the class). Near g = 0 both forms are ``exp(−κ g)``, so the weighting
moves smoothly from one direction to the other. The ``1 + g`` weights are divided by their
largest value over P (or N): the weighted mean is the same, and no power overflows.

Knobs (params.yaml ``loss.*``): ``alpha`` α, ``beta`` β, ``neg_weight`` C_n, ``kappa`` κ,
``pos_kappa`` κ_p, ``delta`` δ, ``attribute_weight`` λ_attr, ``granularity`` (where g comes
from) and ``warmup_epochs``. With κ = κ_p = δ = λ_attr = 0 the loss is exactly binomial
deviance. A mean whose weights are all 0 (κ > 0 and every negative has g = 1) is 0.

Where g comes from (``granularity``):

- ``ground_truth``: the rows' attribute labels, over the attributes known for both rows;
- ``predicted``: the attribute head's predicted probabilities, detached: the "on the fly"
  link between the two tasks (METHODS.md's form);
- ``predicted_labels``: those predictions thresholded at 0.5. Probabilities are never exactly
  0, so the cosine of two probability vectors crowds towards 1 for every pair (on the
  embedded data the mean g of the negatives goes from about 0.45 on the labels to above 0.8);
  binary predictions keep the spread of the labels.

With a predicted source, the first ``warmup_epochs`` epochs use the ground truth, while the
head is still learning.

The attribute BCE trains the ``attributes`` head (``model.heads: {attributes: {}}``) on the
known entries of the global batch; unknown entries are masked out, never read as 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses.base import (
    LOSSES,
    check_finite,
    check_positive,
    cosine_matrix,
    masked_binary_cross_entropy,
    masked_mean,
    pair_masks,
    weighted_mean,
)
from dml.losses.binomial_deviance import BinomialDevianceLoss
from dml.label_similarity import attribute_similarity
from dml.precision import at_least_float32, outside_autocast

__all__ = ["GRANULARITY_SOURCES", "SoftBinomialDevianceLoss", "granularity_weights", "relative_weights"]

#: Where g_ij comes from: the rows' attribute labels, or the attribute head's predictions
#: (probabilities, or thresholded at 0.5).
GRANULARITY_SOURCES = ("ground_truth", "predicted", "predicted_labels")
ATTRIBUTE_HEAD = "attributes"


def granularity_weights(granularity: Tensor, kappa: float, mask: Tensor | None = None) -> Tensor:
    """Weights of the negative pairs: ``(1 − g_ij)^kappa`` in [0, 1] for ``kappa >= 0`` (all 1
    at 0), else ``(1 + g_ij)^|kappa|`` relative to the heaviest pair of ``mask`` (None: all)."""
    if kappa >= 0:
        return torch.pow((1.0 - granularity).clamp(0.0, 1.0), kappa)
    return relative_weights(granularity, -kappa, mask)


def relative_weights(granularity: Tensor, power: float, mask: Tensor | None = None) -> Tensor:
    """``(1 + g_ij)^power`` divided by its largest value over ``mask`` (None: all pairs).

    A weighted mean does not see the common factor; dividing by it puts every weight in
    (0, 1] with the heaviest pair of ``mask`` at exactly 1, so no power overflows and the
    weights of ``mask`` never all underflow to 0, whatever ``power``.
    """
    z = power * torch.log1p(granularity.clamp(0.0, 1.0))
    if mask is not None:  # pairs outside the mask must not set the scale
        z = torch.where(mask, z, z.min())
    return torch.exp(z - z.max())


@LOSSES.register("soft_binomial_deviance")
class SoftBinomialDevianceLoss(BinomialDevianceLoss):
    """See the module docstring.

    Called bare, ``loss(embeddings, labels, granularity=g)`` gives the deviance part for a
    given ``g`` (``[B, B]`` in [0, 1]; None: no pair shares an attribute, which is binomial
    deviance). Training calls :meth:`forward_batch`, which computes ``g`` from the batch and
    adds the attribute term.
    """

    who: ClassVar[str] = "loss soft_binomial_deviance"

    def __init__(self, alpha: float = 2.0, beta: float = 0.5, neg_weight: float = 25.0,
                 kappa: float = 1.0, delta: float = 0.1, attribute_weight: float = 1.0,
                 granularity: str = "predicted", warmup_epochs: int = 2,
                 pos_kappa: float = 0.0) -> None:
        super().__init__(alpha=alpha, beta=beta, neg_weight=neg_weight)
        for name, value in (("kappa", kappa), ("pos_kappa", pos_kappa)):
            check_finite(name, value)
        for name, value in (("delta", delta), ("attribute_weight", attribute_weight)):
            check_positive(name, value, allow_zero=True)
        if granularity not in GRANULARITY_SOURCES:
            raise ConfigError(f"loss.granularity: {granularity!r} is not one of: "
                              f"{', '.join(GRANULARITY_SOURCES)}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ConfigError(f"loss.warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.kappa = float(kappa)
        self.pos_kappa = float(pos_kappa)
        self.delta = float(delta)
        self.attribute_weight = float(attribute_weight)
        self.granularity = granularity
        self.warmup_epochs = warmup_epochs

    # -- the training path --------------------------------------------------------------

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """Deviance with ``g`` from the batch, plus ``λ_attr`` times the attribute BCE."""
        labels = batch.require("labels", self.who)
        weighted = self.kappa or self.pos_kappa or self.delta
        g = self.batch_granularity(output, batch) if weighted else None
        deviance = self(output.embeddings, labels, granularity=g)
        self.log_term("deviance", deviance)
        if g is not None:  # how much the pairs share: what the weights act on
            same = labels[:, None] == labels[None, :]
            self.log_term("negative_granularity", masked_mean(g, ~same))
            if self.pos_kappa:
                self.log_term("positive_granularity", masked_mean(g, same.fill_diagonal_(False)))
        if not self.attribute_weight:
            return deviance
        bce = masked_binary_cross_entropy(output.head(ATTRIBUTE_HEAD, self.who),
                                          batch.require("attributes", self.who), batch.attribute_mask)
        self.log_term("attribute_bce", bce)
        return deviance + self.attribute_weight * bce

    def batch_granularity(self, output: ModelOutput, batch: Batch) -> Tensor:
        """``g [B, B]`` of the (global) batch: from the attribute head's detached predictions
        once the warm-up is over (a ``predicted`` source), else from the rows' labels."""
        if self.granularity != "ground_truth" and batch.epoch >= self.warmup_epochs:
            logits = at_least_float32(output.head(ATTRIBUTE_HEAD, self.who).detach())
            if self.granularity == "predicted_labels":
                return attribute_similarity((logits > 0).to(logits.dtype))
            return attribute_similarity(torch.sigmoid(logits))
        attributes = batch.require("attributes", self.who)
        return attribute_similarity(attributes.to(output.embeddings.dtype), batch.attribute_mask)

    # -- the deviance --------------------------------------------------------------------

    def forward(self, embeddings: Tensor, labels: Tensor | None = None, *,
                similarity: Tensor | None = None, granularity: Tensor | None = None) -> Tensor:
        """The soft-binomial deviance of a batch for a given ``granularity`` ``g [B, B]``."""
        embeddings, labels, similarity = self.prepare(embeddings, labels, similarity)
        if granularity is not None:
            granularity = self.pair_matrix("granularity", granularity, embeddings)
        return outside_autocast(self.soft_deviance, embeddings, similarity, granularity)

    def soft_deviance(self, embeddings: Tensor, similarity: Tensor, granularity: Tensor | None) -> Tensor:
        """L_SBD; binomial deviance where ``granularity`` is None."""
        s = cosine_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        if granularity is None or not self.pos_kappa:
            positive = self.positive_term(s, pos)
        else:
            positive = weighted_mean(self.positive_penalty(s), pos,
                                     relative_weights(granularity, self.pos_kappa, pos))
        shift = self.delta * granularity if granularity is not None and self.delta else None
        penalty = self.negative_penalty(s, shift)
        if granularity is None or not self.kappa:
            negative = masked_mean(penalty, neg)
        else:
            negative = weighted_mean(penalty, neg, granularity_weights(granularity, self.kappa, neg))
        return positive + negative

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, kappa={self.kappa}, pos_kappa={self.pos_kappa}, "
                f"delta={self.delta}, attribute_weight={self.attribute_weight}, "
                f"granularity={self.granularity}, warmup_epochs={self.warmup_epochs}")
