"""The shape world read back from pixels by hand: count, colour and shape of every object, with no learned part.

The world (``bench.core.shapes``) draws 1-4 flat-coloured objects of one colour and one shape on a plain background,
one per quadrant, at least 2 px apart. What an image shows can therefore be recovered by rules, which judge a
learned reward without sharing its mistakes (the ``prompt-match`` task's true score, ``rewards.shapeworld``):

1. background = the per-channel median of the 1-pixel border; foreground = pixels whose largest channel difference
   from it exceeds ``FOREGROUND``;
2. objects = 8-connected foreground components of at least ``MIN_AREA`` pixels (smaller specks are ignored);
   the count is their number;
3. an object's colour = the palette colour (``shapes.COLORS``) nearest to the per-channel median of its pixels;
4. an object's shape, from where it puts its colour in its bounding box. Each pixel's coverage is how much of the
   object's colour it carries (its difference from the background projected on the object's, in [0, 1]), which
   blur spreads but does not remove. An apex-up triangle has its centre of coverage low in the box (0.65-0.68 of
   the height on renders, 0.56-0.67 after a 3 x 3 blur), a square or a circle at the middle (0.5; 0.45-0.55
   blurred): cut ``LOW_CENTRE`` = 0.56. Of the others, a square covers the four corners of its box (1 on renders,
   0.44 typically after the blur) and a circle leaves them bare (0; 0.11 typically blurred): cut ``CORNERS`` = 0.25,
   the mean coverage of the four corner pixels. Fill ratios alone (1, pi/4, 1/2) fail here: the models' squares
   come out with rounded corners and fill their boxes no more than circles do.

An image shows its caption's colour (shape) when it has an object and every object reads that colour (shape), and
its count when the number of objects is the caption's. On renders the reader is exact (every count, colour, shape,
background and object size 4-14 px; ``tests/rewards/test_tasks_true_scores.py``); under the classifiers' training
augmentation (noise, blur, brightness) it stays exact on count and colour and reads 94 % of shapes right. Where a
model's samples leave the world it can be wrong: objects drawn touching merge into one (the count one low), a square
with rounded corners can read as a circle, a background that is not plain breaks the foreground (docs/rewards.md,
"prompt-match: the hand reader", has the measured agreement with the classifiers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.core import shapes as world

FOREGROUND = 0.4
"""Largest channel difference from the background (in [0, 1]) above which a pixel is foreground."""
MIN_AREA = 6
"""Components smaller than this (pixels) are specks, not objects."""
LOW_CENTRE = 0.56
"""Centre of coverage (0 at the top of the bounding box, 1 at the bottom) at and above which an object is a
triangle (a symmetric shape's is 0.5, a rendered triangle's 0.65-0.68)."""
CORNERS = 0.25
"""Mean coverage of the bounding box's four corner pixels at and above which a symmetric object is a square."""


def background(images: torch.Tensor) -> torch.Tensor:
    """[B, 3]: the per-channel median of each image's 1-pixel border."""
    x = images.detach().float()
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)  # [B, 3, perimeter]
    return border.median(dim=2).values


def foreground(images: torch.Tensor) -> torch.Tensor:
    """Bool [B, H, W]: pixels far from the background colour (the median of the 1-pixel border)."""
    return (images.detach().float() - background(images)[:, :, None, None]).abs().amax(dim=1) > FOREGROUND


def components(mask: torch.Tensor) -> torch.Tensor:
    """Long [B, H, W]: 8-connected component labels (0 = background), by max-label propagation."""
    b, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w).expand(b, 1, h, w)
    m = mask[:, None].float()
    labels = ids * m
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * m
        if torch.equal(grown, labels):
            return labels[:, 0].long()
        labels = grown


@dataclass(frozen=True)
class Blob:
    """One object as read: its colour and shape names, area (px), centre of coverage and corner coverage."""

    color: str
    shape: str
    area: int
    centre: float
    corners: float


@dataclass(frozen=True)
class Reading:
    """What one image shows, read by hand."""

    objects: tuple[Blob, ...]
    background: str

    @property
    def count(self) -> int:
        return len(self.objects)

    def hits(self, scene: world.Scene) -> dict[str, bool]:
        """Whether the image shows the scene's colour, shape and count, and all three (``match``)."""
        out = {"color": self.count > 0 and all(o.color == scene.color for o in self.objects),
               "shape": self.count > 0 and all(o.shape == scene.shape for o in self.objects),
               "count": self.count == scene.count}
        return {**out, "match": all(out.values())}


def nearest(rgb: torch.Tensor, palette: dict[str, tuple[int, int, int]]) -> str:
    """The name of the palette colour (0-255 triples) nearest to ``rgb`` (3 values in [0, 1])."""
    names = list(palette)
    table = torch.tensor([palette[n] for n in names], dtype=torch.float32) / 255
    return names[int((table - rgb.float()).norm(dim=1).argmin())]


def shape_of(centre: float, corners: float) -> str:
    """Triangle when the centre of coverage is low in the box, else square when the box's corners are covered, else
    circle (module docstring, step 4)."""
    return "triangle" if centre >= LOW_CENTRE else "square" if corners >= CORNERS else "circle"


def blob(image: torch.Tensor, where: torch.Tensor, back: torch.Tensor) -> Blob:
    """Read the object at the pixels ``where`` (bool [H, W]) of ``image`` [3, H, W] on background colour ``back``."""
    rgb = image[:, where].median(dim=1).values
    direction = rgb - back
    along = ((image - back[:, None, None]) * direction[:, None, None]).sum(0)
    coverage = (along / direction.square().sum().clamp(min=1e-6)).clamp(0, 1)
    ys, xs = where.nonzero(as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    inside = (coverage * where)[y0 : y1 + 1, x0 : x1 + 1]
    rows = torch.arange(y1 - y0 + 1, dtype=torch.float32)
    centre = float((inside.sum(1) * rows).sum() / inside.sum().clamp(min=1e-6) / max(y1 - y0, 1))
    corners = float(coverage[[y0, y0, y1, y1], [x0, x1, x0, x1]].mean())
    return Blob(nearest(rgb, world.COLORS), shape_of(centre, corners), int(where.sum()), centre, corners)


def read(images: torch.Tensor) -> list[Reading]:
    """The objects of images [B, 3, H, W] in [0, 1] (resized to the world's 32 x 32 first, as the rewards do)."""
    x = images.detach().float().cpu()
    if x.shape[-2:] != (world.SIZE, world.SIZE):
        x = F.interpolate(x, size=(world.SIZE, world.SIZE), mode="bilinear", antialias=True)
    labels, backs = components(foreground(x)), background(x)
    readings = []
    for image, label, back in zip(x, labels, backs):
        wheres = [label == value for value in label.unique().tolist() if value != 0]
        blobs = tuple(blob(image, where, back) for where in wheres if int(where.sum()) >= MIN_AREA)
        readings.append(Reading(blobs, nearest(back, world.BACKGROUNDS)))
    return readings


def hits(images: torch.Tensor, scenes: list[world.Scene]) -> dict[str, torch.Tensor]:
    """Per image (float 0/1): whether it shows its scene's ``color``, ``shape``, ``count``, and all three
    (``match``)."""
    per_image = [reading.hits(scene) for reading, scene in zip(read(images), scenes)]
    return {key: torch.tensor([float(h[key]) for h in per_image]) for key in ("color", "shape", "count", "match")}
