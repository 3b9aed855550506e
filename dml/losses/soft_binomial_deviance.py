"""SGML's soft-binomial deviance with its attribute task (METHODS.md §1).

Negatives that share attributes with the anchor carry less information as "far apart"
examples: each negative pair is weighted by ``w_ij = (1 − g_ij)^kappa`` and may sit closer by
``delta · g_ij``, where ``g_ij`` is the semantic granularity similarity of the two samples'
attribute vectors (:func:`dml.similarity.attribute_similarity`)::

    L_SBD = 1/|P| Σ_P softplus(−α (s_ij − β))
          + 1/Σ_N w_ij · Σ_N w_ij · softplus(α · C_n · (s_ij − β − δ · g_ij))
    L     = L_SBD + λ_attr · BCE(attribute logits, attributes)      (known entries only)

Knobs (params.yaml ``loss.*``): ``alpha`` α, ``beta`` β, ``neg_weight`` C_n, ``kappa`` κ,
``delta`` δ, ``attribute_weight`` λ_attr, ``granularity`` (where g comes from) and
``warmup_epochs``. With κ = δ = λ_attr = 0 the loss is exactly binomial deviance.

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
    at_least_float32,
    check_positive,
    cosine_matrix,
    masked_binary_cross_entropy,
    masked_mean,
    pair_masks,
    weighted_mean,
)
from dml.losses.binomial_deviance import BinomialDevianceLoss
from dml.similarity import attribute_similarity

__all__ = ["GRANULARITY_SOURCES", "SoftBinomialDevianceLoss", "granularity_weights"]

#: Where g_ij comes from: the rows' attribute labels, or the attribute head's predictions
#: (probabilities, or thresholded at 0.5).
GRANULARITY_SOURCES = ("ground_truth", "predicted", "predicted_labels")
ATTRIBUTE_HEAD = "attributes"


def granularity_weights(granularity: Tensor, kappa: float) -> Tensor:
    """Per-pair weights ``w_ij = (1 − g_ij)^kappa`` in [0, 1]; all 1 at ``kappa = 0``."""
    return torch.pow((1.0 - granularity).clamp(0.0, 1.0), kappa)


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
                 granularity: str = "predicted", warmup_epochs: int = 2) -> None:
        super().__init__(alpha=alpha, beta=beta, neg_weight=neg_weight)
        for name, value in (("kappa", kappa), ("delta", delta), ("attribute_weight", attribute_weight)):
            check_positive(name, value, allow_zero=True)
        if granularity not in GRANULARITY_SOURCES:
            raise ConfigError(f"loss.granularity: {granularity!r} is not one of: "
                              f"{', '.join(GRANULARITY_SOURCES)}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ConfigError(f"loss.warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.kappa = float(kappa)
        self.delta = float(delta)
        self.attribute_weight = float(attribute_weight)
        self.granularity = granularity
        self.warmup_epochs = warmup_epochs

    # -- the training path --------------------------------------------------------------

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """Deviance with ``g`` from the batch, plus ``λ_attr`` times the attribute BCE."""
        labels = batch.require("labels", self.who)
        g = self.batch_granularity(output, batch) if self.kappa or self.delta else None
        deviance = self(output.embeddings, labels, granularity=g)
        self.log_term("deviance", deviance)
        if g is not None:  # how much the negatives share: what the weights act on
            self.log_term("negative_granularity", masked_mean(g, labels[:, None] != labels[None, :]))
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
        return self.full_precision(self.soft_deviance, embeddings, similarity, granularity)

    def soft_deviance(self, embeddings: Tensor, similarity: Tensor, granularity: Tensor | None) -> Tensor:
        """L_SBD; binomial deviance where ``granularity`` is None."""
        s = cosine_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        shift = self.delta * granularity if granularity is not None and self.delta else None
        penalty = self.negative_penalty(s, shift)
        if granularity is None or not self.kappa:
            negative = masked_mean(penalty, neg)
        else:
            negative = weighted_mean(penalty, neg, granularity_weights(granularity, self.kappa))
        return self.positive_term(s, pos) + negative

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, kappa={self.kappa}, delta={self.delta}, "
                f"attribute_weight={self.attribute_weight}, granularity={self.granularity}, "
                f"warmup_epochs={self.warmup_epochs}")
