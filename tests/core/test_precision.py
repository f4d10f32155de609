"""Mixed precision and resolution in the shared sampler: bf16 agrees with fp32, gradient still reaches LoRA."""

import pytest
import torch

from bench.core import precision as mp
from bench.core.lora import LoraSettings, add_lora
from bench.core.sampler import GradMode, Sampler, SamplerConfig

BF16_IMAGE_TOL = 0.03
"""Largest |bf16 - fp32| pixel difference (images in [0, 1]) allowed for tiny-random, 4 steps, guidance 3."""


def images(pipe, precision, grad=GradMode(), resolution=0):
    sampler = Sampler(pipe, SamplerConfig(steps=4, guidance_scale=3.0, precision=precision, resolution=resolution))
    noise = sampler.initial_noise(2, torch.Generator().manual_seed(0))
    return sampler.sample(["a cat", "a dog"], latents=noise, generator=torch.Generator().manual_seed(1), grad=grad)


def test_bf16_sampler_agrees_with_fp32(tiny):
    reference = images(tiny.pipe, "fp32").images
    mp.cast_frozen(tiny.pipe, "bf16")
    assert tiny.pipe.unet.dtype == tiny.pipe.vae.dtype == torch.bfloat16
    rollout = images(tiny.pipe, "bf16")
    assert rollout.images.dtype == rollout.latents.dtype == torch.float32  # latents and DDIM arithmetic stay fp32
    gap = (rollout.images - reference).abs().max().item()
    assert 0 < gap < BF16_IMAGE_TOL, gap


@pytest.mark.parametrize("mode", [GradMode(mode="last-k", k=1), GradMode(mode="full", checkpoint=False)])
def test_bf16_gradient_reaches_fp32_lora_only(tiny, mode):
    # The last step runs after no-grad steps in one rollout: autocast's cast cache would hand it graph-less LoRA
    # casts (no gradient at all); bench.core.precision disables the cache.
    mp.cast_frozen(tiny.pipe, "bf16")
    params = add_lora(tiny.pipe.unet, LoraSettings())
    assert {p.dtype for p in params} == {torch.float32}
    images(tiny.pipe, "bf16", grad=mode).images.mean().backward()
    grads = [p.grad for p in params]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for n, p in tiny.pipe.unet.named_parameters() if "lora_" not in n)


def test_resolution_sets_image_size_and_bad_sizes_are_refused(tiny):
    assert images(tiny.pipe, "fp32", resolution=64).images.shape[-2:] == (64, 64)
    with pytest.raises(ValueError, match="multiple of 4"):
        images(tiny.pipe, "fp32", resolution=30)


def test_precision_names_are_checked():
    with pytest.raises(ValueError, match="precision"):
        SamplerConfig(precision="fp8")
    assert mp.default_precision() in ("fp32", "bf16")


def test_keeping_some_activations_gives_the_same_gradient(tiny):
    # checkpointing=auto keeps the last `keep` gradient-carrying calls' activations and recomputes the rest
    params = add_lora(tiny.pipe.unet, LoraSettings())
    grads = []
    for keep in (0, 2, 4):
        images(tiny.pipe, "fp32", grad=GradMode(mode="full", keep=keep)).images.mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
        for p in params:
            p.grad = None
    assert grads[0].abs().sum() > 0
    assert all(torch.allclose(g, grads[0], rtol=1e-5, atol=1e-9) for g in grads[1:])
