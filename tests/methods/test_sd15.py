"""The SD 1.5 architecture (sd15-random, 860M-parameter UNet) trains at 64x64 with 2 sampling steps on a CPU."""

import math

import pytest

from bench.core.prompts import load_prompts
from methods import METHODS
from rewards.toy import MeanBrightness

SETTINGS = dict(steps=2, batch_size=1, guidance_scale=3.0, resolution=64)


@pytest.fixture(scope="module")
def sd15():
    from bench.core.builders import build_sd15_random

    # The SD 1.5 architecture with seeded weights drawn in one pass (the modules' own initialisers take a minute
    # on a CPU); about 4 GB in fp32, built once for the module.
    return build_sd15_random(fast_init=True)


@pytest.mark.slow  # minutes on 2 CPU cores (two 860M-parameter UNet steps): make test-slow
@pytest.mark.parametrize("name", ["alignprop-k1", "ddpo"])
def test_sd15_architecture_step_at_64px(sd15, name):
    if "default" in getattr(sd15.unet, "peft_config", {}):
        sd15.unet.delete_adapters(["default"])  # the previous test's adapter: each method attaches its own
    cls = METHODS.get(name)
    method = cls(sd15, MeanBrightness(), load_prompts("simple-animals"), cls.Config(**SETTINGS), seed=0)
    before = [p.detach().clone() for p in method.trainable_parameters()]
    metrics = method.step()
    assert metrics["samples"] == 1 and math.isfinite(metrics["reward_mean"]) and math.isfinite(metrics["loss"])
    assert any((a != b).any() for a, b in zip(before, method.trainable_parameters()))
    if name == "alignprop-k1":
        assert method.sampler.image_size == 64
