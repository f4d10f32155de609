"""Differentiable CLIP image preprocessing: tensors in, tensors out, gradients reach the images.

``clip_preprocess(images)`` reproduces ``transformers.CLIPImageProcessor`` with the settings of
``openai/clip-vit-large-patch14`` (and of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, PickScore's processor, which
has the same numbers):

1. resize so the *shortest* side is 224, the other side ``int(224 * long / short)`` (truncated), with bicubic
   resampling; the processor goes through PIL, whose bicubic filter (a = -0.5) widens its support when it shrinks
   an image (antialiasing). Here ``F.interpolate(mode="bicubic", antialias=True)`` applies that same filter;
2. centre-crop 224 x 224 (top = (h - 224) // 2, left = (w - 224) // 2);
3. normalise with CLIP's mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711).

PIL resizes in two passes (one axis, then the other) through a uint8 image, so we resize one axis at a time and
clip in between (see ``_resize``). The remaining difference is PIL's rounding to uint8, which we skip so that
gradients flow. ``tests/test_rewards_preprocess.py`` checks random images (smooth and white noise) of 8 sizes from
32x32 to 512x768, portrait and landscape: max |difference| < 0.02 after normalisation (about one grey level,
1/255/0.26 = 0.015), mean < 0.005. Known exception: when both axes shrink by nearly the same factor Pillow
sometimes runs the vertical pass first (e.g. 1000x333 -> 672x224); then a few pixels of a white-noise image
differ by up to 0.2 (the mean difference stays < 0.005; smooth images are unaffected).

``fit="pad"`` instead reproduces OpenCLIP's ``ResizeMaxSize`` (``resize_longest_max=True``), the evaluation
transform of the official HPS v2 scorer: the *longest* side goes to 224 (``round``-ed), the rest is padded with
black, centred. For square images (every Stable Diffusion image here) both fits give the same pixels.

How this differs from the official AlignProp code (``aesthetic_loss_fn`` / ``hps_loss_fn`` in
mihirp1998/AlignProp ``main.py``): it calls ``torchvision.transforms.Resize(224)`` on the tensor and normalises,
with no crop. That resize is *bilinear*, not bicubic, and not antialiased on tensors (its requirements.txt pins
torchvision 0.15.2), so a 512 x 512 image is subsampled with aliasing; non-square images would reach CLIP at a
non-square size. We follow the models' own processors instead, because the reward models were trained and are
evaluated with them: the training signal is then the score the evaluator reports. On 512 x 512 SD images the two
differ only in the resampling filter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def resized_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """Size with the shortest side at ``shortest`` and the other scaled, truncated as transformers does."""
    if height <= width:
        return shortest, int(shortest * width / height)
    return int(shortest * height / width), shortest


def _kernel_taps(size_in: int, size_out: int) -> int:
    """Taps of PIL's bicubic kernel for one axis: support 2, widened by the shrink factor."""
    return math.ceil(2 * max(size_in / size_out, 1.0)) * 2 + 1


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize with PIL's antialiasing filter, as PIL runs it: one axis at a time, clipped in between.

    PIL resizes in two passes through an 8-bit intermediate image, so the overshoot of the first pass is clipped
    to [0, 255] before the second. Pillow 13 chooses the order itself; we run first the axis whose kernel is wider
    (horizontal on ties), which agreed with Pillow on every square input and on 71 of 74 random size pairs we
    tried. We clip like PIL but do not round to uint8 (that would stop gradients).
    """
    x = images.float()
    (h, w), (new_h, new_w) = x.shape[-2:], size
    passes = [(h, new_w), (new_h, new_w)]
    if _kernel_taps(h, new_h) > _kernel_taps(w, new_w):
        passes = [(new_h, w), (new_h, new_w)]
    for step in passes:
        if tuple(x.shape[-2:]) != step:
            x = F.interpolate(x, size=step, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return x


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def clip_preprocess(images: torch.Tensor, size: int = CLIP_SIZE, mean=CLIP_MEAN, std=CLIP_STD,
                    fit: str = "crop") -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> normalised [B, 3, size, size] (float32), differentiable.

    ``fit="crop"``: CLIPImageProcessor (shortest side to ``size``, centre crop). ``fit="pad"``: OpenCLIP's
    ResizeMaxSize (longest side to ``size``, centred black padding), used by HPS v2.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if fit == "crop":
        new_h, new_w = resized_size(h, w, size)
        x = _resize(images, (new_h, new_w))
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size]
    elif fit == "pad":
        scale = size / max(h, w)
        new_h, new_w = round(h * scale), round(w * scale)
        x = _resize(images, (new_h, new_w))
        pad_h, pad_w = size - new_h, size - new_w
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    else:
        raise ValueError(f"fit must be 'crop' or 'pad', got {fit!r}")
    return _normalise(x, mean, std)
