"""Base classes and shared pieces of every metric loss.

``MetricLoss`` owns validation and plumbing, in the style of pytorch-metric-learning's
``BaseMetricLossFunction``: ``forward`` checks its inputs, turns labels into a label-similarity
matrix and calls the subclass's one method, ``compute_loss``. ``ProxyLoss`` adds learnable
class proxies (one row per class) for proxy and cosine-classifier losses.

Geometry: every loss works on L2-normalized embeddings ``x_i = f_i / ‖f_i‖``, with cosine
similarity ``s_ij = x_i · x_j`` and euclidean distance ``d_ij = ‖x_i − x_j‖ = sqrt(2 − 2 s_ij)``.

Empty cases: a batch without any valid pair or triplet gives a loss of exactly 0 that is still
connected to the graph (``embeddings.sum() * 0``, or an empty masked mean), never NaN.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from contextvars import ContextVar
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.registry import Registry
from dml.label_similarity import equality_similarity
from dml.precision import at_least_float32, outside_autocast

__all__ = [
    "LOSSES",
    "MetricLoss",
    "WrapperLoss",
    "avg_non_zero",
    "ProxyLoss",
    "check_finite",
    "check_positive",
    "cosine_matrix",
    "distance_matrix",
    "log1p_sum_exp",
    "logged_terms",
    "masked_binary_cross_entropy",
    "masked_mean",
    "pair_masks",
    "weighted_mean",
    "zero_loss",
]

#: Registry of every loss, by the name used in params.yaml; ``dml.losses`` re-exports it.
LOSSES: Registry[MetricLoss] = Registry("loss", knob_prefix="loss.")

# Squared distances at or below this are treated as exactly 0 (with zero gradient), so that the
# square root never sees 0 and its gradient stays finite (the diagonal d_ii, duplicate samples).
_SQUARED_DISTANCE_EPS = 1e-12


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ConfigError unless the constructor knob ``name`` is > 0 (>= 0 with allow_zero)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"loss.{name} must be {bound}, got {value!r}")


def check_finite(name: str, value: object) -> None:
    """Raise ConfigError unless the signed constructor knob ``name`` is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"loss.{name} must be a finite number (either sign), got {value!r}")


def pair_masks(similarity: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and negative pair masks of a label-similarity matrix, diagonal excluded.

    ``pos = similarity > 0`` and ``neg = similarity == 0``. With equality similarity these are
    the usual same-class / different-class pairs; with graded similarity (multiset Jaccard,
    count cosine) every pair that shares anything is a positive, and the grade itself stays
    available to losses that weight or order pairs by it.

    Args:
        similarity: ``Tensor[B, B]`` in [0, 1].

    Returns:
        ``(pos, neg)``, two bool ``Tensor[B, B]`` with False on the diagonal.
    """
    off_diagonal = ~torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    return (similarity > 0) & off_diagonal, (similarity == 0) & off_diagonal


def cosine_matrix(embeddings: Tensor) -> Tensor:
    """``Tensor[B, B]`` of cosine similarities ``s_ij`` of the L2-normalized ``Tensor[B, D]``."""
    x = F.normalize(embeddings, dim=1)
    return x @ x.T


def distance_matrix(embeddings: Tensor) -> Tensor:
    """``Tensor[B, B]`` of euclidean distances ``d_ij`` of the L2-normalized ``Tensor[B, D]``.

    Computed as ``sqrt(2 − 2 s_ij)`` (B x B memory instead of B x B x D), ``2 − 2 x xᵀ`` in one
    ``addmm``; ``threshold`` sets squared distances at or below 1e-12 (the diagonal, duplicate
    samples, rounding below 0) to exactly 0 with zero gradient, so the gradient is finite
    everywhere, and ``sqrt`` runs in place: no further B x B buffer.
    """
    x = F.normalize(embeddings, dim=1)
    squared = torch.addmm(x.new_full((), 2.0), x, x.T, alpha=-2.0)
    return torch.threshold(squared, _SQUARED_DISTANCE_EPS, 0.0).sqrt_()


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values[mask]``; exactly 0 (still on the graph) when ``mask`` is all False.

    Avoids a host synchronisation: ``sum(where(mask, values, 0)) / max(count, 1)``.
    """
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1).to(values.dtype)


