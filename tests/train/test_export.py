"""Exported models: atomic, checksummed, refused when tampered."""

import pytest

from dml.config import ModelConfig
from dml.errors import ConfigError, IntegrityError
from dml.models import build_model
from dml.train.export import WEIGHTS_FILE, export_model, load_model


def test_tampered_weights_are_refused(tmp_path):
    cfg = ModelConfig(embed_dim=8)
    export_model(build_model(cfg), cfg, tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        load_model(tmp_path / "m")


def test_truncated_weights_are_refused(tmp_path):
    cfg = ModelConfig(embed_dim=8)
    export_model(build_model(cfg), cfg, tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(IntegrityError):
        load_model(tmp_path / "m")


def test_failed_export_leaves_previous_model(tmp_path, monkeypatch):
    cfg = ModelConfig(embed_dim=8)
    export_model(build_model(cfg), cfg, tmp_path / "m", tag="first")
    import dml.train.export as export

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(build_model(cfg), cfg, tmp_path / "m", tag="second")
    _, card = load_model(tmp_path / "m")
    assert card["tag"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_local_weights_file_loads_and_mismatch_is_named(tmp_path):
    import torch

    from dml.models import load_trunk_weights

    cfg = ModelConfig(embed_dim=8)
    trunk = build_model(cfg).trunk
    torch.save(trunk.state_dict(), tmp_path / "trunk.pt")
    model = build_model(cfg.model_copy(update={"weights": str(tmp_path / "trunk.pt")}))
    for key, value in trunk.state_dict().items():
        torch.testing.assert_close(model.trunk.state_dict()[key], value)
    with pytest.raises(ConfigError, match="never downloaded"):
        build_model(cfg.model_copy(update={"weights": str(tmp_path / "missing.pt")}))
    other = build_model(ModelConfig(backbone="resnet18", embed_dim=8)).trunk
    with pytest.raises(IntegrityError, match="does not fit"):
        load_trunk_weights(other, tmp_path / "trunk.pt")
