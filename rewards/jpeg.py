"""JPEG (in)compressibility as the DDPO paper defines it: size of the image saved as JPEG at quality 95, in kB.

``jpeg-compressibility`` is the negated size (smaller files score higher), ``jpeg-incompressibility`` the size.
The true score goes through PIL and has no gradient. The registered rewards of these names
(``rewards.compress``) add a differentiable surrogate for gradient methods; the classes here are the bare true
score, without one (a gradient method given them directly is refused: the runner's ``skipped`` path).

Evaluation records the true score as the plain size, ``true_jpeg_kb`` (lower is better for compressibility, higher
for incompressibility), whichever sign the reward has and whatever a gradient method trained on.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from rewards.base import Reward

QUALITY = 95


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [0, 1] -> [B, H, W, 3] uint8, rounding as ddpo-pytorch does."""
    return (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def jpeg_kb(images: torch.Tensor, quality: int = QUALITY) -> torch.Tensor:
    """Size in kB (1000 bytes) of each image saved by PIL as JPEG at ``quality``."""
    sizes = []
    for array in to_uint8(images):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


class JpegSize(Reward):
    """What the two JPEG rewards share: evaluation records the plain size (``true_jpeg_kb``)."""

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """``true_jpeg_kb``: the mean size in kB of the images saved by PIL as JPEG at quality 95."""
        return {"true_jpeg_kb": float(jpeg_kb(images).mean())}


class JpegIncompressibility(JpegSize):
    """JPEG size in kB at quality 95: higher is a larger, more detailed file."""

    name = "jpeg-incompressibility"
    true_metrics = {"true_jpeg_kb": True}

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return jpeg_kb(images).to(images.device)


class JpegCompressibility(JpegSize):
    """Negated JPEG size in kB at quality 95: higher is a smaller, simpler file."""

    name = "jpeg-compressibility"
    true_metrics = {"true_jpeg_kb": False}

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return -jpeg_kb(images).to(images.device)
