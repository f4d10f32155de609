"""How well base ``tiny-shapes`` (or ``tiny-shapes-flow``) draws held-out prompts (the shape-world reward classifiers), and how much headroom
``shape-aesthetic`` leaves it."""

from __future__ import annotations

import torch


def check(n_per_prompt: int = 4, steps: int = 20, guidance: float = 2.0, prompts: str = "shapes-eval",
          model: str = "tiny-shapes") -> dict:
    """Base-model samples on ``prompts``: colour, shape and exact-count accuracy by the reward classifiers, and the
    ``shape-aesthetic`` headroom and learned-vs-true agreement (``check_aesthetic``)."""
    from bench.core.evaluate import EvalConfig, evaluate
    from bench.core.models import load_model
    from bench.core.prompts import load_prompts
    from rewards.shapeworld import PromptMatch, ShapeCount

    pipe = load_model(model).pipe
    texts = [p for p in load_prompts(prompts).prompts for _ in range(n_per_prompt)]
    cfg = EvalConfig(n=len(texts), batch_size=32, steps=steps, guidance_scale=guidance)
    _, images = evaluate(pipe, ShapeCount(), texts, cfg)
    return {"samples": len(texts), **PromptMatch().eval_metrics(images, texts),
            **ShapeCount().eval_metrics(images, texts), **check_aesthetic(images)}


def check_aesthetic(samples: torch.Tensor, n_renders: int = 1000, seed: int = 7) -> dict:
    """``shape-aesthetic`` on base samples (headroom) and its learned-vs-true agreement on samples and renders.

    Floor 0 and ceiling 1 for both scores; the ceiling is shown reached by renders with 14 px objects. Held-out
    renders are the training distribution (``bench.shapeworld.train_aesthetic``) drawn from seeds training never uses.
    """
    from bench.shapeworld.train_aesthetic import training_images
    from rewards.compress import spearman
    from rewards.shape_aesthetic import ShapeAesthetic, true_aesthetic

    from bench.core.shapes import all_scenes, dataset

    net = ShapeAesthetic()
    ceiling, _ = dataset(240, seed, all_scenes(), sizes=(14, 15))
    renders = training_images(n_renders, seed)
    out = {"aesthetic floor / ceiling (both scores)": "0 / 1; base samples' means below are the fraction of it used"}
    with torch.no_grad():
        for name, images in (("base samples", samples), ("held-out renders", renders), ("14 px renders", ceiling)):
            learned, true = net(images, [""] * len(images)), true_aesthetic(images)
            out[f"aesthetic {name}: learned"] = float(learned.mean())
            out[f"aesthetic {name}: true"] = float(true.mean())
            if name != "14 px renders":
                out[f"aesthetic {name}: Spearman learned vs true"] = spearman(learned, true)
                out[f"aesthetic {name}: mean |learned - true|"] = float((learned - true).abs().mean())
    return out
