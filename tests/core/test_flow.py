"""The sd3 family: the flow chain equals diffusers' StableDiffusion3Pipeline, its pieces are the flow formulas, LoRA
reaches joint attention, checkpointing through the transformer gives the same gradients, the backprop methods and
RWR train on it, and the planner refuses what cannot run on it. One tiny-flow-random build is shared (module
fixture); methods that attach adapters get their own copy."""

import copy

import pytest
import torch

from bench.core.models import load_model
from bench.core.sampler import GradMode, Sampler, SamplerConfig
from methods import METHODS
from rewards.toy import MeanBrightness

PROMPTS = ["a cat", "a red dog"]


@pytest.fixture(scope="module")
def flow():
    return load_model("tiny-flow-random")


def fresh(flow):
    return copy.deepcopy(flow)


def test_sampler_equals_diffusers_sd3_pipeline(flow):
    pipe = flow.pipe
    sampler = Sampler(pipe, SamplerConfig(steps=3, guidance_scale=5.0))
    noise = sampler.initial_noise(2, torch.Generator().manual_seed(1))
    ours = sampler.sample(PROMPTS, latents=noise).images
    theirs = pipe(PROMPTS, latents=noise, num_inference_steps=3, guidance_scale=5.0, output_type="pt",
                  max_sequence_length=sampler.chain.t5_tokens).images
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert (ours - theirs).abs().max() <= 1e-4
    # gradient modes do not change the images
    full = sampler.sample(PROMPTS, latents=noise, grad=GradMode("full"))
    assert (full.images.detach() - ours).abs().max() <= 1e-6


def test_chain_pieces_are_the_flow_formulas(flow):
    sampler = Sampler(flow.pipe, SamplerConfig(steps=3, guidance_scale=1.0))
    chain = sampler.chain
    timesteps = sampler.set_steps()
    sigmas = flow.pipe.scheduler.sigmas
    assert torch.allclose(timesteps, sigmas[:-1] * 1000) and float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) == 1.0 and bool((sigmas[1:] < sigmas[:-1]).all())
    g = torch.Generator().manual_seed(0)
    x, v, eps = (torch.randn(2, 4, 16, 16, generator=g) for _ in range(3))
    t = timesteps[1]
    mean, std = chain.step(v, t, x, 0.0)
    assert std == 0 and torch.allclose(mean, x + (sigmas[2] - sigmas[1]) * v)
    assert torch.allclose(chain.predict_x0(v, t, x), x - sigmas[1] * v)
    assert torch.allclose(chain.renoise(x, t, eps), sigmas[1] * eps + (1 - sigmas[1]) * x)
    noisy, tt, target = chain.training_pair(x, torch.Generator().manual_seed(3))
    s = (tt / 1000).view(-1, 1, 1, 1)
    assert torch.allclose(noisy, s * (target + x) + (1 - s) * x, atol=1e-5)  # target = noise - x0
    with pytest.raises(ValueError, match="flow ODE"):
        Sampler(flow.pipe, SamplerConfig(steps=3, eta=1.0))


def test_lora_reaches_joint_attention_and_checkpointing_keeps_gradients(flow):
    from bench.core.lora import LoraSettings, add_lora

    model = fresh(flow)
    chain_targets = Sampler(model.pipe, SamplerConfig()).chain.lora_targets
    params = add_lora(model.pipe.transformer, LoraSettings(target_modules=chain_targets))
    names = [n for n, _ in model.pipe.transformer.named_parameters() if "lora_B" in n]
    assert any(".add_q_proj." in n for n in names) and any(".to_add_out." in n for n in names)
    for p in params:  # B = 0 at start: give it values so every adapter has a gradient path
        p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(p.shape)))
    sampler = Sampler(model.pipe, SamplerConfig(steps=2, guidance_scale=3.0))

    def grads(grad_mode, blocks=False):
        transformer = model.pipe.transformer  # diffusers' own per-block checkpointing (joint-attention blocks)
        transformer.enable_gradient_checkpointing() if blocks else transformer.disable_gradient_checkpointing()
        out = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(0), grad=grad_mode)
        g = torch.autograd.grad(out.images.mean(), params, allow_unused=True)
        return [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]

    plain = grads(GradMode("full", checkpoint=False))
    for other in (grads(GradMode("full", checkpoint=True)), grads(GradMode("full", checkpoint=False), blocks=True)):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, other))
    add = [g for n, g in zip(names, plain[1::2]) if ".add_q_proj." in n]
    assert any(float(g.abs().sum()) > 0 for g in add)  # gradient reaches the text stream's projections


@pytest.mark.parametrize("name, extra", [
    ("alignprop", {}), ("alignprop", {"truncation": "alignprop-code", "code_max": 1}), ("alignprop-full", {}),
    ("draft-k", {}), ("draft-lv", {}), ("refl", {}), ("rwr", {})])
def test_methods_train_the_transformer_adapters(flow, name, extra):
    from bench.core.prompts import load_prompts

    model = fresh(flow)
    cls = METHODS.get(name)
    config = cls.Config(steps=2, batch_size=2, guidance_scale=3.0, eta=0.0, lr=1e-2, **extra)
    method = cls(model.pipe, MeanBrightness(), load_prompts("simple-animals"), config, seed=0)
    before = {n: p.detach().clone() for n, p in method.denoiser.named_parameters() if "lora_B" in n}
    assert any("add_k_proj" in n for n in before)
    metrics = method.step()
    after = dict(method.denoiser.named_parameters())
    assert metrics["samples"] > 0 and any(not torch.equal(before[n], after[n]) for n in before)


def test_planner_refuses_sd_only_methods_and_names_the_family():
    from bench.core.errors import UsageError
    from bench.core.families import family_defaults, family
    from bench.core.models import model_family
    from bench.harness.plan import check_families

    assert [model_family(m) for m in ("tiny-flow-random", "sd35m", "sd35m-random", "tiny-random")] == [
        "sd3", "sd3", "sd3", "sd"]
    with pytest.raises(UsageError, match=r"ddpo, alignprop-trl cannot run on tiny-flow-random \(model family sd3"):
        check_families("tiny-flow-random", {m: METHODS.get(m) for m in ("ddpo", "alignprop-trl", "refl")})
    assert check_families("tiny-random", {"ddpo": METHODS.get("ddpo")}).name == "sd"
    assert family_defaults(family("sd3"))["eta"] == 0.0 and "eta" not in family_defaults(family("sd"))
