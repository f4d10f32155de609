"""Train ``tiny-shapes-flow``: the shape world as a rectified-flow SD3-architecture model, on a CPU.

    nice python -m bench.shapeworld.train_flow --out bench/core/assets/tiny_shapes_flow --minutes 25 --threads 1

Reuses the trained ``tiny-shapes`` VAE (32x32 -> 4x16x16 latents; its scaling factor, shift 0), so only the
transformer (SD3Transformer2DModel: 4 joint-attention layers of width 64, patch 2) and the two CLIP text encoders
with projection are trained, jointly, on the rectified-flow loss ||v(x_sigma, sigma) - (noise - x_0)||^2 at
sigma = shift(u), u logit-normal (``bench.core.flow.FlowChain.training_pair``, SD3's shift 3), with 10 % empty
captions so that classifier-free guidance works, and an EMA of the transformer. No T5 (``bench.core.builders_flow``).
The pipeline is saved (safetensors) every few minutes, so an interrupted run still leaves a usable model. Seeded.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core import shapes as world
from bench.core.builders import ASSET
from bench.core.builders_flow import SHAPES_FLOW_ASSET, T5_TOKENS, assemble_flow, tiny_flow_components
from bench.core.flow import train_sigma
from bench.shapeworld.train import log

WIDTH, LAYERS, CLIP = 64, 4, 32


def save(out: Path, transformer, vae, first, second) -> None:
    import shutil
    import tempfile

    pipe = assemble_flow(transformer, vae, first, second, t5_tokens=T5_TOKENS)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    pipe.save_pretrained(tmp, safe_serialization=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def encode(first, second, ids1, ids2):
    """(encoder_hidden_states, pooled_projections) as the flow chain builds them (no T5 tokens)."""
    (_, enc1), (_, enc2) = first, second
    o1, o2 = enc1(ids1, output_hidden_states=True), enc2(ids2, output_hidden_states=True)
    return torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1), torch.cat([o1[0], o2[0]], dim=-1)


def train(out: Path, minutes: float, seed: int, batch: int = 64) -> None:
    from diffusers import AutoencoderKL

    transformer, _, first, second = tiny_flow_components(seed, world.WORDS, WIDTH, LAYERS, CLIP)
    vae = AutoencoderKL.from_pretrained(ASSET / "vae").requires_grad_(False)
    vae.register_to_config(shift_factor=0.0)
    images, scenes = world.dataset(60_000, seed + 20)
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i : i + 1000] * 2 - 1).latent_dist.mean
                             for i in range(0, len(images), 1000)]) * vae.config.scaling_factor
    captions = [s.caption for s in scenes]
    tok = {k: t(captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
           for k, (t, _) in (("1", first), ("2", second))}
    empty = {k: t([""], padding="max_length", max_length=16, return_tensors="pt").input_ids[0]
             for k, (t, _) in (("1", first), ("2", second))}
    log(f"latents {tuple(latents.shape)}, {len(set(captions))} training captions")
    params = [p for m in (transformer, first[1], second[1]) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-4)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    start, last_save, step = time.time(), time.time(), 0
    while time.time() - start < minutes * 60:
        idx = torch.randint(len(latents), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < 0.1
        ids1, ids2 = tok["1"][idx].clone(), tok["2"][idx].clone()
        ids1[drop], ids2[drop] = empty["1"], empty["2"]
        x0 = latents[idx]
        sigma = train_sigma(torch.sigmoid(torch.randn(batch, generator=gen)), 3.0)
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        embeds, pooled = encode(first, second, ids1, ids2)
        pred = transformer(hidden_states=s * noise + (1 - s) * x0, timestep=sigma * 1000, encoder_hidden_states=embeds,
                           pooled_projections=pooled, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), transformer.parameters()):
                e.mul_(decay).add_(p, alpha=1 - decay)
        step += 1
        if step % 100 == 0:
            log(f"transformer step {step}: loss {loss.item():.4f}")
        if time.time() - last_save > 300:
            save(out, ema, vae, first, second)
            last_save = time.time()
            log(f"saved {out} at step {step}")
    save(out, ema, vae, first, second)
    log(f"done: {step} transformer steps in {(time.time() - start) / 60:.1f} min; saved {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shapeworld.train_flow", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(SHAPES_FLOW_ASSET))
    p.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget of the transformer stage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(Path(args.out), args.minutes, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
