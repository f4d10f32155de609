"""Core rewards: JPEG scores equal a direct PIL computation; the toy reward is differentiable."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.errors import UsageError
from rewards import REWARDS, make_reward
from rewards.base import RewardNotDifferentiable


def direct_jpeg_kb(image: torch.Tensor) -> float:
    array = (image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


def test_jpeg_rewards_match_pil():
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(0, 1, 64).repeat(3, 64, 1)
    noisy = torch.rand(3, 64, 64, generator=g)
    images = torch.stack([smooth, noisy])
    want = torch.tensor([direct_jpeg_kb(im) for im in images])
    inc = make_reward("jpeg-incompressibility")(images, ["a", "b"])
    comp = make_reward("jpeg-compressibility")(images, ["a", "b"])
    assert torch.allclose(inc, want) and torch.allclose(comp, -want)
    assert inc[1] > inc[0]  # noise is larger than a gradient


def test_bare_jpeg_score_has_no_gradient_and_refuses_gradient_methods():
    from rewards.jpeg import JpegCompressibility

    reward = JpegCompressibility()
    assert not reward.differentiable and not reward.has_surrogate and reward.trained_on() == ""
    with pytest.raises(RewardNotDifferentiable, match="ddpo"):
        reward.check_trainable()


def test_mean_brightness_is_differentiable():
    reward = make_reward("mean-brightness")
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    reward(images, ["a", "b"]).sum().backward()
    assert torch.allclose(images.grad, torch.full_like(images, 1 / (3 * 8 * 8)))


def test_unknown_reward_lists_valid_names():
    with pytest.raises(UsageError, match="mean-brightness"):
        REWARDS.get("brightness")
