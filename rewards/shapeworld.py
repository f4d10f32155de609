"""In-domain rewards of the shape world (``bench/core/shapes.py``), small CNNs trained on ground truth.

- ``count``: probability that the image shows the prompted number of objects (the AlignProp paper's object-count
  objective, made differentiable by a classifier).
- ``prompt-match``: log p(prompted colour) + log p(prompted shape) + log p(prompted count): the whole prompt.

Both parse the prompt ("three red circles on a white background"); the weights (a few hundred kB, with their
held-out accuracy in the metadata) ship in ``rewards/assets`` and are trained by ``python -m bench.shapeworld.train``.
Their true scores are not these classifiers: the shape world's hand reader (``bench.core.shape_reader``: connected
components, palette colours, bounding-box fill) reads count, colour and shape from the pixels, and evaluation records
what it reads (``true_count``; ``true_color``, ``true_shape``, ``true_match``) beside the classifiers' accuracies.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core import shape_reader
from bench.core import shapes as world
from bench.core.diversity import FeatureSpace
from bench.core.errors import UsageError
from rewards.base import Reward

ASSETS = Path(__file__).resolve().parent / "assets"
COLOR_NAMES, SHAPE_NAMES = list(world.COLORS), list(world.SHAPES)


def _trunk() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(),
    )  # fmt: skip


class CountNet(nn.Module):
    """Images [B, 3, 32, 32] in [0, 1] -> logits over 1-4 objects."""

    heads = {"count": 4}

    def __init__(self):
        super().__init__()
        self.trunk = _trunk()
        self.out = nn.ModuleDict({name: nn.Linear(128, n) for name, n in self.heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.out.items()}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate activations [B, 128] (after the trunk's last ReLU) the heads read."""
        if images.shape[-1] != world.SIZE:
            images = F.interpolate(images, size=(world.SIZE, world.SIZE), mode="bilinear", antialias=True)
        return self.trunk(images * 2 - 1)

    def loss(self, logits: dict, labels: dict) -> torch.Tensor:
        return sum(F.cross_entropy(logits[k], labels[k]) for k in self.heads)

    def accuracy(self, logits: dict, labels: dict) -> dict[str, float]:
        return {k: float((logits[k].argmax(-1) == labels[k]).float().mean()) for k in self.heads}


class AttributeNet(CountNet):
    """Images -> logits over colours and shapes."""

    heads = {"color": len(COLOR_NAMES), "shape": len(SHAPE_NAMES)}


def labels(scenes: list[world.Scene]) -> dict[str, torch.Tensor]:
    return {
        "count": torch.tensor([s.count - 1 for s in scenes]),
        "color": torch.tensor([COLOR_NAMES.index(s.color) for s in scenes]),
        "shape": torch.tensor([SHAPE_NAMES.index(s.shape) for s in scenes]),
    }


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, blur and brightness jitter, so classifiers trained on renders transfer to generated samples."""
    n = len(images)
    noise = torch.randn(images.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.1
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    blur = (torch.rand(n, 1, 1, 1, generator=gen) < 0.4).float()
    shift = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.1
    return (images * (1 - blur) + blurred * blur + noise + shift).clamp(0, 1)


def save_net(net: nn.Module, path: Path, accuracy: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"heldout_accuracy": json.dumps(accuracy)})


def load_net(cls, name: str) -> nn.Module:
    from safetensors.torch import load_file

    path = ASSETS / f"shapeworld_{name}.safetensors"
    if not path.is_file():
        raise UsageError(f"missing {path}; train it with: python -m bench.shapeworld.train --skip-model")
    net = cls()
    net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)


def parse_prompts(prompts: list[str], reward: str) -> list[world.Scene]:
    scenes = [world.parse_caption(p) for p in prompts]
    if any(s is None for s in scenes):
        bad = next(p for p, s in zip(prompts, scenes) if s is None)
        raise ValueError(f"reward {reward!r} needs shape-world prompts such as 'three red circles on a white "
                         f"background' (--prompts shapes-train); got {bad!r}")
    return scenes


class ClassifierSpace(FeatureSpace):
    """The shape world's diversity space (``bench.core.diversity``): the penultimate activations of the ``count``
    and ``prompt-match`` classifiers, each L2-normalised, concatenated and scaled by 1/sqrt(2), so the distance is
    cosine-like (the features are non-negative after ReLU: in [0, sqrt(2)] here, [0, 2] for signed features).

    Why these features: the world varies by which quadrants hold objects, their sizes, positions and colour jitter,
    and these nets were trained to read count, colour and shape from exactly such renders under noise, blur and
    brightness jitter (``augment``), so their features follow the objects and shrug off pixel noise, where a pixel
    distance counts noise as diversity. They are also what the rewards see: a model that collapses to the one texture
    the classifiers like collapses here. LPIPS and DreamSim judge natural images at 64 px and more, not 32 x 32 flat
    shapes, and their weights are not part of an offline install. The limit: what neither classifier needs (the
    background, exact positions within a quadrant) weighs less than in a perceptual metric.
    """

    name = "shapeworld-classifier"
    outcome_metric = "attribute_diversity"

    def __init__(self):
        self.nets = (load_net(CountNet, "count"), load_net(AttributeNet, "prompt_match"))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        parts = [F.normalize(net.to(images.device).features(images.float()), dim=-1) for net in self.nets]
        return torch.cat(parts, dim=-1) / 2**0.5

    def outcomes(self, images: torch.Tensor) -> list[tuple[str, str, int]]:
        """Per image the classifiers' (colour, shape, count)."""
        count, attributes = (net.to(images.device)(images.float()) for net in self.nets)
        return [(COLOR_NAMES[c], SHAPE_NAMES[s], n + 1) for c, s, n in zip(
            attributes["color"].argmax(-1).tolist(), attributes["shape"].argmax(-1).tolist(),
            count["count"].argmax(-1).tolist())]


