"""``jpeg-compressibility`` / ``jpeg-incompressibility`` (aliases ``compressibility`` / ``incompressibility``).

The true score is DDPO's (``rewards.jpeg``: PIL JPEG at quality 95, kB); evaluation always reports it. The
surrogate, for gradient methods only, is an analytic rate estimate of the same codec and needs no weights:
RGB -> YCbCr (JPEG's matrix), chroma averaged 2x2 (PIL's default 4:2:0), 8x8 block DCT-II, division by the
quality-95 quantisation tables (IJG scaling of the standard tables), DC coefficients differenced from the previous
block (raster order; JPEG uses MCU order), and bits ~ sum log2(1 + |quantised coefficient|), in kB.

``python -m rewards.compress --check`` prints its Spearman rank correlation with the true JPEG size on held-out
images: 0.996 (64x64), 1.000 (256x256) and 1.000 (512x512) on 96 procedural images each (smooth fields or blocks
mixed with noise), and about 0.9 on 64 tiny-random samples (32x32, similar images whose JPEG sizes differ by a few
bytes, many tied: 0.914 with the default seed, 0.87-0.91 over four seeds).

Gradient methods train on the surrogate and name it (``surrogate`` in ``result.json`` and ``runs.csv``:
``SURROGATE``); evaluation and the score-function methods (DDPO, RWR) use the true JPEG size. Every evaluation
records both sizes, ``true_jpeg_kb`` (PIL) and ``surrogate_jpeg_kb``.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from rewards.jpeg import QUALITY, JpegCompressibility, JpegIncompressibility, jpeg_kb

LUMA = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float32).view(8, 8)  # fmt: skip
CHROMA = torch.tensor([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=torch.float32).view(8, 8)  # fmt: skip


def quant_table(base: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """IJG quality scaling of a standard table (libjpeg's jpeg_quality_scaling)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.clamp(torch.floor((base * scale + 50) / 100), min=1)


def dct_matrix(n: int = 8) -> torch.Tensor:
    k, i = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


def _blocks(channel: torch.Tensor) -> torch.Tensor:
    """[B, H, W] -> [B, nblocks, 8, 8], edge-padded to multiples of 8 as JPEG does."""
    h, w = channel.shape[-2:]
    pad = (0, (-w) % 8, 0, (-h) % 8)
    channel = F.pad(channel[:, None], pad, mode="replicate")[:, 0]
    b, hh, ww = channel.shape
    return channel.view(b, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4).reshape(b, -1, 8, 8)


def jpeg_rate_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """Differentiable estimate of the JPEG size in kB of images [B, 3, H, W] in [0, 1]."""
    x = images.float() * 255
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    chroma = [F.avg_pool2d(c[:, None], 2, ceil_mode=True)[:, 0] for c in (cb, cr)]
    d = dct_matrix().to(x)
    bits = 0
    for channel, table in ((y, LUMA), (chroma[0], CHROMA), (chroma[1], CHROMA)):
        q = (d @ (_blocks(channel) - 128) @ d.T) / quant_table(table, quality).to(x)
        dc = q[:, :, 0, 0]
        dc_diff = torch.cat([dc[:, :1], dc[:, 1:] - dc[:, :-1]], dim=1)  # JPEG codes each DC minus the previous one
        ac = q.flatten(2)[:, :, 1:]
        bits = bits + _bits(ac).sum(dim=(1, 2)) + _bits(dc_diff).sum(dim=1)
    return bits / 8 / 1000


def _bits(quantised: torch.Tensor) -> torch.Tensor:
    """Rate model of one quantised coefficient: log2(1 + |value|) bits (smooth, zero at zero)."""
    return torch.log2(1 + quantised.abs())


SURROGATE = "jpeg-rate surrogate (rewards.compress.jpeg_rate_kb)"


def size_metrics(images: torch.Tensor) -> dict[str, float]:
    """Evaluation's sizes: the true one (``true_jpeg_kb``, PIL) beside the surrogate's (``surrogate_jpeg_kb``, what a
    gradient method trains on), so a surrogate that parts from the codec shows."""
    return {"true_jpeg_kb": float(jpeg_kb(images).mean()), "surrogate_jpeg_kb": float(jpeg_rate_kb(images).mean())}


class Compressibility(JpegCompressibility):
    """Negated JPEG kB (true score), with ``-jpeg_rate_kb`` as the differentiable surrogate."""

    name = "jpeg-compressibility"
    surrogate_name = SURROGATE

    def surrogate(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return -jpeg_rate_kb(images)

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        return size_metrics(images)


class Incompressibility(JpegIncompressibility):
    """JPEG kB (true score), with ``jpeg_rate_kb`` as the differentiable surrogate."""

    name = "jpeg-incompressibility"
    surrogate_name = SURROGATE

    def surrogate(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return jpeg_rate_kb(images)

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        return size_metrics(images)


def held_out_images(n: int = 96, seed: int = 1, size: int = 64) -> torch.Tensor:
    """``n`` seeded images of widely varying detail: smooth fields or blocks mixed with noise in varying amounts."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        size_hw = (size, size)
        coarse = torch.rand(1, 3, 2 + i % 7, 2 + i % 5, generator=g)
        smooth = F.interpolate(coarse, size=size_hw, mode="bicubic", align_corners=False)
        noise = torch.rand(1, 3, *size_hw, generator=g)
        amount = (i % 12) / 11 * torch.rand(1, generator=g).item()
        blocks = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=size_hw, mode="nearest")
        mix = (1 - amount) * (smooth if i % 2 else blocks) + amount * noise
        out.append(mix.clamp(0, 1))
    return torch.cat(out)


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a 1-D tensor, ties given their average rank (as scipy.stats.rankdata does, minus 1)."""
    values = values.double()
    order = torch.argsort(values)
    sorted_values = values[order]
    result = torch.empty_like(values)
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            result[order[start:end]] = (start + end - 1) / 2
            start = end
    return result


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    ra, rb = ranks(a.flatten()), ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def check(seed: int = 1) -> dict[str, float]:
    """Spearman rho between the surrogate and PIL's JPEG size on images not used to design the surrogate."""
    from bench.core.models import load_model
    from bench.core.sampler import Sampler, SamplerConfig

    rho = {}
    for size in (64, 256, 512):
        images = held_out_images(96, seed=seed, size=size)
        rho[f"procedural, 96 images {size}x{size}"] = spearman(jpeg_rate_kb(images), jpeg_kb(images))
    pipe = load_model("tiny-random", seed=seed).pipe
    samples = Sampler(pipe, SamplerConfig(steps=4, guidance_scale=3.0, eta=1.0)).sample(
        ["a cat", "a dog", "a red car", "a tree"] * 16, generator=torch.Generator().manual_seed(seed + 2)).images
    rho[f"tiny-random samples, {len(samples)} images {samples.shape[-1]}x{samples.shape[-1]}"] = spearman(
        jpeg_rate_kb(samples), jpeg_kb(samples))
    return rho


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewards.compress", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the surrogate's Spearman rho vs JPEG size")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out images")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 0
    torch.set_num_threads(1)
    for name, value in check(args.seed).items():
        print(f"Spearman rho, surrogate vs JPEG kB (quality {QUALITY}), {name}: {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
