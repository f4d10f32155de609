"""How well base ``tiny-shapes`` draws held-out prompts, scored by the shape-world reward classifiers."""

from __future__ import annotations


def check(n_per_prompt: int = 4, steps: int = 20, guidance: float = 2.0, prompts: str = "shapes-eval") -> dict:
    """Accuracy of base-model samples on ``prompts`` by the reward classifiers: colour, shape, exact count."""
    from bench.core.evaluate import EvalConfig, evaluate
    from bench.core.models import load_model
    from bench.core.prompts import load_prompts
    from rewards.shapeworld import PromptMatch, ShapeCount

    pipe = load_model("tiny-shapes").pipe
    texts = [p for p in load_prompts(prompts).prompts for _ in range(n_per_prompt)]
    cfg = EvalConfig(n=len(texts), batch_size=32, steps=steps, guidance_scale=guidance)
    _, images = evaluate(pipe, ShapeCount(), texts, cfg)
    return {"samples": len(texts), **PromptMatch().eval_metrics(images, texts), **ShapeCount().eval_metrics(images, texts)}
