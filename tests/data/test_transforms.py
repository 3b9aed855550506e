from __future__ import annotations

import numpy as np
import pytest
import torch

from dml.data.transforms import build_transforms, check_augment, domain_augments, image_transforms
from dml.errors import ConfigError


def test_train_and_eval_transforms():
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for train in (True, False):
        out = build_transforms(32, train=train)(image)
        assert type(out) is torch.Tensor
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0
    constant = np.full((32, 32, 3), 255, dtype=np.uint8)
    assert torch.allclose(build_transforms(32, train=False)(constant), torch.ones(3, 32, 32))


def test_train_transform_is_random_eval_is_not():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    torch.manual_seed(0)
    train = build_transforms(32, train=True)
    outputs = [train(image) for _ in range(4)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])
    evaluate = build_transforms(32, train=False)
    assert torch.equal(evaluate(image), evaluate(image))


def test_the_augmentation_is_named_in_params_with_its_arguments():
    recipe = [{"name": "RandomRotation", "degrees": 10}, {"name": "ColorJitter", "brightness": 0.2},
              {"name": "RandomResizedCrop", "scale": [0.5, 1.0]}]
    transform = image_transforms(24, train=True, augment=recipe)  # the per-image part holds the recipe
    names = [type(t).__name__ for t in transform.transforms]
    assert names[1:4] == ["RandomRotation", "ColorJitter", "RandomResizedCrop"]
    assert transform.transforms[3].size == (24, 24)  # the required size is the model's
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert transform(image).shape == (3, 24, 24) and transform(image).dtype == torch.uint8
    assert build_transforms(24, train=True, augment=recipe)(image).dtype == torch.float32
    bare = image_transforms(24, train=True, augment=[])
    assert [type(t).__name__ for t in bare.transforms][1] == "Resize"


def test_unknown_transforms_and_arguments_name_their_key():
    with pytest.raises(ConfigError, match=r"train.augment\[1\].name: unknown transform 'Flip'.*RandomHorizontalFlip"):
        build_transforms(32, train=True, augment=[{"name": "RandomRotation", "degrees": 5}, {"name": "Flip"}])
    with pytest.raises(ConfigError, match=r"train.augment\[0\]: RandomResizedCrop has no argument 'scales'.*scale"):
        build_transforms(32, train=True, augment=[{"name": "RandomResizedCrop", "scales": [0.5, 1]}])
    with pytest.raises(ConfigError, match=r"train.augment\[0\]: RandomRotation"):
        build_transforms(32, train=True, augment=[{"name": "RandomRotation", "degrees": -5}])
    with pytest.raises(ConfigError, match=r"experiments.x.train.augment.sketch\[0\].name"):
        check_augment({"photo": [], "sketch": [{"name": "Nope"}]}, 32, where="experiments.x.train.augment")


def test_each_domain_gets_its_own_recipe():
    recipes = domain_augments({"sketch": [{"name": "RandomRotation", "degrees": 15}]}, ("photo", "sketch"))
    assert recipes == {"photo": None, "sketch": [{"name": "RandomRotation", "degrees": 15}]}
    assert domain_augments([{"name": "RandomHorizontalFlip"}], ("photo",)) == {"photo": [{"name": "RandomHorizontalFlip"}]}


def test_run_checks_reject_a_bad_augmentation_before_any_compute():
    from dml.checks import check_experiment
    from dml.config import parse_params

    params = parse_params({"experiments": {"x": {"dataset": "shapes", "loss": {"name": "contrastive"},
                                                 "train": {"augment": [{"name": "RandomCrop", "pading": 2}]}}}})
    with pytest.raises(ConfigError, match=r"experiments.x.train.augment\[0\]: RandomCrop has no argument 'pading'"):
        check_experiment(params, "x")
