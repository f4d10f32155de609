"""The shared sampler: agreement with diffusers, determinism, and the semantics of every gradient mode."""

import pytest
import torch

from bench.core.lora import LoraSettings, add_lora
from bench.core.ddim import ddim_step
from bench.core.sampler import GradMode, Sampler, SamplerConfig

PROMPTS = ["cat", "dog"]


def lora_tiny(tiny):
    add_lora(tiny.pipe.unet, LoraSettings(rank=2, init_seed=0))
    # B starts at zero; give it values so A also receives gradient and the adapter changes the output
    with torch.no_grad():
        for name, p in tiny.pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    return tiny.pipe


def grads(pipe):
    return {n: p.grad.clone() for n, p in pipe.unet.named_parameters() if p.grad is not None}


def backprop(pipe, grad, steps=4, seed=0):
    pipe.unet.zero_grad(set_to_none=True)
    sampler = Sampler(pipe, SamplerConfig(steps=steps, guidance_scale=3.0, eta=0.0))
    out = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(seed), grad=grad)
    out.images.mean().backward()
    return grads(pipe), out


def test_none_mode_matches_diffusers_pipeline(tiny):
    # Same float32 operations as diffusers' DDIMScheduler.step in a different association order: differences are
    # rounding only (observed ~5e-7); 1e-5 on images in [0, 1] is far below one 8-bit grey level (3.9e-3).
    sampler = Sampler(tiny.pipe, SamplerConfig(steps=6, guidance_scale=5.0, eta=0.0))
    noise = sampler.initial_noise(2, torch.Generator().manual_seed(0))
    ours = sampler.sample(PROMPTS, latents=noise).images
    ref = tiny.pipe(PROMPTS, latents=noise.clone(), num_inference_steps=6, guidance_scale=5.0, eta=0.0,
                    output_type="pt").images
    assert ours.shape == (2, 3, 32, 32)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_eta_one_matches_diffusers_scheduler_step(tiny):
    sampler = Sampler(tiny.pipe, SamplerConfig(steps=5, eta=1.0))
    sampler.set_steps()
    x, eps = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    t = int(sampler.scheduler.timesteps[1])
    mean, std = ddim_step(sampler.scheduler, eps, t, x, eta=1.0)
    noise = torch.randn(2, 4, 16, 16)
    ref = sampler.scheduler.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
    assert torch.allclose(mean + std * noise, ref, atol=1e-5)


def test_clip_sample_matches_diffusers_scheduler_step(tiny):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(tiny.pipe.scheduler.config, clip_sample=True, clip_sample_range=1.0)
    scheduler.set_timesteps(5)
    x, eps = 3 * torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)  # large latents: x0 gets clipped
    t = int(scheduler.timesteps[2])
    mean, std = ddim_step(scheduler, eps, t, x, eta=0.0)
    assert std == 0.0
    assert torch.allclose(mean, scheduler.step(eps, t, x, eta=0.0).prev_sample, atol=1e-5)


def test_same_seed_same_images_and_log_probs(tiny):
    sampler = Sampler(tiny.pipe, SamplerConfig(steps=4, eta=1.0))
    a = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(3))
    b = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(3))
    c = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.images, b.images) and torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(a.images, c.images)
    assert a.latents.shape == (2, 5, 4, 16, 16) and a.log_probs.shape == (2, 4)
    assert torch.isfinite(a.log_probs).all()


def test_eta_zero_has_no_log_probs_and_no_graph(tiny):
    out = Sampler(tiny.pipe, SamplerConfig(steps=3)).sample(PROMPTS)
    assert out.log_probs is None and not out.images.requires_grad


def test_full_mode_grads_only_on_lora_and_checkpointing_agrees(tiny):
    pipe = lora_tiny(tiny)
    with_ckpt, _ = backprop(pipe, GradMode(mode="full", checkpoint=True))
    without, _ = backprop(pipe, GradMode(mode="full", checkpoint=False))
    assert with_ckpt and all("lora_" in n for n in with_ckpt)
    assert all(p.grad is None for n, p in pipe.unet.named_parameters() if "lora_" not in n)
    assert all(p.grad is None for p in pipe.vae.parameters()) and all(p.grad is None for p in pipe.text_encoder.parameters())
    assert sum(g.abs().sum() for g in with_ckpt.values()) > 0
    for name, g in with_ckpt.items():
        assert torch.allclose(g, without[name], rtol=1e-4, atol=1e-9), name


