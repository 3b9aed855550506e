"""Energy confusion over any loss: ECAML (METHODS.md §4).

``L = L_base + λ · log E + ρ/D · Σ_r (‖W_r‖² − 1)²``, where ``z = W h + b`` is the model's
embedding layer applied again to the trunk features ``h`` *detached*, and

``E = Σ_i Σ_{j ∈ S_i} (1 / w_ij) · ½ ‖z_i − z_j‖²``

over ``r`` random partners ``S_i`` of each anchor ``i``; ``w_ij`` is the number of pairs of
the kind of (i, j) (same class, or not) among all pairs of the batch. Minimising ``log E``
pulls the sampled pairs (mostly of different classes) together: it "confuses" what the base
loss separates, a regularizer against overfitting the seen classes.

What the authors' Caffe code does, and this module with it:

- the adversarial game is plain summation: one backward pass, the two losses' gradients
  added on the shared embedding layer (W, b); no alternating updates, no gradient reversal.
  Its one asymmetry is that the confusion branch re-applies the layer to the trunk features
  with ``propagate_down: 0``, so the trunk learns from the base loss alone and only the
  layer receives the confusion gradient (W alone, in fact: b cancels out of ``z_i − z_j``);
- the energy is on the raw embedding (before any normalization), so ``log E`` alone would be
  lowered by shrinking W. The code's confusion branch therefore adds, with its shared
  layer's gradient, the row-norm penalty ``ρ/D · Σ_r (‖W_r‖² − 1)²`` (ρ = 0.5, D the
  embedding size; not scaled by λ) that holds each output row of W near unit length:
  ``row_norm`` here, 0 for the bare METHODS.md formula;
- there, partners are drawn for the first ``B − 2r`` anchors from rows ``i + 2`` onwards (its
  batches list two images per class in consecutive rows); here every anchor draws ``r``
  distinct partners among all other rows, since the samplers here do not order a batch by
  class.

Partners depend only on ``seed`` and the batch's global step: every rank of a data-parallel
run draws the same ones for the gathered global batch, and a re-run draws them again.
``weight = 0`` is the base loss exactly (the confusion branch, penalty included, is off).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses.base import LOSSES, MetricLoss, WrapperLoss, check_positive, zero_loss

__all__ = ["EnergyConfusionLoss", "random_partners"]

#: Where a seed's partner draws start, so that steps of different seeds do not coincide.
_SEED_STRIDE = 1_000_003
#: Energies at or below this are read as this (log 0 would be -inf: all partners identical).
_MIN_ENERGY = 1e-12


def random_partners(batch_size: int, partners: int, generator: torch.Generator) -> Tensor:
    """``int64 [B, min(r, B-1)]``: for each anchor, distinct random partners among the other
    rows (uniform, without replacement), from ``generator`` alone."""
    keys = torch.rand(batch_size, batch_size, generator=generator, dtype=torch.float64)
    keys.fill_diagonal_(2.0)  # above every draw in [0, 1): never chosen
    return keys.topk(min(partners, batch_size - 1), dim=1, largest=False).indices


@LOSSES.register("energy_confusion")
class EnergyConfusionLoss(WrapperLoss):
    """``L_base + weight · log E + row_norm / D · Σ_r (‖W_r‖² − 1)²`` (see the module doc).

    Knobs: ``weight`` (λ, 0.13 in the paper), ``partners`` (r, 10), ``row_norm`` (ρ, 0.5),
    ``seed``. The model's embedding layer ``embedding_head`` is filled in from the build
    context. Logged terms: ``base``, ``energy_confusion`` (log E) and ``row_norm``.
    """

    term_name = "energy_confusion"

    def __init__(self, base: MetricLoss, weight: float = 0.13, partners: int = 10,
                 row_norm: float = 0.5, seed: int = 0, embedding_head: nn.Module | None = None) -> None:
        super().__init__(base, weight)
        if isinstance(partners, bool) or not isinstance(partners, int) or partners < 1:
            raise ConfigError(f"loss.partners must be a positive integer, got {partners!r}")
        check_positive("row_norm", row_norm, allow_zero=True)
        if embedding_head is not None and not isinstance(embedding_head, nn.Linear):
            raise ConfigError("loss 'energy_confusion' trains the embedding layer W h + b: the "
                              "model needs one (model.embed_dim), not "
                              f"{type(embedding_head).__name__}")
        self.partners = partners
        self.row_norm = float(row_norm)
        self.seed = int(seed)
        # The model's own layer, not a submodule of the loss: its parameters stay the model's
        # (one optimizer group, one state-dict entry); the loss only applies it again.
        self.__dict__["embedding_head"] = embedding_head

    def _layer(self, output: ModelOutput) -> nn.Linear:
        layer = self.__dict__["embedding_head"]
        if layer is None:
            raise ValueError("loss 'energy_confusion' needs the model's embedding layer; build "
                             "it with the model (dml.train.loop.build_learner)")
        if output.features.dim() != 2 or output.features.shape[1] != layer.in_features:
            raise ValueError(
                f"loss 'energy_confusion' applies the embedding layer ({layer.in_features} -> "
                f"{layer.out_features}) to the trunk features, got features "
                f"{tuple(output.features.shape)}: call it with the model's output (forward_batch)")
        return layer

    def energy(self, z: Tensor, labels: Tensor, step: int) -> Tensor:
        """``E`` of the module doc on embeddings ``z [B, D]`` with class ids ``labels [B]``,
        partners drawn for global step ``step``.

        Computed as ``½ Σ_ij C_ij ‖z_i − z_j‖²`` with ``C_ij = 1 / w_ij`` where j is a partner
        of i (0 elsewhere), the squared distances from the Gram matrix: matrix products,
        whose gradient is the same on every run (a gather's scattered backward is not).
        """
        size = z.shape[0]
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + int(step))
        partner = random_partners(size, self.partners, generator).to(z.device)
        same = labels[:, None] == labels[None, :]
        positives = (same.sum() - size) / 2  # unordered pairs of the batch, by kind
        negatives = size * (size - 1) / 2 - positives
        kind_count = torch.where(same, positives, negatives).to(z.dtype)
        chosen = torch.zeros(size, size, dtype=z.dtype, device=z.device).scatter_(1, partner, 1.0)
        squared_norm = z.pow(2).sum(1)
        squared = (squared_norm[:, None] + squared_norm[None, :] - 2 * z @ z.T).clamp_min(0)
        return 0.5 * (chosen / kind_count * squared).sum()

    def term(self, output: ModelOutput, batch: Batch) -> Tensor:
        """``log E`` on the embedding layer applied to the detached trunk features."""
        layer = self._layer(output)
        labels = batch.require("labels", "loss 'energy_confusion'")
        z = layer(output.features.detach().to(layer.weight.dtype))
        if z.shape[0] < 2:
            return zero_loss(z)
        return torch.log(self.energy(z, labels, batch.step).clamp_min(_MIN_ENERGY))

    def unweighted_term(self, output: ModelOutput, batch: Batch) -> Tensor | None:
        """The row-norm penalty ``row_norm / D · Σ_r (‖W_r‖² − 1)²`` on the embedding layer."""
        if not self.row_norm:
            return None
        weight = self._layer(output).weight
        penalty = self.row_norm / weight.shape[0] * ((weight.pow(2).sum(1) - 1) ** 2).sum()
        self.log_term("row_norm", penalty)
        return penalty

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, partners={self.partners}, row_norm={self.row_norm}, seed={self.seed}"
