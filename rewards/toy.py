"""Toy differentiable reward for tests and smoke runs: it needs no weights and any model can move it."""

from __future__ import annotations

import torch

from rewards.base import Reward


class MeanBrightness(Reward):
    """Mean pixel value of the image in [0, 1]: higher is brighter. Differentiable; not a real preference."""

    name = "mean-brightness"
    differentiable = True

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return images.float().mean(dim=(1, 2, 3))
