from __future__ import annotations

import numpy as np
import torch

from dml.data.transforms import build_transforms


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