def test_last_k1_equals_replaying_the_last_step(tiny):
    pipe = lora_tiny(tiny)
    got, out = backprop(pipe, GradMode(mode="last-k", k=1, checkpoint=False))
    assert out.grad_steps == [False, False, False, True]
    # replay: take the stored latent before the last step and differentiate that step alone
    pipe.unet.zero_grad(set_to_none=True)
    sampler = Sampler(pipe, SamplerConfig(steps=4, guidance_scale=3.0, eta=0.0))
    t_last = sampler.set_steps()[-1]
    x = out.latents[:, -2]
    mean, _ = ddim_step(sampler.scheduler, sampler.model_output(x, t_last, out.prompt_embeds), int(t_last), x, 0.0)
    sampler.decode(mean).mean().backward()
    want = grads(pipe)
    assert got.keys() == want.keys()
    for name in got:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-10), name


def test_last_k_steps_before_k_carry_no_gradient(tiny):
    pipe = lora_tiny(tiny)
    k1, _ = backprop(pipe, GradMode(mode="last-k", k=1))
    k2, _ = backprop(pipe, GradMode(mode="last-k", k=2))
    full, _ = backprop(pipe, GradMode(mode="full"))
    assert not all(torch.allclose(k1[n], k2[n]) for n in k1)
    assert not all(torch.allclose(k2[n], full[n]) for n in k2)
    last4, _ = backprop(pipe, GradMode(mode="last-k", k=4))
    assert all(torch.allclose(last4[n], full[n], rtol=1e-4, atol=1e-10) for n in full)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_random_k_never_all_zero_for_any_allowed_range(tiny, steps):
    pipe = lora_tiny(tiny)
    for lo in range(1, steps + 1):
        for hi in range(lo, steps + 1):
            for seed in range(2):
                g, out = backprop(pipe, GradMode(mode="random-k", k_range=(lo, hi)), steps=steps, seed=seed)
                k = sum(out.grad_steps)
                assert lo <= k <= hi and out.grad_steps[-k:] == [True] * k
                assert sum(v.abs().sum() for v in g.values()) > 0, (lo, hi, seed)


def test_alignprop_code_mode_keeps_the_latent_path(tiny, monkeypatch):
    pipe = lora_tiny(tiny)
    # Only the first step carries gradient; the later steps' UNet outputs are constants. Through the latent path
    # (DDIM's linear update) the reward still reaches step 0's UNet call: non-zero gradient. Under last-k semantics
    # a detached step would cut the chain.
    monkeypatch.setattr(GradMode, "draw", lambda self, steps, generator: [True] + [False] * (steps - 1))
    g, out = backprop(pipe, GradMode(mode="alignprop-code", code_range=(0, 4)))
    assert out.grad_steps == [True, False, False, False]
    assert sum(v.abs().sum() for v in g.values()) > 0


def test_alignprop_code_all_steps_equals_full(tiny):
    pipe = lora_tiny(tiny)
    code, _ = backprop(pipe, GradMode(mode="alignprop-code", code_range=(0, 0)))
    full, _ = backprop(pipe, GradMode(mode="full"))
    assert all(torch.allclose(code[n], full[n], rtol=1e-4, atol=1e-10) for n in full)


@pytest.mark.parametrize(
    "grad, steps, match",
    [
        (GradMode(mode="last-k", k=5), 4, "k=5"),
        (GradMode(mode="last-k", k=0), 4, "k=0"),
        (GradMode(mode="random-k", k_range=(1, 5)), 4, "k_range"),
        (GradMode(mode="random-k", k_range=(0, 2)), 4, "k_range"),
        (GradMode(mode="alignprop-code", code_range=(0, 50)), 10, "code_range"),
        (GradMode(mode="bogus"), 4, "bogus"),
    ],
)
def test_invalid_grad_modes_name_the_setting(grad, steps, match):
    with pytest.raises(ValueError, match=match):
        grad.validate(steps)


@pytest.mark.parametrize("kwargs, match", [({"steps": 0}, "steps"), ({"steps": -3}, "steps"),
                                           ({"eta": 1.5}, "eta"), ({"eta": -0.1}, "eta"),
                                           ({"guidance_scale": -1.0}, "guidance")])
def test_invalid_sampler_settings_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)
