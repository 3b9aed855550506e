"""Extra heads on top of the trunk, by name: ``model.heads`` in params.yaml.

A head is an ``nn.Module`` called as ``head(features, embeddings)`` (the trunk's pooled
features and the embedding head's raw output) that returns one tensor, stored in
``ModelOutput.heads[name]``. Sizes (``feature_dim``, ``embed_dim``, ``num_attributes``, ...)
are injected from the build context (``dml.context``); the rest are knobs.
"""

from __future__ import annotations

from typing import Annotated

from torch import Tensor, nn

from dml.errors import ConfigError
from dml.registry import Knob, Registry

HEADS: Registry[nn.Module] = Registry("head")


class AttributeHead(nn.Module):
    """Multi-label attribute logits ``[B, A]`` from the trunk features (a sigmoid per attribute).

    Reads the shared trunk's features, not the embedding, so that the embedding and attribute
    tasks share the trunk and each has its own head (SGML's multitask network).
    """

    def __init__(self, feature_dim: int, num_attributes: int, hidden: int = 0) -> None:
        super().__init__()
        if num_attributes < 1:
            raise ConfigError("model.heads.attributes: the dataset has no attributes")
        self.net = (nn.Linear(feature_dim, num_attributes) if not hidden else
                    nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, num_attributes)))

    def forward(self, features: Tensor, embeddings: Tensor) -> Tensor:
        return self.net(features)


@HEADS.register("attributes")
def attributes(feature_dim: int, num_attributes: int,
               hidden: Annotated[int, Knob(ge=0, integer=True)] = 0) -> nn.Module:
    """Attribute logits from the trunk features; ``hidden`` > 0 adds one hidden layer."""
    return AttributeHead(feature_dim, num_attributes, hidden)