def weighted_mean(values: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """``Σ_mask w·v / Σ_mask w``; exactly 0 (still on the graph) when the weights sum to 0."""
    w = torch.where(mask, weights, torch.zeros_like(weights))
    total = w.sum()
    return (w * values).sum() / torch.where(total > 0, total, torch.ones_like(total))


def masked_binary_cross_entropy(logits: Tensor, targets: Tensor, known: Tensor | None) -> Tensor:
    """Mean binary cross-entropy with logits over the ``known`` entries of ``[B, A]``.

    Unknown entries (a sketch's attributes, CUB's "not visible") are left out, never read as
    0; with nothing known the result is exactly 0, still on the graph.
    """
    if tuple(logits.shape) != tuple(targets.shape):
        raise ValueError(f"attribute logits {tuple(logits.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape")
    known = torch.ones_like(targets, dtype=torch.bool) if known is None else known.bool()
    logits = at_least_float32(logits)
    per_entry = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return masked_mean(per_entry, known)


def avg_non_zero(losses: Tensor, mask: Tensor) -> Tensor:
    """Mean of the strictly positive ``losses[mask]`` (pml's ``AvgNonZeroReducer``); 0 if none.

    Terms already satisfied (loss 0) do not dilute the gradient of the others.
    """
    return masked_mean(losses, mask & (losses > 0))


def log1p_sum_exp(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """``log(1 + Σ_{mask} exp(logits))`` along ``dim``, stable and NaN-free.

    A masked logsumexp with an extra zero logit for the ``1 +``: entries outside ``mask`` are
    -inf, and an all-False slice gives exactly 0 with zero (not NaN) gradient.
    """
    masked = torch.where(mask, logits, torch.full_like(logits, -torch.inf))
    zero_shape = list(logits.shape)
    zero_shape[dim] = 1
    return torch.logsumexp(torch.cat([logits.new_zeros(zero_shape), masked], dim=dim), dim=dim)


def zero_loss(embeddings: Tensor) -> Tensor:
    """A scalar 0 that keeps the graph: ``embeddings.sum() * 0``."""
    return embeddings.sum() * 0


#: The terms being collected by the innermost :func:`logged_terms` block (None outside one).
_LOGGED: ContextVar[dict[str, Tensor] | None] = ContextVar("dml_logged_terms", default=None)


@contextlib.contextmanager
def logged_terms() -> Iterator[dict[str, float]]:
    """Collect the named parts that losses log (:meth:`MetricLoss.log_term`) during the block:
    the yielded dict holds them as floats once the block ends. Blocks nest; each collects the
    terms logged inside it only. The loss's value and its terms come back together this way,
    with no state kept on the loss module."""
    collected: dict[str, Tensor] = {}
    terms: dict[str, float] = {}
    token = _LOGGED.set(collected)
    try:
        yield terms
    finally:
        _LOGGED.reset(token)
        terms.update({name: float(value) for name, value in collected.items()})


class MetricLoss(nn.Module):
    """Base of every metric loss: validates inputs, then calls ``compute_loss``.

    Call as ``loss(embeddings, labels)`` or ``loss(embeddings, similarity=S)`` (or both):

    - ``embeddings``: ``Tensor[B, D]`` floating, B >= 1 (raw; losses normalize them).
    - ``labels``: ``Tensor[B]`` integer class ids.
    - ``similarity``: ``Tensor[B, B]`` label similarity in [0, 1] (see ``dml.label_similarity``).

    When only labels are given, ``similarity = equality_similarity(labels)``. Pair losses read
    pairs from ``similarity`` only (when both are given the matrix wins); losses with
    ``needs_class_labels = True`` (proxies, classifiers) read ``labels`` only and refuse a
    similarity-only call. Half-precision embeddings are computed in float32, outside autocast.
    """

    #: True for losses that need class ids (proxy and classifier losses).
    needs_class_labels: ClassVar[bool] = False

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The loss of a training batch: the model's output and every annotation of the rows.

        The default is ``self(output.embeddings, batch.labels)``; a loss that reads more
        (attributes, per-scale labels, counts, the domain, the training progress, a head's
        output) overrides this one method.
        """
        return self(output.embeddings, batch.require("labels", type(self).__name__))

    def log_term(self, name: str, value: Tensor) -> None:
        """Record a named part of the loss (detached) for the training curves, in the
        collection of the enclosing :func:`logged_terms` block (none: dropped)."""
        terms = _LOGGED.get()
        if terms is not None:
            terms[name] = value.detach()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *,
        similarity: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss of a batch; see the class docstring for the arguments."""
        embeddings, labels, similarity = self.prepare(embeddings, labels, similarity)
        return outside_autocast(self.compute_loss, embeddings, labels, similarity)

    def prepare(self, embeddings: Tensor, labels: Tensor | None,
                similarity: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """Validated inputs: float32-or-wider embeddings, labels, and the similarity matrix
        (from the labels when not given). Raises ValueError naming what is wrong."""
        name = type(self).__name__
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            raise ValueError(
                f"{name}: embeddings must be a 2-D tensor [B, D], got {_shape(embeddings)}"
            )
        if not embeddings.dtype.is_floating_point:
            raise ValueError(f"{name}: embeddings must be floating point, got {embeddings.dtype}")
        batch, dim = embeddings.shape
        if batch < 1 or dim < 1:
            raise ValueError(f"{name}: embeddings must have B >= 1 and D >= 1, got {(batch, dim)}")
        if labels is None and similarity is None:
            raise ValueError(f"{name}: give labels [B] or similarity [B, B] (or both)")
        if labels is None and self.needs_class_labels:
            raise ValueError(
                f"{name} needs class labels (Tensor[B] of class ids); it cannot be computed "
                f"from a similarity matrix alone"
            )
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != batch:
                raise ValueError(
                    f"{name}: labels must be a 1-D tensor of length B={batch} (embeddings "
                    f"{tuple(embeddings.shape)}), got {_shape(labels)}"
                )
            if (
                labels.dtype.is_floating_point
                or labels.dtype.is_complex
                or labels.dtype == torch.bool
            ):
                raise ValueError(f"{name}: labels must be an integer tensor, got {labels.dtype}")
            if labels.device != embeddings.device:
                raise ValueError(
                    f"{name}: labels are on {labels.device}, embeddings on {embeddings.device}"
                )
        embeddings = at_least_float32(embeddings)
        if similarity is None:
            similarity = equality_similarity(labels, dtype=embeddings.dtype)
        else:
            similarity = self.pair_matrix("similarity", similarity, embeddings)
        self.check_inputs(embeddings, labels)
        return embeddings, labels, similarity

    def pair_matrix(self, what: str, matrix: object, embeddings: Tensor) -> Tensor:
        """``matrix`` checked as a ``[B, B]`` tensor of values in [0, 1] on the embeddings'
        device (a label similarity, a pair weighting), in their dtype; ValueError naming
        ``what`` otherwise."""
        name, batch = type(self).__name__, embeddings.shape[0]
        if not isinstance(matrix, Tensor) or tuple(matrix.shape) != (batch, batch):
            raise ValueError(
                f"{name}: {what} must be a [B, B] = [{batch}, {batch}] tensor (embeddings "
                f"{tuple(embeddings.shape)}), got {_shape(matrix)}"
            )
        if matrix.device != embeddings.device:
            raise ValueError(f"{name}: {what} is on {matrix.device}, embeddings on {embeddings.device}")
        matrix = matrix.to(embeddings.dtype)
        if not bool(((matrix >= 0) & (matrix <= 1)).all()):
            raise ValueError(f"{name}: {what} values must lie in [0, 1] (and not be NaN)")
        return matrix

    def check_inputs(self, embeddings: Tensor, labels: Tensor | None) -> None:
        """Hook for loss-specific checks after the generic ones (raise ValueError)."""

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """The loss proper: validated ``Tensor[B, D]``, ``Tensor[B] | None``, ``Tensor[B, B]``."""
        raise NotImplementedError


class ProxyLoss(MetricLoss):
    """A loss with one learnable proxy (class weight vector) per class.

    ``self.proxies`` is an ordinary ``nn.Parameter`` of shape ``[num_classes, embed_dim]`` (so
    DistributedDataParallel synchronises it like any weight). Subclasses choose the
    initialisation by overriding ``reset_parameters`` (default ``normal_``, as
    pytorch-metric-learning's classifier losses) and use ``proxy_cosine`` for the logits.
    """

    needs_class_labels: ClassVar[bool] = True

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        for key, value in (("num_classes", num_classes), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ConfigError(f"loss.{key} must be a positive integer, got {value!r}")
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.proxies = nn.Parameter(torch.empty(self.num_classes, self.embed_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``self.proxies`` (standard normal)."""
        nn.init.normal_(self.proxies)

    def check_inputs(self, embeddings: Tensor, labels: Tensor | None) -> None:
        """Embedding size must be ``embed_dim`` and labels must lie in [0, num_classes)."""
        name = type(self).__name__
        if embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"{name}: embeddings {tuple(embeddings.shape)} do not match embed_dim="
                f"{self.embed_dim}"
            )
        assert labels is not None  # guaranteed by needs_class_labels
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(
                f"{name}: labels must lie in [0, num_classes={self.num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )

    def proxy_cosine(self, embeddings: Tensor) -> Tensor:
        """``Tensor[B, C]`` of cosines between normalized embeddings and normalized proxies.

        The shared "cosine classifier" logits of proxy-anchor, normalized-softmax and CosFace.
        Computed in the wider of the two dtypes (float64 embeddings give float64 logits).
        """
        proxies = self.proxies
        dtype = torch.promote_types(embeddings.dtype, proxies.dtype)
        return F.linear(
            F.normalize(embeddings.to(dtype), dim=1), F.normalize(proxies.to(dtype), dim=1)
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embed_dim={self.embed_dim}"


class WrapperLoss(MetricLoss):
    """A loss that adds a weighted term to a base loss: ``L = L_base + weight · term``.

    The base is any registered loss, built from the nested ``loss.base`` knobs of params.yaml
    (``dml.losses.build_loss``); its parameters (proxies) stay parameters of the wrapper. With
    ``weight = 0`` the wrapper returns exactly the base loss. Subclasses write ``term``.
    Logged terms: ``base`` and the subclass's ``term_name``.
    """

    term_name: ClassVar[str] = "term"

    def __init__(self, base: MetricLoss, weight: float) -> None:
        super().__init__()
        if not isinstance(base, MetricLoss):
            raise ConfigError(f"loss.base must be a loss, got {type(base).__name__}")
        self.base = base
        self.weight = float(weight)
        self.needs_class_labels = base.needs_class_labels  # type: ignore[misc]

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """``base.forward_batch + weight · term``; the term is skipped when ``weight`` is 0."""
        with logged_terms() as base_terms:
            value = self.base.forward_batch(output, batch)
        return self._combine(value, base_terms, output, batch)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """Called as ``loss(embeddings, labels)`` (or with a similarity): the base loss on the
        same inputs plus the term on a bare batch (embeddings and labels only)."""
        with logged_terms() as base_terms:
            value = self.base(embeddings, labels, similarity=similarity)
        output = ModelOutput(embeddings=embeddings, features=embeddings)
        index = torch.arange(embeddings.shape[0], device=embeddings.device)
        return self._combine(value, base_terms, output, Batch(images=None, index=index, labels=labels))

    def _combine(self, value: Tensor, base_terms: dict[str, float], output: ModelOutput, batch: Batch) -> Tensor:
        self.log_term("base", value)
        for name, part in base_terms.items():
            self.log_term(f"base/{name}", torch.as_tensor(part))
        if self.weight == 0:
            return value
        term = self.term(output, batch)
        self.log_term(self.term_name, term)
        value = value + self.weight * term
        extra = self.unweighted_term(output, batch)
        return value if extra is None else value + extra

    def term(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The added term (a scalar tensor)."""
        raise NotImplementedError

    def unweighted_term(self, output: ModelOutput, batch: Batch) -> Tensor | None:
        """A regularizer that comes with the term, added unscaled by ``weight`` (and only
        while the term is on); None by default. The subclass logs it."""
        return None

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
