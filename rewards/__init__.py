"""Rewards by name. Each entry is ``"module:factory"``, imported only when chosen."""

from bench.registry import Registry

REWARDS = Registry(
    "reward",
    {
        "mean-brightness": "rewards.toy:MeanBrightness",
        "jpeg-compressibility": "rewards.jpeg:JpegCompressibility",
        "jpeg-incompressibility": "rewards.jpeg:JpegIncompressibility",
    },
)


def make_reward(name: str, **kwargs):
    """Build the reward registered as ``name``."""
    return REWARDS.get(name)(**kwargs)
