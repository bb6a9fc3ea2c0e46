"""Autoregressive sampling (zoo.sampling) and byte-to-image conversion."""

import numpy as np
import pytest
import torch

from zoo.registry import build
from zoo.sampling import sample, to_images


def _tiny():
    torch.manual_seed(0)
    return build(
        "strided",
        n_layer=1,
        n_embd=16,
        n_head=2,
        seq_len=64,
        data_shape=[8, 8],
        attention={"name": "strided", "stride": 8},
    )


def test_sample_shape_range_and_reproducible():
    model = _tiny()
    a = sample(model, 3, generator=torch.Generator().manual_seed(1))
    b = sample(model, 3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 64) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) <= 255
    assert torch.equal(a, b)
    assert model.training  # mode restored


def test_sample_follows_the_model_distribution():
    # a model whose logits always favour byte 7 overwhelmingly samples 7 everywhere
    model = _tiny()
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[7] = 50.0
    out = sample(model, 2, generator=torch.Generator().manual_seed(0))
    assert bool((out == 7).all())


def test_sample_rejects_bad_arguments():
    model = _tiny()
    with pytest.raises(ValueError, match="num must be >= 1, got 0"):
        sample(model, 0)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        sample(model, 1, temperature=0)


def test_to_images_layouts():
    x = torch.arange(12).view(1, 12)
    assert to_images(x, [3, 4])[0].shape == (3, 4)
    inter = to_images(x, [2, 2, 3])[0]
    assert inter.shape == (2, 2, 3) and inter[0, 1].tolist() == [3, 4, 5]  # pixel (0, 1) = bytes 3..5
    planes = to_images(x, [3, 2, 2])[0]
    assert planes.shape == (2, 2, 3) and planes[0, 1].tolist() == [1, 5, 9]  # R, G, B planes of 4 bytes
    assert to_images(x, [12]) is None
    assert to_images(x, [2, 6])[0].dtype == np.uint8
