"""Train ``tiny-shapes-flow``: the shape world as a rectified-flow SD3-architecture model, on a CPU. Resumable.

    nice python -m bench.shapeworld.train_flow --steps 12000 --threads 1    # resumes from --checkpoint if present

Reuses the trained ``tiny-shapes`` VAE (32x32 -> 4x16x16 latents; its scaling factor, shift 0), so only the
transformer (SD3Transformer2DModel: 4 joint-attention layers of width 64, patch 2) and the two CLIP text encoders
with projection are trained, jointly, on the rectified-flow loss ||v(x_sigma, sigma) - (noise - x_0)||^2 at
sigma = shift(u), u logit-normal (``bench.core.families.sd3.FlowChain.training_pair``, SD3's shift 3), with 10 % empty
captions so that classifier-free guidance works, and an EMA of the transformer. No T5 (``bench.core.families.sd3``).

Every few minutes the whole training state (weights, EMA, optimizer, the batch generator, step, CPU seconds) goes to
``--checkpoint`` and the EMA pipeline to ``--out`` (safetensors), both atomically: a killed run resumes where its
last checkpoint stopped and draws the same batches it would have drawn uninterrupted. Seeded.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core import shapes as world
from bench.core.families.sd import ASSET
from bench.core.families.sd3 import SHAPES_FLOW_ASSET, T5_TOKENS, assemble_flow, tiny_flow_components
from bench.core.flow import train_sigma
from bench.shapeworld.train import log

WIDTH, LAYERS, CLIP = 64, 4, 32
DEFAULT_CHECKPOINT = Path("runs/train-flow/checkpoint.pt")


def save(out: Path, transformer, vae, first, second) -> None:
    import shutil
    import tempfile

    pipe = assemble_flow(transformer, vae, first, second, t5_tokens=T5_TOKENS)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    pipe.save_pretrained(tmp, safe_serialization=True)
    from bench.core.files import write_json
    from bench.core.models import MODEL_FACTS

    write_json(tmp / MODEL_FACTS, {"t5_tokens": T5_TOKENS})  # --model of this folder samples as tiny-shapes-flow
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def encode(first, second, ids1, ids2):
    """(encoder_hidden_states, pooled_projections) as the flow chain builds them (no T5 tokens)."""
    (_, enc1), (_, enc2) = first, second
    o1, o2 = enc1(ids1, output_hidden_states=True), enc2(ids2, output_hidden_states=True)
    return torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1), torch.cat([o1[0], o2[0]], dim=-1)


def lr_at(step: int, lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10 % of ``lr`` at ``total``."""
    import math

    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out: Path, steps: int, seed: int, checkpoint: Path, batch: int = 64, lr: float = 1e-3,
          warmup: int = 200, save_every_s: float = 300.0, train_shift: float = 3.0) -> None:
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
    modules = {"transformer": transformer, "text_encoder": first[1], "text_encoder_2": second[1]}
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(transformer).requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    step, cpu_before = 0, 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["config"] != dict(seed=seed, batch=batch, lr=lr, warmup=warmup, steps=steps, train_shift=train_shift):
            raise SystemExit(f"error: {checkpoint} was written with {state['config']}; resume with those settings or "
                             "pass another --checkpoint")
        for name, module in modules.items():
            module.load_state_dict(state[name])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, cpu_before = state["step"], state["cpu_s"]
        log(f"resumed {checkpoint} at step {step} ({cpu_before / 60:.1f} CPU min before)")

    def write_checkpoint() -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {name: m.state_dict() for name, m in modules.items()}
        state.update(ema=ema.state_dict(), optimizer=opt.state_dict(), generator=gen.get_state(), step=step,
                     cpu_s=cpu_before + time.process_time() - cpu0,
                     config=dict(seed=seed, batch=batch, lr=lr, warmup=warmup, steps=steps, train_shift=train_shift))
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)
        save(out, ema, vae, first, second)

    cpu0, last_save = time.process_time(), time.time()
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, warmup, steps)
        idx = torch.randint(len(latents), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < 0.1
        ids1, ids2 = tok["1"][idx].clone(), tok["2"][idx].clone()
        ids1[drop], ids2[drop] = empty["1"], empty["2"]
        x0 = latents[idx]
        sigma = train_sigma(torch.sigmoid(torch.randn(batch, generator=gen)), train_shift)
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
            log(f"transformer step {step}: loss {loss.item():.4f}, lr {opt.param_groups[0]['lr']:.2e}")
        if time.time() - last_save > save_every_s:
            write_checkpoint()
            last_save = time.time()
            log(f"checkpoint {checkpoint} and pipeline {out} at step {step}")
    write_checkpoint()
    cpu = cpu_before + time.process_time() - cpu0
    log(f"done: {step} transformer steps, {cpu / 60:.1f} CPU min in all; saved {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shapeworld.train_flow", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(SHAPES_FLOW_ASSET), help="where the EMA pipeline is saved")
    p.add_argument("--steps", type=int, default=12000, help="transformer steps in all (a resumed run counts on)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                   help="training state, written every 5 minutes and resumed from when present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-shift", type=float, default=3.0,
                   help="shift of the training noise levels sigma = shift(u), u logit-normal (3: SD3's; 1: more weight "
                        "on low noise, where edges are drawn); sampling keeps the scheduler's shift 3")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(Path(args.out), args.steps, args.seed, Path(args.checkpoint), train_shift=args.train_shift)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
