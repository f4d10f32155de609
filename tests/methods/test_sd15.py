"""The SD 1.5 architecture (sd15-random, 860M-parameter UNet) trains at 64x64 with 2 sampling steps on a CPU.

In the normal suite: 25 s on an idle 2-core machine (9 s to build, then one step per method), about 4 GB of fp32
weights."""

import math

import pytest

from bench.core.prompts import load_prompts
from methods import METHODS
from rewards.toy import MeanBrightness

SETTINGS = dict(steps=2, batch_size=1, guidance_scale=3.0, resolution=64)


@pytest.fixture(scope="module")
def sd15():
    from bench.core.families.sd import build_sd15_random

    # The SD 1.5 architecture with seeded weights drawn in one pass (the modules' own initialisers take a minute
    # on a CPU); about 4 GB in fp32, built once for the module.
    pipe = build_sd15_random(fast_init=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)  # as load_model freezes every pipeline (trainable text-encoder weights gave
        # DDPO's prompt embeddings a graph that its second timestep's backward found freed)
    return pipe


@pytest.mark.slow
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
