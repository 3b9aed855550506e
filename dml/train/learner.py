"""The learner: model and loss in one module (so that data parallelism synchronises both), its
builder from a run's spec and the build context, and its optimizer."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from dml.batch import Batch
from dml.config import RunSpec
from dml.context import BuildContext
from dml.errors import ConfigError
from dml.losses import MetricLoss, build_loss
from dml.losses.base import logged_terms
from dml.models import EmbeddingModel, build_model
from dml.train.distributed import gather_global_batch
from dml.train.finetune import parameter_groups


class MetricLearner(nn.Module):
    """Model plus loss in one module, so DDP synchronises trunk, heads and proxies together.

    ``learner(batch)``: the model runs on the batch's images (with its conditioning signal),
    the outputs and annotations of every rank are gathered into the global batch, and the
    loss reads both (``forward_batch``); it returns the loss and the named terms the loss
    logged on the way (floats, for the training curves). With ``autocast_dtype`` (bf16) the
    model runs under autocast; its outputs are cast back to float32 before the all-gather and
    the loss, whose exponentials need the range.
    """

    def __init__(self, model: EmbeddingModel, loss: MetricLoss, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.autocast_dtype = autocast_dtype

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.autocast(batch.index.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            output = self.model.forward_batch(batch)
        output, batch = gather_global_batch(output.float(), batch)
        with logged_terms() as terms:
            loss = self.loss.forward_batch(output, batch)
        return loss, terms


def build_learner(
    spec: RunSpec, context: BuildContext, *, autocast_dtype: torch.dtype | None = None
) -> MetricLearner:
    """The model and loss of ``spec``, sizes (classes, attributes, embed dim) from ``context``."""
    model = build_model(spec.model, context)
    context = dataclasses.replace(context, embed_dim=model.embed_dim, feature_dim=model.trunk.out_dim,
                                  image_size=spec.model.image_size, embedding_head=model.head)  # the model's facts
    if spec.loss is None:
        raise ConfigError(f"experiments.{spec.experiment}.loss: missing; nothing to train with")
    loss = build_loss(spec.loss, context=context, where=f"experiments.{spec.experiment}.loss")
    return MetricLearner(model, loss, autocast_dtype)


def build_optimizer(learner: MetricLearner, spec: RunSpec) -> torch.optim.Optimizer:
    """AdamW over the trunk, the heads and the loss's parameters, each group with its own
    learning rate (:func:`dml.train.finetune.parameter_groups`)."""
    return torch.optim.AdamW(parameter_groups(learner.model, learner.loss, spec.train),
                             weight_decay=spec.train.weight_decay)


def unwrap(module: nn.Module) -> MetricLearner:
    """The learner inside a DDP wrapper (or the learner itself)."""
    return module.module if hasattr(module, "module") else module  # type: ignore[return-value]
