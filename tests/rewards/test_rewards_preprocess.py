"""Differentiable CLIP preprocessing against transformers' CLIPImageProcessor, on random images."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rewards.preprocess import clip_preprocess

SIZES = [(32, 32), (64, 48), (48, 64), (300, 200), (231, 400), (512, 512), (512, 768), (225, 700)]


def random_images(kind: str, size: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":  # white noise: stresses the antialiasing filter and the clipping between passes
        return torch.randint(0, 256, (2, 3, *size), generator=g).float() / 255
    coarse = torch.rand(2, 3, max(size[0] // 8, 2), max(size[1] // 8, 2), generator=g)
    return (F.interpolate(coarse, size=size, mode="bilinear") * 255).round() / 255


@pytest.mark.parametrize("kind", ["smooth", "noise"])
@pytest.mark.parametrize("size", SIZES)
def test_matches_the_transformers_processor(size, kind):
    # Tolerance (normalised units): max 0.02, about one grey level (1/255/0.26 = 0.015), from PIL's rounding to
    # uint8, which we skip to keep gradients; mean 0.005.
    from transformers import CLIPImageProcessor

    images = random_images(kind, size, seed=size[0] * 1000 + size[1])
    arrays = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in images]
    ref = CLIPImageProcessor()(arrays, return_tensors="pt").pixel_values  # openai/clip-vit-large-patch14 defaults
    ours = clip_preprocess(images)
    assert ours.shape == ref.shape == (2, 3, 224, 224)
    diff = (ours - ref).abs()
    assert diff.max() < 0.02 and diff.mean() < 0.005, (float(diff.max()), float(diff.mean()))


def test_gradients_reach_the_images():
    images = torch.rand(2, 3, 40, 64, requires_grad=True)
    clip_preprocess(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_pad_fit_keeps_the_whole_image_and_equals_crop_on_squares():
    square = torch.rand(1, 3, 64, 64)
    assert torch.allclose(clip_preprocess(square, fit="pad"), clip_preprocess(square, fit="crop"))
    wide = torch.ones(1, 3, 32, 64)  # white: the padding (black) rows are the only dark ones
    out = clip_preprocess(wide, fit="pad")
    black = (0 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258,
                                                                                     0.27577711])
    assert torch.allclose(out[0, :, 0, 0], black) and torch.allclose(out[0, :, -1, -1], black)
    assert (out[0, 0, 56:168, :] > 1.5).all()  # 112 white rows in the middle
    with pytest.raises(ValueError, match="fit"):
        clip_preprocess(wide, fit="stretch")
