"""The flux family: the sampler equals diffusers' FluxPipeline on tiny-flux-random (images and every step's latent,
guidance embedding and true CFG), its chain's pieces are the flow formulas at the resolution's shift, packing is
FluxPipeline's, the models are listed, a saved folder samples as its model, and the hub alias fails in one line
offline. One tiny-flux-random build is shared (module fixture)."""

import pytest
import torch

from bench.core.families.flux import image_ids, pack, unpack
from bench.core.models import load_model, save_model
from bench.core.sampler import GradMode, Sampler, SamplerConfig

PROMPTS = ["a cat", "a red dog"]


@pytest.fixture(scope="module")
def flux():
    return load_model("tiny-flux-random")


def pipeline_run(pipe, sampler, noise_seed: int, **kwargs):
    """FluxPipeline's images and every step's latent (unpacked) for the sampler's settings and noise seed."""
    steps = []

    def record(p, i, t, tensors):
        steps.append(p._unpack_latents(tensors["latents"], 32, 32, p.vae_scale_factor).clone())
        return {}

    images = pipe(PROMPTS, num_inference_steps=sampler.config.steps, guidance_scale=sampler.config.guidance_scale,
                  generator=torch.Generator().manual_seed(noise_seed), output_type="pt", height=32, width=32,
                  max_sequence_length=sampler.chain.t5_tokens, callback_on_step_end=record, **kwargs).images
    return images, torch.stack(steps, dim=1)


@pytest.mark.parametrize("true_cfg", [1.0, 2.0], ids=["guidance-embedding", "true-cfg"])
def test_sampler_equals_flux_pipeline(flux, true_cfg):
    sampler = Sampler(flux.pipe, SamplerConfig(steps=3, guidance_scale=3.5, true_cfg_scale=true_cfg))
    assert sampler.guided == (true_cfg > 1)  # the guidance embedding alone: one pass, no CFG
    ours = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(1))
    extra = {"negative_prompt": "", "true_cfg_scale": true_cfg} if true_cfg > 1 else {}
    images, latents = pipeline_run(flux.pipe, sampler, 1, **extra)
    assert ours.images.shape == images.shape == (2, 3, 32, 32)
    assert (ours.images - images).abs().max() <= 1e-4
    assert (ours.latents[:, 1:] - latents).abs().max() <= 1e-4  # every step's latent; x_T is the same draw
    if true_cfg == 1.0:
        # the embedding is used: another guidance value changes the images
        other = Sampler(flux.pipe, SamplerConfig(steps=3, guidance_scale=1.0))
        assert (other.sample(PROMPTS, generator=torch.Generator().manual_seed(1)).images - images).abs().max() > 1e-3
        full = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(1), grad=GradMode("full"))
        assert (full.images.detach() - images).abs().max() <= 1e-4


def test_packing_is_flux_pipelines(flux):
    pipe = flux.pipe
    x = torch.randn(2, 4, 8, 12)
    assert torch.equal(pack(x), pipe._pack_latents(x, 2, 4, 8, 12))
    assert torch.equal(unpack(pack(x), 8, 12), x)
    ids = pipe._prepare_latent_image_ids(2, 4, 6, "cpu", torch.float32)
    assert torch.equal(image_ids(8, 12, "cpu", torch.float32), ids)


def test_chain_pieces_at_the_resolutions_shift(flux):
    sampler = Sampler(flux.pipe, SamplerConfig(steps=4, guidance_scale=1.0))
    chain = sampler.chain
    assert chain.family == "flux" and sampler.latent_shape == (4, 16, 16)
    timesteps = sampler.set_steps()
    # FluxPipeline's schedule: linspace(1, 1/T, T) under the exponential shift at mu(64 tokens), then 0
    mu = 0.5 + (1.15 - 0.5) * (64 - 256) / (4096 - 256)
    base = torch.linspace(1, 1 / 4, 4, dtype=torch.float64)
    shifted = torch.exp(torch.tensor(mu)) / (torch.exp(torch.tensor(mu)) + 1 / base - 1)
    assert abs(chain.mu - mu) < 1e-12 and torch.allclose(chain.sigmas[:-1].double(), shifted, atol=1e-6)
    assert float(chain.sigmas[-1]) == 0.0 and torch.allclose(timesteps, chain.sigmas[:-1] * 1000)
    assert Sampler(flux.pipe, SamplerConfig(steps=4, resolution=64)).chain.mu > mu  # larger images, larger shift
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 16, 16, generator=g)
    noisy, t, target = chain.training_pair(x0, torch.Generator().manual_seed(3))
    sigma = t / 1000
    u = torch.sigmoid(torch.randn(3, generator=torch.Generator().manual_seed(3)))
    s = torch.exp(torch.tensor(mu)).float()
    assert torch.allclose(sigma, s * u / (1 + (s - 1) * u), atol=1e-6)  # the training shift is exp(mu)
    noise = target + x0
    assert torch.allclose(noisy, sigma.view(-1, 1, 1, 1) * noise + (1 - sigma.view(-1, 1, 1, 1)) * x0, atol=1e-5)
    # re-noising at a chain timestep and the x_0 prediction of the true velocity invert each other
    tt = timesteps[1]
    xt = chain.renoise(x0, tt, noise)
    assert torch.allclose(chain.predict_x0(noise - x0, tt, xt), x0, atol=1e-5)
    assert torch.allclose(xt, chain.sigma(tt) * noise + (1 - chain.sigma(tt)) * x0)
    with pytest.raises(ValueError, match="flux family samples the deterministic flow ODE"):
        Sampler(flux.pipe, SamplerConfig(steps=3, eta=0.7))


