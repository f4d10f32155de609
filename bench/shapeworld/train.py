"""Train the ``tiny-shapes`` pipeline and the shape-world reward classifiers on a CPU.

    python -m bench.shapeworld.train --out bench/core/assets/tiny_shapes --minutes 40 --threads 1

Stages (all seeded): (1) the reward classifiers ``count`` and ``prompt-match`` on rendered ground truth with
augmentation; (2) an AutoencoderKL (32x32 -> 4x16x16 latents) on reconstruction + a small KL term; (3) the UNet and
the CLIP text encoder jointly on the epsilon loss of the SD 1.x noise schedule, with 10 % empty captions so that
classifier-free guidance works, and an EMA of the UNet weights. The pipeline is saved (safetensors) every few minutes,
so an interrupted run still leaves a usable model.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core import shapes as world
from bench.core.families.sd import ASSET

REWARD_ASSETS = Path(__file__).resolve().parents[2] / "rewards" / "assets"


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------------------------------------ rewards
def train_classifiers(seed: int, steps: int = 1500) -> None:
    from rewards.shapeworld import AttributeNet, CountNet, augment, labels, save_net

    torch.manual_seed(seed)
    images, scenes = world.dataset(40_000, seed, world.all_scenes())
    held_images, held_scenes = world.dataset(2_000, seed + 1, world.all_scenes())
    y, held_y = labels(scenes), labels(held_scenes)
    for net, name in ((CountNet(), "count"), (AttributeNet(), "prompt_match")):
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        for step in range(steps):
            idx = torch.randint(len(images), (128,), generator=gen)
            loss = net.loss(net(augment(images[idx], gen)), {k: v[idx] for k, v in y.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            acc = net.accuracy(net(augment(held_images, torch.Generator().manual_seed(7))), held_y)
        log(f"classifier {name}: held-out accuracy {acc}")
        save_net(net, REWARD_ASSETS / f"shapeworld_{name}.safetensors", acc)


# ------------------------------------------------------------------------------------------------ model
def build_components(seed: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bench.core.families.parts import load_tokenizer

    tokenizer = load_tokenizer(world.WORDS, max_length=16)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=32,
        layers_per_block=1,
    )
    # Three levels (16x16, 8x8, 4x4); attention only below 16x16 keeps a training step at ~0.6 s on one core.
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    return tokenizer, vae, unet, text_encoder


def train_vae(vae, seed: int, steps: int) -> torch.Tensor:
    images, _ = world.dataset(20_000, seed + 10)
    x = images * 2 - 1
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        batch = x[torch.randint(len(x), (64,), generator=gen)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        kl = posterior.kl().mean() / batch[0].numel()
        loss = F.mse_loss(recon, batch) + 1e-3 * kl + 0.5 * F.l1_loss(recon, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            log(f"vae step {step}: loss {loss.item():.4f}")
    vae.eval()
    return x


def save_pipeline(out: Path, tokenizer, vae, unet, text_encoder) -> None:
    import shutil
    import tempfile

    from bench.core.families.sd import assemble

    pipe = assemble(vae, text_encoder, tokenizer, unet)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    pipe.save_pretrained(tmp, safe_serialization=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def train(out: Path, minutes: float, seed: int, vae_steps: int) -> None:
    from diffusers import DDIMScheduler

    from bench.core.families.sd import SD_SCHEDULER

    tokenizer, vae, unet, text_encoder = build_components(seed)
    log("training the VAE")
    x = train_vae(vae, seed, vae_steps)
    with torch.no_grad():
        std = torch.cat([vae.encode(x[i : i + 512]).latent_dist.mean for i in range(0, 4096, 512)]).std()
    vae.register_to_config(scaling_factor=float(1 / std))
    log(f"latent std {std:.3f} -> scaling_factor {1 / std:.3f}")

    images, scenes = world.dataset(60_000, seed + 20)
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i : i + 1000] * 2 - 1).latent_dist.mean for i in range(0, len(images), 1000)])
    latents = latents * vae.config.scaling_factor
    captions = [s.caption for s in scenes]
    token_ids = tokenizer(captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    empty_ids = tokenizer([""], padding="max_length", max_length=16, return_tensors="pt").input_ids
    log(f"latents {tuple(latents.shape)}, {len(set(captions))} training captions")

    sched = DDIMScheduler(**SD_SCHEDULER)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-4)
    ema = copy.deepcopy(unet).requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    start, last_save, step = time.time(), time.time(), 0
    while time.time() - start < minutes * 60:
        idx = torch.randint(len(latents), (64,), generator=gen)
        ids = token_ids[idx].clone()
        ids[torch.rand(len(idx), generator=gen) < 0.1] = empty_ids[0]
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (len(idx),), generator=gen)
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.mul_(decay).add_(p, alpha=1 - decay)
        step += 1
        if step % 100 == 0:
            log(f"unet step {step}: loss {loss.item():.4f}")
        if time.time() - last_save > 300:
            save_pipeline(out, tokenizer, vae, ema, text_encoder)
            last_save = time.time()
            log(f"saved {out} at step {step}")
    save_pipeline(out, tokenizer, vae, ema, text_encoder)
    log(f"done: {step} UNet steps in {(time.time() - start) / 60:.1f} min; saved {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shapeworld.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ASSET))
    p.add_argument("--minutes", type=float, default=40.0, help="wall-clock budget of the UNet stage")
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-classifiers", action="store_true")
    p.add_argument("--skip-model", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.skip_classifiers:
        train_classifiers(args.seed, args.classifier_steps)
    if not args.skip_model:
        train(Path(args.out), args.minutes, args.seed, args.vae_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
