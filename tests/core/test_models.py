"""Model registry: tiny-random builds offline, round-trips through disk, and bad specs fail with one line."""

import pytest
import torch

from bench.core.errors import UsageError
from bench.core.models import load_model, save_model
from bench.core.sampler import Sampler, SamplerConfig


def test_tiny_random_is_sd_architecture_and_seeded():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    a, b, c = load_model("tiny-random", seed=0), load_model("tiny-random", seed=0), load_model("tiny-random", seed=1)
    pipe = a.pipe
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert a.stand_in and "random" in a.stand_in
    sa, sb, sc = (dict(m.pipe.unet.state_dict()) for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert pipe.tokenizer("a cat").input_ids[0] == pipe.tokenizer.bos_token_id


def test_saved_pipeline_loads_back_offline_with_same_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("tiny-random")
    save_model(model, tmp_path / "tiny")
    again = load_model(str(tmp_path / "tiny"))
    assert again.stand_in == model.stand_in
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    cfg = SamplerConfig(steps=3, guidance_scale=2.0)
    x = Sampler(model.pipe, cfg).sample(["cat"], latents=noise).images
    y = Sampler(again.pipe, cfg).sample(["cat"], latents=noise).images
    assert torch.allclose(x, y, atol=1e-6)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tiny-randm", "unknown model 'tiny-randm'.*tiny-random"),
        ("./no/such/dir", "does not exist"),
        ("nobody-here/no-such-model", "not available offline"),
    ],
)
def test_bad_model_specs_give_one_line_errors(spec, match, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match=match) as info:
        load_model(spec)
    assert "\n" not in str(info.value)


def test_directory_without_model_index_is_refused(tmp_path):
    with pytest.raises(UsageError, match="model_index.json"):
        load_model(str(tmp_path))


def test_sd15_random_has_the_sd15_architecture():
    from accelerate import init_empty_weights

    from bench.core.families.sd import build_sd15_random

    with init_empty_weights():  # shapes only (meta tensors): the architecture without 4 GB of random numbers
        pipe = build_sd15_random()
    assert pipe.unet.config.block_out_channels == (320, 640, 1280, 1280) or list(pipe.unet.config.block_out_channels) == [320, 640, 1280, 1280]
    assert 850e6 < sum(p.numel() for p in pipe.unet.parameters()) < 870e6
    assert pipe.vae.config.sample_size == 512 and pipe.text_encoder.config.num_hidden_layers == 12


def test_build_time_cli(capsys):
    from bench.build_time import main

    assert main(["tiny-random", "--repeats", "1"]) == 0
    assert "tiny-random: built in" in capsys.readouterr().out
    assert main(["tiny-random", "--repeats", "0"]) == 2
    assert main(["no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
