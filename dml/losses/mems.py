"""MEMS: the Multiplicative Euclidean Margin Softmax of the DASE + MEMS sketch-based image
retrieval paper (METHODS.md §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses.base import LOSSES, ProxyLoss, check_positive
from dml.losses.warmup import warmup_fraction

__all__ = ["MemsLoss", "margin_at"]


def margin_at(progress: float, margin: float, ramp: float) -> float:
    """The margin ``m_t`` at training ``progress`` in [0, 1]: 1 at the start, rising linearly
    to ``margin`` over the first ``ramp`` of training, then ``margin`` (``ramp`` 0: at once)."""
    if ramp <= 0:
        return margin
    return 1.0 + (margin - 1.0) * warmup_fraction(progress, ramp)


@LOSSES.register("mems")
class MemsLoss(ProxyLoss):
    """Cross-entropy over negative squared euclidean distances to learnable class centres,
    the true class's distance multiplied by ``m_t²``::

        logit_ij = −‖f_i − c_j‖² (j ≠ y_i),   logit_iy = −m_t² · ‖f_i − c_y‖²,   L = mean_i CE

    on the raw (unnormalized) embeddings ``f``: the geometry is the euclidean one that
    retrieval ranks by. ``m_t`` rises linearly from 1 to ``margin`` over the first ``ramp``
    (0.5) of training, read from the batch's progress; a bare call uses the full ``margin``.
    ``margin: 1`` is the plain euclidean softmax. Centres (``self.proxies``) start as
    L2-normalized standard-normal rows, as the authors' code initialises them.
    """

    def __init__(self, num_classes: int, embed_dim: int, margin: float = 2.0, ramp: float = 0.5) -> None:
        if not margin >= 1:
            raise ConfigError(f"loss.margin must be >= 1 (1: the plain euclidean softmax), got {margin!r}")
        check_positive("ramp", ramp, allow_zero=True)
        if ramp > 1:
            raise ConfigError(f"loss.ramp is a fraction of training in [0, 1], got {ramp!r}")
        super().__init__(num_classes, embed_dim)
        self.margin = float(margin)
        self.ramp = float(ramp)
        self._current = self.margin

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.proxies.copy_(F.normalize(torch.randn_like(self.proxies), dim=1))

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The loss at the batch's training progress (its ``m_t``)."""
        self._current = margin_at(batch.progress, self.margin, self.ramp)
        try:
            return super().forward_batch(output, batch)
        finally:
            self._current = self.margin

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        assert labels is not None
        centres = self.proxies.to(torch.promote_types(embeddings.dtype, self.proxies.dtype))
        embeddings = embeddings.to(centres.dtype)
        squared = (embeddings.pow(2).sum(1, keepdim=True) - 2 * embeddings @ centres.T
                   + centres.pow(2).sum(1)[None, :]).clamp_min(0)
        scale = torch.ones_like(squared).scatter(1, labels.long()[:, None], self._current ** 2)
        self.log_term("margin", torch.tensor(self._current))
        return F.cross_entropy(-scale * squared, labels.long())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, ramp={self.ramp}"
