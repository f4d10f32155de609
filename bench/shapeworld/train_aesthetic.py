"""Train the ``shape-aesthetic`` reward model: a small CNN regressing the hand-defined ``true_aesthetic``.

    python -m bench.shapeworld.train_aesthetic            # about 2 minutes on one CPU thread; writes rewards/assets/

The data are shape-world renders with object sizes 4-14 px (the base world draws 8-11), each with noise, blur and
brightness jitter (``rewards.shapeworld.augment``), and a quarter of them overlaid with a second render so that
objects merge, overlap and crowd; every label is ``true_aesthetic`` of the final image. Seeded: the same command
writes the same weights. The held-out numbers (renders of another seed) are stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core import shapes as world


def training_images(n: int, seed: int) -> torch.Tensor:
    """``n`` images [n, 3, 32, 32]: renders of every scene, sizes 4-14 px, augmented, a quarter overlaid."""
    from rewards.shapeworld import augment

    images, _ = world.dataset(n, seed, world.all_scenes(), sizes=(4, 15))
    overlay, _ = world.dataset(n // 4, seed + 1, world.all_scenes(), sizes=(4, 15))
    gen = torch.Generator().manual_seed(seed)
    drawn = (overlay - overlay[:, :, :1, :1]).abs().amax(dim=1, keepdim=True) > 0.1  # the overlay's objects
    for i, (dy, dx) in enumerate(torch.randint(-8, 9, (len(overlay), 2), generator=gen).tolist()):
        mask, colour = (torch.roll(t[i], (dy, dx), dims=(1, 2)) for t in (drawn, overlay))
        images[i] = torch.where(mask, colour, images[i])
    return augment(images, gen)


def labels(images: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    from rewards.shape_aesthetic import true_aesthetic

    return torch.cat([true_aesthetic(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def train(seed: int = 0, n: int = 40_000, steps: int = 3000, batch: int = 128, lr: float = 2e-3):
    """The trained ``AestheticNet`` and its held-out agreement with the true score."""
    from rewards.compress import spearman
    from rewards.shape_aesthetic import AestheticNet

    torch.manual_seed(seed)
    images = training_images(n, seed)
    y = labels(images)
    held = training_images(2000, seed + 100)
    held_y = labels(held)
    net = AestheticNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randint(n, (batch,), generator=gen)
        loss = F.mse_loss(net(images[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0:
            print(time.strftime("%H:%M:%S"), f"step {step}: mse {loss.item():.4f}", flush=True)
    net.eval()
    with torch.no_grad():
        pred = net(held)
    info = {"renders": len(held), "spearman": round(spearman(pred, held_y), 4),
            "mae": round(float((pred - held_y).abs().mean()), 4), "label_mean": round(float(held_y.mean()), 4),
            "seed": seed, "steps": steps, "n": n}
    return net, info


def main(argv: list[str] | None = None) -> int:
    from rewards.shape_aesthetic import ASSET, save_net

    p = argparse.ArgumentParser(prog="python -m bench.shapeworld.train_aesthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=40_000, help="training images")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (batch 128)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ASSET))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    net, info = train(args.seed, args.n, args.steps)
    save_net(net, Path(args.out), info)
    print(f"held-out renders: {info}; {time.time() - start:.0f} s; saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
