"""Test plug-ins loaded by path (``tests/plugins.py:Name``) inside runner subprocesses."""

import time

import torch

from methods.rwr import RWR
from rewards.base import Reward


class Boom(RWR):
    """A method whose second step raises."""

    name = "boom"

    def step(self):
        if getattr(self, "_stepped", False):
            raise RuntimeError("boom: planted failure")
        self._stepped = True
        return super().step()


class Slow(RWR):
    """A method whose every step takes at least 0.3 s."""

    name = "slow"

    def step(self):
        metrics = super().step()
        time.sleep(0.3)
        return metrics


class NaNReward(Reward):
    """Differentiable reward that returns NaN: runs must end as ``diverged``."""

    name = "nan"
    differentiable = True

    def score(self, images, prompts):
        return images.mean(dim=(1, 2, 3)) * torch.nan
