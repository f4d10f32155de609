"""Which feature space an evaluation's diversity is measured in, and the metrics the training loop records.

``diversity_metrics(reward, images, prompts)`` gives ``{"diversity[<space>]": value}`` (``bench.core.diversity``:
the mean over prompts of the mean pairwise distance between one prompt's samples from different noise), plus the
space's outcome metric where it has one (the shape world's ``attribute_diversity``), or nothing when no evaluation
prompt has two samples (``--eval-n`` below twice the number of evaluation prompts).

The space, first that applies:

1. the reward's own (``Reward.diversity_space``): the shape-world rewards name their classifiers' features
   (``rewards.shapeworld.ClassifierSpace``); a combination takes its first part's; a plug-in may name its own;
2. ``shapeworld-classifier`` when every prompt is a shape-world caption, whatever the reward (e.g.
   ``shape-aesthetic`` or a JPEG reward on ``tiny-shapes``): the images are the world's;
3. ``lpips-alex`` (LPIPS v0.1 over AlexNet, Zhang et al. 2018, the usual perceptual distance for sample
   diversity) when the ``lpips`` package is installed and torchvision's AlexNet weights are already in the torch
   hub cache (nothing is downloaded during a run);
4. ``pixel16-stand-in`` otherwise (``bench.core.diversity.PixelSpace``): the name says it is not perceptual.

The space lives with the reward family because it must suit the images (a classifier of 32 px shapes says nothing
about a photograph), and the arithmetic is one shared function in ``bench.core``, so every space is grouped and
averaged the same way. DreamSim is not wired: its weights are a separate download.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core import shapes as world
from bench.core.diversity import FeatureSpace, PixelSpace, diversity, outcome_diversity, prompt_groups
from rewards.base import Reward

ALEXNET = "alexnet-owt-7be5be79.pth"
"""torchvision's AlexNet weights file, which ``lpips.LPIPS(net="alex")`` loads from the torch hub cache."""
LPIPS_MIN_SIZE = 64
"""Smaller images are upsampled to this side first (AlexNet's pooling needs it; LPIPS was trained on 64 px)."""


class LpipsSpace(FeatureSpace):
    """LPIPS between each pair of one prompt's samples (a learned pairwise distance, so ``distances`` directly)."""

    name = "lpips-alex"

    def __init__(self, net: torch.nn.Module):
        self.net = net

    def distances(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() * 2 - 1  # LPIPS takes [-1, 1]
        if min(x.shape[-2:]) < LPIPS_MIN_SIZE:
            x = F.interpolate(x, size=(LPIPS_MIN_SIZE, LPIPS_MIN_SIZE), mode="bilinear", align_corners=False)
        k = len(x)
        i, j = torch.triu_indices(k, k, offset=1)
        values = self.net.to(x.device)(x[i], x[j]).flatten().double()
        out = torch.zeros(k, k, dtype=torch.float64, device=values.device)
        out[i, j], out[j, i] = values, values
        return out


@functools.lru_cache(maxsize=1)
def lpips_space() -> LpipsSpace | None:
    """LPIPS when its package and AlexNet's weights are here; None otherwise (never downloads)."""
    if importlib.util.find_spec("lpips") is None or not (Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET).is_file():
        return None
    try:
        import lpips

        net = lpips.LPIPS(net="alex", verbose=False)
    except Exception:  # a broken install or cache: the stand-in, named as such, rather than no metric
        return None
    return LpipsSpace(net.eval().requires_grad_(False))


def is_shape_world(prompts: list[str]) -> bool:
    return bool(prompts) and all(world.parse_caption(p) is not None for p in prompts)


def space_for(reward: Reward, prompts: list[str]) -> FeatureSpace:
    """The feature space of this evaluation's diversity (the order in the module docstring)."""
    own = reward.diversity_space()
    if own is not None:
        return own
    if is_shape_world(prompts):
        from rewards.shapeworld import classifier_space

        return classifier_space()
    return lpips_space() or PixelSpace()


@torch.no_grad()
def diversity_metrics(reward: Reward, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """The diversity metrics of one evaluation's images [n, 3, H, W] and their prompts; {} when no prompt has two
    samples."""
    prompts = list(prompts)
    if not prompt_groups(prompts):
        return {}
    space = space_for(reward, prompts)
    out = {f"diversity[{space.name}]": diversity(images, prompts, space)}
    outcomes = space.outcomes(images)
    if outcomes is not None:
        out[space.outcome_metric] = outcome_diversity(outcomes, prompts)
    return out