def test_listing_shows_the_flux_models(capsys):
    from bench.harness.console import print_listing

    print_listing()
    lines = capsys.readouterr().out.splitlines()
    for name in ("tiny-flux-random", "flux1-dev-random", "flux1-dev"):
        assert any(line.split()[:3] == [name, "family", "flux"] for line in lines), name


@pytest.mark.parametrize("t5", [True, False], ids=["with-t5", "without-t5"])
def test_a_saved_flux_model_samples_as_its_model(flux, tmp_path, t5):
    import copy
    import json

    from bench.core.families.flux import assemble_flux
    from bench.core.models import LoadedModel, model_notes

    model = flux
    if not t5:  # flux1-dev-random's make-up at toy size: no T5 encoder, its tokens fed as zeros
        pipe = copy.deepcopy(flux.pipe)
        pipe = assemble_flux(pipe.transformer, pipe.vae, (pipe.tokenizer, pipe.text_encoder), (None, None),
                             t5_tokens=8, sample_size=16)
        model = LoadedModel(pipe, "no-t5", flux.stand_in)
    folder = save_model(model, tmp_path / "tiny-flux")
    facts = {"t5_tokens": 16 if t5 else 8, "default_sample_size": 16}
    assert json.loads((folder / "bench_model.json").read_text()) == facts
    loaded = load_model(str(folder))
    assert type(loaded.pipe).__name__ == "FluxPipeline" and loaded.stand_in == flux.stand_in
    assert (loaded.pipe.t5_tokens, loaded.pipe.default_sample_size) == tuple(facts.values())
    assert (loaded.pipe.text_encoder_2 is None) == (not t5) and model_notes(str(folder)) == []
    config = SamplerConfig(steps=2, guidance_scale=3.5)
    before = Sampler(model.pipe, config).sample(PROMPTS, generator=torch.Generator().manual_seed(2)).images
    after = Sampler(loaded.pipe, config).sample(PROMPTS, generator=torch.Generator().manual_seed(2)).images
    assert (before - after).abs().max() <= 1e-6
    if not t5:  # without the facts file: diffusers' 512 zero tokens and 1024 px, and the plan says so
        (folder / "bench_model.json").unlink()
        bare = load_model(str(folder)).pipe
        assert not hasattr(bare, "t5_tokens") and bare.default_sample_size == 128
        assert "default 512 zero T5 tokens" in model_notes(str(folder))[0]


def test_the_hub_alias_fails_in_one_line_offline(monkeypatch):
    from bench.core.errors import UsageError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=r"black-forest-labs/FLUX.1-dev'? are not available offline") as info:
        load_model("flux1-dev")
    assert "\n" not in str(info.value)


FLUX_METHODS = ("adjoint-matching", "alignprop", "alignprop-full", "alignprop-k1", "awm", "dance-grpo", "diffusion-nft",
                "draft-k", "draft-lv", "flow-grpo", "flow-grpo-cps", "flow-grpo-guard", "mixgrpo", "refl", "rwr",
                "rwr-sparse")
"""Every method registered for sd3 (``python -m bench.run --list``; checked below)."""


def test_every_sd3_method_runs_on_flux_and_the_rest_are_refused_in_one_line():
    from bench.core.errors import UsageError
    from bench.harness.plan import check_families
    from methods import METHODS

    assert FLUX_METHODS == tuple(n for n in METHODS.names() if "sd3" in METHODS.get(n).families)
    assert check_families("tiny-flux-random", {m: METHODS.get(m) for m in FLUX_METHODS}).name == "flux"
    with pytest.raises(UsageError, match=r"^ddpo, grpo cannot run on tiny-flux-random \(model family flux: [^\n]*; "
                                         r"methods that can: adjoint-matching, alignprop,[^\n]*rwr-sparse$"):
        check_families("tiny-flux-random", {m: METHODS.get(m) for m in ("ddpo", "grpo", "refl")})


