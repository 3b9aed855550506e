"""Squeeze-and-excitation blocks, plain and domain-aware (DASE), alone and inside the small CNN
and ResNet trunks (``backbone_options.excitation``)."""

from __future__ import annotations

import pytest
import torch

from dml.errors import ConfigError
from dml.models.backbones import BACKBONES
from dml.models.excitation import SqueezeExcitation

SKETCH, PHOTO = torch.zeros(2), torch.ones(2)


def test_the_block_keeps_the_shape_and_only_rescales_channels() -> None:
    torch.manual_seed(0)
    block = SqueezeExcitation(32, reduction=16, domain_aware=True)
    x = torch.randn(2, 32, 5, 5)
    out = block(x, PHOTO)
    assert out.shape == x.shape
    scale = out / x
    # one factor per (sample, channel), in (0, 1): a sigmoid gate
    torch.testing.assert_close(scale, scale[:, :, :1, :1].expand_as(scale))
    assert bool(((scale > 0) & (scale < 1)).all())


def test_the_domain_flag_changes_a_dase_output_and_not_a_plain_one() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 32, 4, 4)
    dase = SqueezeExcitation(32, domain_aware=True)
    assert not torch.allclose(dase(x, SKETCH), dase(x, PHOTO))
    plain = SqueezeExcitation(32)
    torch.testing.assert_close(plain(x, SKETCH), plain(x, PHOTO))
    torch.testing.assert_close(plain(x), plain(x, PHOTO))
    with pytest.raises(ValueError, match="domain flag"):
        dase(x)


def test_the_excitation_matches_its_equation() -> None:
    torch.manual_seed(0)
    block = SqueezeExcitation(16, reduction=4, domain_aware=True)
    x, d = torch.randn(3, 16, 2, 2), torch.tensor([0.0, 1.0, 1.0])
    z = x.mean(dim=(2, 3))
    u = torch.sigmoid(z @ block.squeeze.weight.T + block.squeeze.bias)
    s = torch.sigmoid(torch.cat([u, d[:, None]], 1) @ block.excite.weight.T + block.excite.bias)
    torch.testing.assert_close(block(x, d), x * s[:, :, None, None])


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_a_dase_trunk_sees_the_domain_with_one_set_of_weights(name: str) -> None:
    torch.manual_seed(0)
    trunk = BACKBONES.build(name, excitation="dase").eval()
    assert trunk.accepts_condition
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sketch, photo = trunk(images, condition=SKETCH), trunk(images, condition=PHOTO)
    assert sketch.shape == (2, trunk.out_dim)
    assert not torch.allclose(sketch, photo)  # the same image as a sketch and as a photo
    domain_aware = [m.domain_aware for m in trunk.modules() if isinstance(m, SqueezeExcitation)]
    expected = [True, True, True, False] if name == "small_cnn" else [True] * 6 + [False] * 2
    assert domain_aware == expected  # the last stage's blocks are plain SE


def test_resnet_dase_in_the_first_three_stages_plain_se_in_the_last() -> None:
    trunk = BACKBONES.build("resnet18", excitation="dase")
    kinds = {key: se.domain_aware for key, se in trunk.excitations.items()}
    assert kinds == {f"layer{s}_{i}": s < 4 for s in range(1, 5) for i in range(2)}
    # torchvision's parameter names are kept: an ImageNet state dict still loads
    assert "layer1.0.bn2.weight" in trunk.state_dict() and "fc.weight" not in trunk.state_dict()


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_plain_se_and_no_excitation_take_no_domain(name: str) -> None:
    torch.manual_seed(0)
    se = BACKBONES.build(name, excitation="se").eval()
    assert not se.accepts_condition
    assert any(isinstance(m, SqueezeExcitation) for m in se.modules())
    assert not any(m.domain_aware for m in se.modules() if isinstance(m, SqueezeExcitation))
    bare = BACKBONES.build(name).eval()
    assert not any(isinstance(m, SqueezeExcitation) for m in bare.modules())
    with torch.no_grad():
        assert bare(torch.randn(1, 3, 32, 32)).shape == (1, bare.out_dim)


def test_an_unknown_excitation_names_the_key() -> None:
    with pytest.raises(ConfigError, match="model.backbone_options.excitation"):
        BACKBONES.build("small_cnn", excitation="cbam")


def test_the_model_feeds_each_samples_domain_to_a_dase_trunk() -> None:
    from dml.batch import Batch
    from dml.config import ModelConfig
    from dml.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_dim=8, condition="domain",
                                    backbone_options={"excitation": "dase", "width": 8, "depth": 2})).eval()
    images = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)  # one image, as a sketch and a photo
    batch = Batch(images=images, index=torch.arange(2), domain=torch.tensor([0, 1]))
    with torch.no_grad():
        out = model.forward_batch(batch)
    assert out.embeddings.shape == (2, 8) and not torch.allclose(out.embeddings[0], out.embeddings[1])
    with pytest.raises(ValueError, match="'domain'"):
        model.forward_batch(Batch(images=images, index=torch.arange(2)))
