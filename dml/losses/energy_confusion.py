"""Energy confusion over any loss: ECAML (METHODS.md §4).

``L = L_base + λ · log E + ρ/D · Σ_r (‖W_r‖² − 1)²``, where ``z = W h + b`` is the model's
embedding layer applied again to the trunk features ``h`` *detached*, and

``E = (1 / w) · Σ_{{i, j} ∈ S} ½ ‖z_i − z_j‖²``

over a random set ``S`` of unordered pairs of *different* classes: each anchor draws ``r``
partners among the rows of other classes, and ``w`` is the number of unordered
different-class pairs of the whole batch (drawn or not). Minimising ``log E`` pulls rows of
different classes together: it "confuses" what the base loss separates, a regularizer against
overfitting the seen classes.

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
- the weight: the code counts ``w_pos`` and ``w_neg`` over the unordered pairs ``i < j`` of
  the batch and divides each drawn pair by the count of its kind; its drawn pairs are all
  of different classes, so every one is divided by ``w_neg``, the ``w`` here;
- each unordered pair enters ``E`` at most once.

Where this module departs from that code:

- there, anchor ``i`` draws ``r`` partners among rows ``i + 2, …, B − 1`` and only the first
  ``B − 2r`` anchors draw: its batches list two images per class in consecutive rows, so
  rows from ``i + 2`` on are of other classes. The samplers here do not order a batch by
  class, so every anchor draws ``r`` partners, uniformly without replacement, among all rows
  of other classes, before or after it (all of them when it has fewer than ``r``); a pair
  drawn from both ends counts once. ``S`` holds up to ``B · r`` pairs against the code's
  ``(B − 2r) · r``: ``E`` is about that much larger, a shift of ``log E``, whose gradient
  ``∇E / E`` does not see a constant scale;
- a batch without a pair of different classes (one class, one row) has no energy: the term
  is exactly 0 with zero gradient (the code would divide by ``E = 0``). When every drawn pair
  has coinciding embeddings, ``E`` is read as ``1e-12``;
- the code shuffles with C's global random state; here partners depend only on ``seed`` and
  the batch's global step: every rank of a data-parallel run draws the same ones for the
  gathered global batch, and a re-run draws them again.

``weight = 0`` is the base loss exactly (the confusion branch, penalty included, is off).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.registry import Knob
from dml.losses.base import LOSSES, MetricLoss, WrapperLoss

__all__ = ["EnergyConfusionLoss", "random_partners"]

#: Where a seed's partner draws start, so that steps of different seeds do not coincide.
_SEED_STRIDE = 1_000_003
#: Energies at or below this are read as this (log 0 would be -inf: every drawn pair coincides).
_MIN_ENERGY = 1e-12


def random_partners(labels: Tensor, partners: int, generator: torch.Generator) -> Tensor:
    """``bool [B, B]``: ``[i, j]`` when row ``j`` is one of anchor ``i``'s partners.

    Each anchor draws ``partners`` rows uniformly without replacement among the rows of other
    classes (all of them when there are fewer): the rows with the smallest of i.i.d. uniform
    keys drawn from ``generator`` alone, so that the draw is the same on every device.
    """
    size = labels.shape[0]
    keys = torch.rand(size, size, generator=generator, dtype=torch.float64).to(labels.device)
    negative = labels[:, None] != labels[None, :]
    keys = keys.masked_fill(~negative, 2.0)  # above every draw in [0, 1): never a partner
    smallest = keys.topk(min(partners, max(size - 1, 0)), dim=1, largest=False)
    chosen = torch.zeros(size, size, dtype=torch.bool, device=labels.device)
    return chosen.scatter_(1, smallest.indices, smallest.values < 1.0)


@LOSSES.register("energy_confusion")
class EnergyConfusionLoss(WrapperLoss):
    """``L_base + weight · log E + row_norm / D · Σ_r (‖W_r‖² − 1)²`` (see the module doc).

    Knobs: ``weight`` (λ, 0.13 in the paper), ``partners`` (r, 10), ``row_norm`` (ρ, 0.5),
    ``seed``. The model's embedding layer ``embedding_head`` is filled in from the build
    context. Logged terms: ``base``, ``energy_confusion`` (log E) and ``row_norm``.
    """

    term_name = "energy_confusion"

    def __init__(self, base: MetricLoss, weight: Annotated[float, Knob(ge=0)] = 0.13, partners: int = 10,
                 row_norm: Annotated[float, Knob(ge=0)] = 0.5, seed: int = 0, embedding_head: nn.Module | None = None) -> None:
        super().__init__(base, weight)
        if isinstance(partners, bool) or not isinstance(partners, int) or partners < 1:
            raise ConfigError(f"loss.partners must be a positive integer, got {partners!r}")
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
                             "it with the model (dml.train.learner.build_learner)")
        if output.features.dim() != 2 or output.features.shape[1] != layer.in_features:
            raise ValueError(
                f"loss 'energy_confusion' applies the embedding layer ({layer.in_features} -> "
                f"{layer.out_features}) to the trunk features, got features "
                f"{tuple(output.features.shape)}: call it with the model's output (forward_batch)")
        return layer

    def draw(self, labels: Tensor, step: int) -> Tensor:
        """The partners of global step ``step`` (``random_partners`` of the module), from
        ``seed`` and ``step`` alone."""
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + int(step))
        return random_partners(labels, self.partners, generator)

    def energy(self, z: Tensor, labels: Tensor, step: int) -> Tensor:
        """``E`` of the module doc on embeddings ``z [B, D]`` with class ids ``labels [B]``,
        partners drawn for global step ``step``; 0 when the batch has no pair of different
        classes.

        Computed as ``¼ Σ_ij P_ij ‖z_i − z_j‖² / w`` with ``P`` the symmetric 0/1 matrix of
        the drawn unordered pairs (both ``[i, j]`` and ``[j, i]`` set, hence ¼ for ½), the
        squared distances from the Gram matrix: matrix products, whose gradient is the same on
        every run (a gather's scattered backward is not).
        """
        chosen = self.draw(labels, step)
        pairs = (chosen | chosen.T).to(z.dtype)
        negatives = (labels[:, None] != labels[None, :]).sum() / 2  # w: unordered, drawn or not
        squared_norm = z.pow(2).sum(1)
        squared = (squared_norm[:, None] + squared_norm[None, :] - 2 * z @ z.T).clamp_min(0)
        return (pairs * squared).sum() / (4 * negatives.clamp_min(1).to(z.dtype))

    def term(self, output: ModelOutput, batch: Batch) -> Tensor:
        """``log E`` on the embedding layer applied to the detached trunk features; exactly 0,
        with zero gradient, on a batch without a pair of different classes."""
        layer = self._layer(output)
        labels = batch.require("labels", "loss 'energy_confusion'")
        z = layer(output.features.detach().to(layer.weight.dtype))
        energy = self.energy(z, labels, batch.step)
        # no pair of different classes: E = 0 with no partner drawn; log 1 = 0 stands in for it
        # (a device-side choice, so that a GPU run waits on no host read of the labels)
        has_pair = (labels != labels[:1]).any()
        energy = torch.where(has_pair, energy.clamp_min(_MIN_ENERGY), torch.ones_like(energy))
        return torch.log(energy)

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