FAST = ("alignprop", "awm", "diffusion-nft", "flow-grpo")
"""One of each kind in ``make test``; the others' one-step checks run in ``make test-slow`` (about 40 s of CPU)."""


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in FLUX_METHODS])
def test_one_step_of_every_method_trains_the_flux_adapters(flux, name):
    import copy
    from dataclasses import fields

    from bench.core.families import family, family_defaults
    from bench.core.prompts import load_prompts
    from methods import METHODS
    from rewards.toy import MeanBrightness

    cls = METHODS.get(name)
    small = dict(steps={"awm": 4, "mixgrpo": 3}.get(name, 2), batch_size=2, group_size=2, guidance_scale=3.0, lr=1e-2,
                 window_size=1, loss_steps=2, warmup_steps=0)  # the fewest steps each method's checks allow
    planned = family_defaults(family("flux"), cls.Config)  # what the planner writes: LoRA targets, eta 0 on the ODE
    config = cls.Config(**{k: v for k, v in {**planned, **small}.items() if k in {f.name for f in fields(cls.Config)}})
    method = cls(copy.deepcopy(flux.pipe), MeanBrightness(), load_prompts("simple-animals"), config, seed=0)
    lora = {n: p.detach().clone() for n, p in method.denoiser.named_parameters() if "lora_B" in n}
    assert any("add_k_proj" in n for n in lora)  # the family's targets reach the text stream
    metrics = method.step()
    after = dict(method.denoiser.named_parameters())
    assert any(not torch.equal(lora[n], after[n]) for n in lora), "no adapter weight changed"
    assert metrics["samples"] > 0 and all(v == v for v in metrics.values())


def test_an_exported_flux_lora_loads_with_flux_pipelines_loader_and_changes_the_images(flux, tmp_path):
    import copy

    from bench.core.lora import (DIFFUSERS_WEIGHTS, LoraSettings, adapter_state_dict, add_lora, lora_component,
                                 save_diffusers_lora)

    tuned = copy.deepcopy(flux.pipe)
    sampler = Sampler(tuned, SamplerConfig(steps=2, guidance_scale=3.5))
    settings = LoraSettings(rank=2, alpha=4.0, target_modules=sampler.chain.lora_targets)
    params = add_lora(tuned.transformer, settings)
    for i, p in enumerate(params):  # B = 0 at start: a trained-looking adapter
        p.data.normal_(0, 0.3, generator=torch.Generator().manual_seed(i))
    ours = sampler.sample(PROMPTS, generator=torch.Generator().manual_seed(4)).images
    save_diffusers_lora(tmp_path / DIFFUSERS_WEIGHTS, adapter_state_dict(tuned.transformer), settings,
                        lora_component(tuned))
    fresh = copy.deepcopy(flux.pipe)
    base, _ = pipeline_run(fresh, sampler, 4)
    fresh.load_lora_weights(str(tmp_path), weight_name=DIFFUSERS_WEIGHTS)  # FluxPipeline's own loader
    loaded = sum(".lora_A." in n for n, _ in fresh.transformer.named_parameters())
    assert loaded == sum(".lora_A." in n for n, _ in tuned.transformer.named_parameters()) > 0
    theirs, _ = pipeline_run(fresh, sampler, 4)
    assert (theirs - base).abs().max() > 1e-2  # the adapter changes the images
    assert (theirs - ours).abs().max() <= 1e-4  # into what the run's sampler drew with it


def test_flux1_dev_random_is_flux1_devs_architecture(monkeypatch):
    """Built on the meta device (no weights drawn: 11.9B parameters would take 48 GB here)."""
    from bench.core.families import flux as module
    from bench.core.models import GEOMETRY

    monkeypatch.setattr(module, "fill_all_seeded", lambda modules, seed: None)
    pipe = module.build_flux1_dev_random(fast_init=True)
    cfg = pipe.transformer.config
    assert (cfg.num_layers, cfg.num_single_layers, cfg.num_attention_heads, cfg.attention_head_dim) == (19, 38, 24, 128)
    assert (cfg.joint_attention_dim, cfg.pooled_projection_dim, cfg.guidance_embeds) == (4096, 768, True)
    assert 11.8e9 < sum(p.numel() for p in pipe.transformer.parameters()) < 12.0e9
    assert (pipe.vae.config.latent_channels, pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor) == (
        16, 0.1159, 0.3611)
    assert pipe.text_encoder_2 is None and (pipe.t5_tokens, pipe.default_sample_size) == (512, 128)
    sampler = Sampler(pipe, SamplerConfig(resolution=512))
    assert GEOMETRY["flux1-dev-random"] == (sampler.chain.vae_factor, sampler.chain.down_factor) == (8, 2)
    assert sampler.latent_shape == (16, 64, 64) and Sampler(pipe, SamplerConfig()).image_size == 1024
    assert abs(sampler.chain.mu - (0.5 + 0.65 * (1024 - 256) / 3840)) < 1e-12  # 512 px: 1024 packed tokens
