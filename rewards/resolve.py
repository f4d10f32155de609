"""What a reward name means on the chosen model: on a shape-world model (``tiny-shapes``, ``tiny-shapes-flow``, the
models trained on ``bench/core/shapes.py``'s world) ``aesthetic`` is the world's aesthetic, ``shape-aesthetic``.

LAION's aesthetic predictor judges photographs: on 32 x 32 images of coloured shapes its score means nothing, and its
weights (CLIP ViT-L/14, 1.7 GB) are rarely on an offline machine. So ``python -m bench.run --methods alignprop,ddpo
--reward aesthetic`` on the embedded default model trains and evaluates on ``shape-aesthetic``, says so in one line,
and records ``shape-aesthetic`` (run ids, ``runs.csv``, the manifest, which also keeps the name asked for). On every
other model ``aesthetic`` stays LAION's predictor; ``laion-aesthetic`` (or ``--reward-weights``) means LAION's
predictor on any model.
"""

from __future__ import annotations

from pathlib import Path

SHAPE_WORLD_MODELS = ("tiny-shapes", "tiny-shapes-flow")
"""The built-in models trained on the shape world."""
WORLD_MEANING = {"aesthetic": "shape-aesthetic"}
"""Reward names that mean the shape world's own reward on a shape-world model."""


def is_shape_world_model(model: str | None) -> bool:
    """A built-in shape-world model, or the folder of one (its shipped asset)."""
    if not model:
        return False
    if model in SHAPE_WORLD_MODELS:
        return True
    if not Path(model).is_dir():
        return False
    from bench.core.families.sd import ASSET
    from bench.core.families.sd3 import SHAPES_FLOW_ASSET

    try:
        return Path(model).resolve() in (ASSET.resolve(), SHAPES_FLOW_ASSET.resolve())
    except (OSError, ValueError):
        return False


def reward_for_model(spec: str, model: str | None, weights: str | None = None) -> str:
    """``spec`` with each term that means the world's own reward on ``model`` replaced (``aesthetic`` ->
    ``shape-aesthetic`` on a shape-world model, also inside a weighted combination); unchanged elsewhere, and when an
    explicit ``--reward-weights`` file asks for LAION's predictor."""
    if not spec or weights or not is_shape_world_model(model):
        return spec
    parts = []
    for raw in spec.split("+"):
        weight, star, name = raw.rpartition("*")
        meaning = WORLD_MEANING.get(name.strip())
        parts.append(f"{weight}{star}{meaning}" if meaning else raw)
    return "+".join(parts)
