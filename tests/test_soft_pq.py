"""The soft product-quantization head: soft codes in training, hard codes in evaluation that
plain faiss reproduces from the exported codebooks, and its configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dml.config import ModelConfig
from dml.context import BuildContext
from dml.errors import ConfigError
from dml.index import build_index, decode_gallery, load_index, pq_from_codebooks, save_index
from dml.models import build_model


def _head(**knobs):
    model = build_model(ModelConfig(embed_dim=16, heads={"soft_pq": knobs}), BuildContext())
    return model.heads["soft_pq"]


def test_hard_codes_are_what_faiss_encodes_from_the_exported_codebooks(tmp_path) -> None:
    torch.manual_seed(0)
    head = _head(bits=[16, 32], codeword_bits=4).eval()
    x = torch.randn(50, 16)
    hard = head(x, x).detach().numpy()  # [50, 2, 16]
    indexes = head.faiss_indexes("ip")
    assert sorted(indexes) == ["softpq16", "softpq32"]
    for i, name in enumerate(["softpq16", "softpq32"]):
        index = indexes[name]
        assert index.pq.M == (4 if i == 0 else 8) and index.pq.nbits == 4
        index.add(F.normalize(x, dim=1).numpy())
        save_index(index, tmp_path / f"{name}.faiss", info={"kind": "softpq"})
        loaded, meta = load_index(tmp_path / f"{name}.faiss")
        assert meta["code_size"] == (2 if i == 0 else 4)  # bytes per vector: bits / 8
        np.testing.assert_allclose(decode_gallery(loaded), hard[:, i], atol=1e-6)


def test_training_mode_is_a_soft_mix_that_hardens_as_the_temperature_falls() -> None:
    torch.manual_seed(0)
    x = torch.randn(20, 16)
    warm = _head(bits=[32], temperature=10.0)
    cold = _head(bits=[32], temperature=1e-6)
    cold.load_state_dict(warm.state_dict())
    hard = warm.eval()(x, x)
    soft_warm = warm.train()(x, x)
    soft_cold = cold.train()(x, x)
    assert (soft_warm - hard).abs().max() > 1e-2
    torch.testing.assert_close(soft_cold, hard, atol=1e-5, rtol=0)


def test_codebooks_learned_elsewhere_make_a_plain_faiss_index() -> None:
    rng = np.random.default_rng(0)
    books = rng.normal(size=(2, 4, 3)).astype(np.float32)  # M=2, K=4 (2 bits), d=3
    index = pq_from_codebooks(books, "l2")
    x = rng.normal(size=(5, 6)).astype(np.float32)
    index.add(x)
    # each half goes to its nearest code word
    nearest = [np.argmin(((x[:, None, m * 3:(m + 1) * 3] - books[m][None]) ** 2).sum(-1), axis=1)
               for m in range(2)]
    expected = np.concatenate([books[m][nearest[m]] for m in range(2)], axis=1)
    np.testing.assert_allclose(index.reconstruct_n(0, 5), expected, atol=1e-6)
    plain = build_index(x, "flat", metric="l2")
    assert plain.ntotal == index.ntotal


@pytest.mark.parametrize(("knobs", "match"), [
    ({"bits": [24]}, "bits"),                  # 3 sub-quantizers do not divide 16
    ({"bits": [64, 64]}, "distinct"),
    ({"temperature": 0}, "temperature"),
    ({"codeword_bits": 0}, "codeword_bits"),
])
def test_errors_name_the_knob(knobs, match) -> None:
    with pytest.raises(ConfigError, match=f"model.heads.soft_pq.*{match}"):
        _head(**knobs)