@functools.lru_cache(maxsize=1)
def classifier_space() -> ClassifierSpace:
    """The shape world's diversity space, loaded once per process."""
    return ClassifierSpace()


class ShapeWorldReward(Reward):
    """Shared by the shape-world rewards: they score captions of the shape world only."""

    def diversity_space(self) -> FeatureSpace:
        return classifier_space()

    @classmethod
    def check_prompts(cls, prompts: list[str]) -> None:
        from bench.core.errors import UsageError

        try:
            parse_prompts(list(prompts), cls.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


class ShapeCount(ShapeWorldReward):
    """p(prompted count | image) from the count classifier, in [0, 1]; differentiable.

    The probability rather than its log: the mean over evaluation images then estimates the exact-count accuracy
    and is not dominated by the one image the classifier finds hopeless (log p of -30 outweighs fifty right images).
    """

    name = "count"
    differentiable = True
    true_metrics = {"true_count": True}

    def __init__(self):
        self.net = load_net(CountNet, "count")

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        target = labels(parse_prompts(prompts, self.name))["count"].to(images.device)
        probs = F.softmax(self.net(images.float())["count"], dim=-1)
        return probs.gather(1, target[:, None])[:, 0]

    def exact(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """1.0 where the classifier's most likely count is the prompted one."""
        target = labels(parse_prompts(prompts, self.name))["count"].to(images.device)
        return (self.net(images.float())["count"].argmax(-1) == target).float()

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """The classifier's exact-count accuracy, and the hand reader's (``true_count``)."""
        truth = shape_reader.hits(images, parse_prompts(prompts, self.name))
        return {"exact_count": float(self.exact(images, prompts).mean()), "true_count": float(truth["count"].mean())}


class PromptMatch(ShapeWorldReward):
    """log p(prompted colour | image) + log p(prompted shape | image) + log p(prompted count | image); differentiable.

    Evaluation records the classifiers' accuracies (``color_accuracy``, ``shape_accuracy``, ``exact_count``) and the
    hand reader's (``true_color``, ``true_shape``, ``true_count``, and ``true_match``: all three right), the true
    score: a model that learns to fool the classifiers raises the first and not the second.
    """

    name = "prompt-match"
    differentiable = True
    true_metrics = {"true_match": True, "true_color": True, "true_shape": True, "true_count": True}

    def __init__(self):
        self.net = load_net(AttributeNet, "prompt_match")
        self.count_net = load_net(CountNet, "count")

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**self.net(images.float()), **self.count_net(images.float())}

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        y = labels(parse_prompts(prompts, self.name))
        logits = self.logits(images)
        total = 0
        for key in ("color", "shape", "count"):
            logp = F.log_softmax(logits[key], dim=-1)
            total = total + logp.gather(1, y[key].to(images.device)[:, None])[:, 0]
        return total

    def hits(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Per image: whether the classifiers' colour / shape / count is the prompted one."""
        y = labels(parse_prompts(prompts, self.name))
        logits = self.logits(images)
        return {k: (logits[k].argmax(-1).cpu() == y[k]).float() for k in ("color", "shape", "count")}

    @torch.no_grad()
    def classifier_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """The classifiers' colour, shape and exact-count accuracy (what the reward sees)."""
        names = {"color": "color_accuracy", "shape": "shape_accuracy", "count": "exact_count"}
        return {names[k]: float(v.mean()) for k, v in self.hits(images, prompts).items()}

    @torch.no_grad()
    def eval_metrics(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        truth = shape_reader.hits(images, parse_prompts(prompts, self.name))
        return {**self.classifier_metrics(images, prompts), **{f"true_{k}": float(v.mean()) for k, v in truth.items()}}
