"""How well base ``tiny-shapes`` (or ``tiny-shapes-flow``) draws held-out prompts (the shape-world reward classifiers), and how much headroom
``shape-aesthetic`` leaves it; how far each task's true score agrees with the reward it trains on (the hand reader vs
``prompt-match``, PIL's JPEG size vs the surrogate)."""

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
            **ShapeCount().eval_metrics(images, texts), **check_aesthetic(images),
            **check_prompt_match(images, texts), **check_jpeg(images)}


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


def check_prompt_match(samples: torch.Tensor, prompts: list[str], n_renders: int = 2000, seed: int = 7) -> dict:
    """The ``prompt-match`` task's true score (``bench.core.shape_reader``) against the classifiers it trains on.

    Renders of every scene (``n_renders``, captioned with their scene, and again with the colour, shape or count
    changed): the reader's accuracy, which should be 1 both ways. Base samples: per attribute, how often the reader
    and the classifiers agree on right or wrong, and Spearman's rho between the reward and the number of the three
    attributes the reader finds right.
    """
    from dataclasses import replace

    from bench.core import shape_reader
    from bench.core.shapes import COLORS, SHAPES, all_scenes, dataset, parse_caption
    from rewards.compress import spearman
    from rewards.shapeworld import PromptMatch

    reward, colors, shapes = PromptMatch(), list(COLORS), list(SHAPES)
    renders, scenes = dataset(n_renders, seed, all_scenes())
    wrong = {"color": [replace(s, color=colors[(colors.index(s.color) + 1) % len(colors)]) for s in scenes],
             "shape": [replace(s, shape=shapes[(shapes.index(s.shape) + 1) % len(shapes)]) for s in scenes],
             "count": [replace(s, count=s.count % 4 + 1) for s in scenes]}
    out = {}
    with torch.no_grad():
        truth = shape_reader.hits(renders, scenes)
        out.update({f"true reader, {n_renders} renders: {k} right": float(v.mean()) for k, v in truth.items()})
        for key, changed in wrong.items():
            verdict = shape_reader.hits(renders, changed)
            out[f"true reader, renders captioned with another {key}: says {key} wrong"] = float(
                1 - verdict[key].mean())
        truth = shape_reader.hits(samples, [parse_caption(p) for p in prompts])
        learned = reward.hits(samples, prompts)
        for key in ("color", "shape", "count"):
            out[f"prompt-match base samples: {key} right, reader / classifier"] = (
                f"{float(truth[key].mean()):.3f} / {float(learned[key].mean()):.3f}")
            out[f"prompt-match base samples: {key}, reader agrees with classifier"] = float(
                (truth[key] == learned[key]).float().mean())
        learned_match = learned["color"] * learned["shape"] * learned["count"]
        out["prompt-match base samples: all three right, reader (true_match) / classifiers"] = (
            f"{float(truth['match'].mean()):.3f} / {float(learned_match.mean()):.3f}")
        out["prompt-match base samples: all three, reader agrees with classifiers"] = float(
            (truth["match"] == learned_match).float().mean())
        attributes_right = truth["color"] + truth["shape"] + truth["count"]
        out["prompt-match base samples: Spearman reward vs attributes the reader finds right"] = spearman(
            reward(samples, prompts), attributes_right)
    return out


def check_jpeg(samples: torch.Tensor) -> dict:
    """The JPEG tasks on base samples: the true size (PIL, quality 95) and its Spearman rho with the surrogate."""
    from rewards.compress import jpeg_rate_kb, spearman
    from rewards.jpeg import jpeg_kb

    true, surrogate = jpeg_kb(samples), jpeg_rate_kb(samples)
    return {"jpeg base samples: true kB (mean)": float(true.mean()),
            "jpeg base samples: surrogate kB (mean)": float(surrogate.mean()),
            "jpeg base samples: Spearman surrogate vs true": spearman(surrogate, true)}
