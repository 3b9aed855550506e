"""The ``quantized`` wrapper with the ``soft_pq`` head: its reduction to the base loss, its
value (the base loss on each code length's reconstructions), and the gradient it sends to the
code words."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.losses import build_loss
from dml.models.soft_pq import SoftProductQuantizer

BASE = {"name": "adaptive_triplet", "margin": 0.1, "gamma": 0.5}


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(12, 8, generator=gen, requires_grad=True)
    counts = torch.randint(0, 3, (12, 4), generator=gen).float()
    counts[counts.sum(1) == 0, 0] = 1
    torch.manual_seed(seed)
    head = SoftProductQuantizer(8, bits=[8, 16], codeword_bits=4, temperature=0.1)
    output = ModelOutput(embeddings=embeddings, features=embeddings,
                         heads={"soft_pq": head(embeddings, embeddings)})
    return output, Batch(images=None, index=torch.arange(12), counts=counts), head


def test_weight_zero_is_the_base_loss_exactly() -> None:
    output, batch, _ = _inputs()
    base = build_loss(BASE).forward_batch(output, batch)
    wrapped = build_loss({"name": "quantized", "weight": 0.0, "base": BASE})
    assert torch.equal(wrapped.forward_batch(output, batch), base)


def test_value_is_base_plus_weighted_mean_over_code_lengths() -> None:
    output, batch, _ = _inputs()
    base = build_loss(BASE)
    per_length = [base.forward_batch(dataclasses.replace(output, embeddings=output.heads["soft_pq"][:, i]), batch)
                  for i in range(2)]
    expected = base.forward_batch(output, batch) + 0.3 * (per_length[0] + per_length[1]) / 2
    wrapped = build_loss({"name": "quantized", "weight": 0.3, "base": BASE})
    with logged_terms() as terms:
        got = wrapped.forward_batch(output, batch)
    torch.testing.assert_close(got, expected)
    assert per_length[0] != per_length[1]  # the two code lengths differ
    assert set(terms) == {"base", "quantized"}
    assert terms["quantized"] == pytest.approx(float(sum(per_length).detach()) / 2)


def test_the_code_words_and_the_trunk_get_gradients() -> None:
    output, batch, head = _inputs()
    value = build_loss({"name": "quantized", "weight": 1.0, "base": BASE}).forward_batch(output, batch)
    value.backward()
    for book in head.codebooks:
        assert book.grad is not None and book.grad.abs().sum() > 0
    assert output.embeddings.grad.abs().sum() > 0


def test_without_the_head_the_error_names_it() -> None:
    output, batch, _ = _inputs()
    bare = dataclasses.replace(output, heads={})
    with pytest.raises(ValueError, match="soft_pq"):
        build_loss({"name": "quantized", "weight": 1.0, "base": BASE}).forward_batch(bare, batch)
