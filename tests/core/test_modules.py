"""``bench.core.modules``: the remembered device, dtype and adapter toggles equal diffusers' own, also after the
model is cast, moved or given an adapter."""

import torch

from bench.core.lora import LoraSettings, add_lora
from bench.core.modules import device_dtype, set_adapters, tuner_layers
from bench.core.sampler import Sampler, SamplerConfig


def test_device_and_dtype_are_diffusers_own_and_follow_a_cast(tiny):
    unet, vae = tiny.pipe.unet, tiny.pipe.vae
    for module in (unet, vae):
        assert device_dtype(module) == (module.device, module.dtype)
    unet.to(torch.bfloat16)  # after the first read: the cast is noticed
    assert device_dtype(unet) == (unet.device, torch.bfloat16)
    add_lora(unet, LoraSettings(rank=2))  # float32 adapter weights do not change the model's dtype
    assert device_dtype(unet) == (unet.device, unet.dtype) == (torch.device("cpu"), torch.bfloat16)
    unet.to(torch.float32)
    assert device_dtype(unet) == (unet.device, unet.dtype) == (torch.device("cpu"), torch.float32)


def test_adapter_toggles_match_diffusers_and_the_sampler_is_unchanged(tiny):
    pipe = tiny.pipe
    add_lora(pipe.unet, LoraSettings(rank=2, init_seed=0))
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    sampler = Sampler(pipe, SamplerConfig(steps=2, guidance_scale=3.0))

    def images():
        return sampler.sample(["cat"], generator=torch.Generator().manual_seed(0)).images

    def state():
        return [(type(m).__name__, m.disable_adapters, [p.requires_grad for p in m.parameters()])
                for m in tuner_layers(pipe.unet)]

    adapted = images()
    assert len(tuner_layers(pipe.unet)) > 0
    pipe.unet.disable_adapters()
    base, theirs = images(), state()
    pipe.unet.enable_adapters()
    assert torch.equal(images(), adapted)
    set_adapters(pipe.unet, False)
    assert state() == theirs and torch.equal(images(), base) and not torch.equal(base, adapted)
    set_adapters(pipe.unet, True)
    pipe.unet.disable_adapters()
    pipe.unet.enable_adapters()
    theirs = state()
    set_adapters(pipe.unet, False)
    set_adapters(pipe.unet, True)
    assert state() == theirs and torch.equal(images(), adapted)
