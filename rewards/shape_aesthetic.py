"""``shape-aesthetic``: a learned, differentiable "visual quality" reward of the shape world, with its true score.

The AlignProp paper's central experiment fine-tunes on a *learned* aesthetic model on which the base model scores
low. This is that experiment in the shape world (``bench/shapeworld.py``): a hand-defined quality, computed from
pixels alone, and a small CNN trained to predict it (``python -m bench.shapeworld.train_aesthetic``), which is what the
methods train on. The true score is recorded beside the learned one at every evaluation (``true_aesthetic``), so
reward hacking (learned score up, true score not) is visible.

The hand-defined quality (``true_aesthetic``, in [0, 1]; independent of the prompt's count, colour and shape):

1. background = the per-channel median of the image's 1-pixel border; foreground = pixels whose largest channel
   difference from it exceeds ``FOREGROUND`` (0.4);
2. objects = 8-connected foreground components of at least ``MIN_AREA`` (6) pixels (smaller specks are ignored);
   steps 1-2 are those of the shape world's hand reader (``bench.core.shape_reader``, which also reads count,
   colour and shape);
3. each object scores size x centring: size = (bounding-box side - 10) / 4 clipped to [0, 1] (0 up to 10 px,
   the middle of the world's 8-11 px, 1 for 14 px objects that fill their 16 px quadrant with a 1 px margin);
   centring = 1 when the box centre is within 1 px of the centre of its cell of the world's 2x2 grid, falling
   linearly to 0 at 4 px;
4. the image's score is the mean over its objects (0 without objects): "objects large and centred in their cells".

Floor 0 (no object, or objects of at most 10 px); ceiling 1, reached by renders at size 14
(``shapeworld.render(scene, rng, sizes=(14, 15))``). Base ``tiny-shapes`` draws 8-11 px objects jittered in their
cells, so it sits low: ``python -m bench.shapeworld --check`` prints the numbers. The score has zero gradient
almost everywhere (a threshold and connected components), so gradient methods need the learned model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core import shapes as world
from bench.core.errors import UsageError
from bench.core.shape_reader import MIN_AREA, components, foreground
from rewards.base import Reward

ASSET = Path(__file__).resolve().parent / "assets" / "shape_aesthetic.safetensors"
SIZE_FLOOR, SIZE_CEILING = 10, 14
"""Bounding-box sides (px) at which the size term is 0 and 1."""
CENTRE_TOLERANCE, CENTRE_ZERO = 1.0, 4.0
"""Distance (px) of the box centre from its cell centre at which centring starts to fall, and reaches 0."""
CELL_CENTRES = (7.5, 23.5)
"""Pixel coordinates of the centres of the world's 2x2 grid cells (each axis)."""


def objects(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per object (component of >= MIN_AREA px): ``image`` index, ``area``, box ``side``, box centre ``cy``, ``cx``."""
    labels = components(foreground(images))
    b, h, w = labels.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    keep = labels > 0
    index = (torch.arange(b)[:, None, None] * (h * w + 1) + labels)[keep]
    n = b * (h * w + 1)

    def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
        out = torch.zeros(n, dtype=torch.float32)
        return out.scatter_reduce(0, index, values.expand(b, h, w)[keep].float(), how, include_self=False)

    area = torch.zeros(n).index_add_(0, index, torch.ones(len(index)))
    y0, y1, x0, x1 = reduce(ys, "amin"), reduce(ys, "amax"), reduce(xs, "amin"), reduce(xs, "amax")
    chosen = area >= MIN_AREA
    side = torch.maximum(y1 - y0 + 1, x1 - x0 + 1)
    return {"image": torch.arange(n)[chosen] // (h * w + 1), "area": area[chosen], "side": side[chosen],
            "cy": ((y0 + y1) / 2)[chosen], "cx": ((x0 + x1) / 2)[chosen]}


def _to_cell(coord: torch.Tensor) -> torch.Tensor:
    return torch.stack([(coord - c).abs() for c in CELL_CENTRES]).amin(dim=0)


def true_terms(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image [B]: ``true_aesthetic`` and its parts ``size`` and ``centring`` (means over objects), ``objects``."""
    if images.shape[-1] != world.SIZE or images.shape[-2] != world.SIZE:
        images = F.interpolate(images.detach().float(), size=(world.SIZE, world.SIZE), mode="bilinear",
                               antialias=True)
    obj = objects(images.cpu())
    size = ((obj["side"] - SIZE_FLOOR) / (SIZE_CEILING - SIZE_FLOOR)).clamp(0, 1)
    distance = torch.hypot(_to_cell(obj["cy"]), _to_cell(obj["cx"]))
    centring = (1 - (distance - CENTRE_TOLERANCE) / (CENTRE_ZERO - CENTRE_TOLERANCE)).clamp(0, 1)
    b = len(images)
    count = torch.zeros(b).index_add_(0, obj["image"], torch.ones(len(obj["image"])))

    def mean(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(b).index_add_(0, obj["image"], values) / count.clamp(min=1)

    return {"true_aesthetic": mean(size * centring), "size": mean(size), "centring": mean(centring), "objects": count}


def true_aesthetic(images: torch.Tensor) -> torch.Tensor:
    """The hand-defined quality of images [B, 3, H, W] in [0, 1]: [B] in [0, 1] (see the module docstring)."""
    return true_terms(images)["true_aesthetic"]


class AestheticNet(nn.Module):
    """Images [B, 3, 32, 32] in [0, 1] -> predicted ``true_aesthetic`` [B] in [0, 1] (about 50k parameters)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.SiLU(), nn.Linear(64, 1),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != world.SIZE or images.shape[-2] != world.SIZE:
            images = F.interpolate(images, size=(world.SIZE, world.SIZE), mode="bilinear", antialias=True)
        return torch.sigmoid(self.body(images * 2 - 1)[:, 0])


def save_net(net: AestheticNet, path: Path, info: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"heldout": json.dumps(info)})


def load_net(path: Path = ASSET) -> AestheticNet:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UsageError(f"missing {path}; train it with: python -m bench.shapeworld.train_aesthetic")
    net = AestheticNet()
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)


class ShapeAesthetic(Reward):
    """The learned quality model's prediction of ``true_aesthetic``, in [0, 1]; differentiable.

    Evaluation records the true hand-defined score (``true_aesthetic``, with its ``true_size`` and
    ``true_centring`` parts) beside it, and, for shape-world prompts, whether the images still show the prompt
    (``exact_count``, ``color_accuracy``, ``shape_accuracy`` from the ``count`` and ``prompt-match`` classifiers).
    """

    name = "shape-aesthetic"
    differentiable = True
    true_metrics = {"true_aesthetic": True, "true_size": True, "true_centring": True}

    def __init__(self):
        self.net = load_net()

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.net(images.float())

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        terms = true_terms(images)
        metrics = {"true_aesthetic": float(terms["true_aesthetic"].mean()), "true_size": float(terms["size"].mean()),
                   "true_centring": float(terms["centring"].mean())}
        if all(world.parse_caption(p) is not None for p in prompts):
            from rewards.shapeworld import PromptMatch

            metrics.update(PromptMatch().to(images.device).classifier_metrics(images, prompts))
        return metrics
