"""A tiny text-to-image world of coloured shapes, rendered deterministically from a seed.

Each image is 32x32 RGB: 1-4 objects of one colour and one shape on a plain background, one object per quadrant
(with jitter), captioned like "three red circles on a white background". The world is small enough that a
Stable-Diffusion-architecture model trains on a CPU in under an hour (``python -m bench.shapeworld.train``), and
its ground truth (count, colour, shape) trains the in-domain rewards ``count`` and ``prompt-match``; renders with
larger objects (``sizes``) train ``shape-aesthetic`` (``rewards/shape_aesthetic.py``).

Held-out prompts: for every (colour, shape) pair one count is never shown in training (``held_out``), so the
evaluation prompts combine seen colours and shapes with an unseen count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

SIZE = 32
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 50, 170),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15)}
COUNTS = ("one", "two", "three", "four")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
WORDS = sorted({*COLORS, *SHAPES, *PLURAL.values(), *BACKGROUNDS, *COUNTS, "on", "a", "background"})


@dataclass(frozen=True)
class Scene:
    """What an image shows: the ground truth the rewards are trained on."""

    count: int
    color: str
    shape: str
    background: str

    @property
    def caption(self) -> str:
        noun = self.shape if self.count == 1 else PLURAL[self.shape]
        return f"{COUNTS[self.count - 1]} {self.color} {noun} on a {self.background} background"


def held_out(color: str, shape: str) -> int:
    """The count never trained on for this (colour, shape) pair: a fixed rotation over 1-4."""
    return 1 + (list(COLORS).index(color) + 2 * SHAPES.index(shape)) % 4


def all_scenes() -> list[Scene]:
    return [Scene(n, c, s, b) for n in range(1, 5) for c in COLORS for s in SHAPES for b in BACKGROUNDS]


def train_scenes() -> list[Scene]:
    return [s for s in all_scenes() if s.count != held_out(s.color, s.shape)]


def eval_scenes() -> list[Scene]:
    return [s for s in all_scenes() if s.count == held_out(s.color, s.shape)]


_CAPTION = re.compile(
    r"^(?P<count>one|two|three|four) (?P<color>\w+) (?P<shape>circle|square|triangle)s? on an? (?P<bg>\w+) background$"
)


def parse_caption(text: str) -> Scene | None:
    """The scene a caption asks for, or None when the text is not a caption of this world."""
    m = _CAPTION.match(text.strip().lower())
    if not m or m["color"] not in COLORS or m["bg"] not in BACKGROUNDS:
        return None
    return Scene(COUNTS.index(m["count"]) + 1, m["color"], m["shape"], m["bg"])


def _mask(shape: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a circle, square or apex-up triangle filling the box."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c = size / 2
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= c**2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    return np.abs(xx - c) <= yy / 2  # triangle: half-width grows from 0 at the apex to size/2 at the base


def render(scene: Scene, rng: np.random.Generator, sizes: tuple[int, int] = (8, 12)) -> np.ndarray:
    """uint8 [32, 32, 3]: one object per chosen quadrant, size drawn from ``range(*sizes)`` (default 8-11 px, at
    most 14), jittered inside its quadrant."""
    if not 1 <= sizes[0] < sizes[1] <= 15:
        raise ValueError(f"object sizes {sizes} must satisfy 1 <= low < high <= 15 (a 16 px quadrant, 1 px margin)")
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    color = np.array(COLORS[scene.color]) + rng.integers(-15, 16, size=3)
    for cell in rng.permutation(4)[: scene.count]:
        size = int(rng.integers(*sizes))
        top = (cell // 2) * 16 + int(rng.integers(1, 16 - size))
        left = (cell % 2) * 16 + int(rng.integers(1, 16 - size))
        mask = _mask(scene.shape, size)
        patch = image[top : top + size, left : left + size]
        patch[mask] = np.clip(color, 0, 255)
    return image


def sample_scene(rng: np.random.Generator, scenes: list[Scene]) -> Scene:
    return scenes[int(rng.integers(len(scenes)))]


def dataset(n: int, seed: int, scenes: list[Scene] | None = None,
            sizes: tuple[int, int] = (8, 12)) -> tuple[torch.Tensor, list[Scene]]:
    """``n`` images [n, 3, 32, 32] in [0, 1] with their scenes, deterministic in ``seed`` (``sizes``: see render)."""
    rng = np.random.default_rng(seed)
    scenes = scenes or train_scenes()
    chosen = [sample_scene(rng, scenes) for _ in range(n)]
    images = np.stack([render(s, rng, sizes) for s in chosen])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, chosen
