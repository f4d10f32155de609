"""shape-aesthetic: the hand-defined true score and the learned reward's agreement; the JPEG names' surrogate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.core import shapes as world
from rewards.compress import spearman
from rewards.shape_aesthetic import ShapeAesthetic, true_aesthetic, true_terms

REPO = Path(__file__).resolve().parents[2]


def square(top: int, left: int, side: int, background: float = 0.96) -> torch.Tensor:
    image = torch.full((3, 32, 32), background)
    image[:, top : top + side, left : left + side] = torch.tensor([0.86, 0.16, 0.16])[:, None, None]
    return image


def test_true_score_rewards_large_objects_centred_in_their_cells():
    scores = {}
    for sizes in ((8, 12), (12, 13), (14, 15)):
        images, _ = world.dataset(96, seed=3, scenes=world.all_scenes(), sizes=sizes)
        scores[sizes] = true_aesthetic(images)
    assert scores[(8, 12)].mean() < 0.15 < scores[(12, 13)].mean() < scores[(14, 15)].mean()
    assert torch.all(scores[(14, 15)] == 1)  # the ceiling, reached for every count, colour, shape and background
    centred, shifted, small = square(1, 17, 14), square(1, 15, 14), square(4, 20, 8)
    empty = torch.full((3, 32, 32), 0.06)
    values = true_aesthetic(torch.stack([centred, shifted, small, empty, 1 - centred]))
    assert values[0] == 1 and values[1] < values[0] and values[2] == 0 and values[3] == 0 and values[4] == 1
    terms = true_terms(torch.stack([centred, shifted]))
    assert terms["size"].tolist() == [1, 1] and terms["centring"][1] < 1 and terms["objects"].tolist() == [1, 1]


def test_learned_reward_agrees_with_true_score_on_held_out_renders_and_has_gradient():
    from bench.shapeworld.train_aesthetic import training_images

    reward = ShapeAesthetic()
    held = training_images(400, seed=11)  # training used seeds 0, 1 (and 100, 101 for its own held-out set)
    with torch.no_grad():
        learned = reward(held, [""] * len(held))
    truth = true_aesthetic(held)
    assert spearman(learned, truth) > 0.85 and (learned - truth).abs().mean() < 0.08
    x = held[:4].clone().requires_grad_(True)
    reward.objective(x, [""] * 4).sum().backward()
    assert reward.differentiable and x.grad.abs().sum() > 0
    prompts = ["two red circles on a white background"] * 4
    metrics = reward.eval_metrics(held[:4], prompts)
    assert {"true_aesthetic", "true_size", "true_centring", "exact_count", "color_accuracy"} <= metrics.keys()
    assert metrics["true_aesthetic"] == float(truth[:4].mean())


@pytest.mark.slow  # a whole run (10-15 s of CPU): make test-slow
def test_jpeg_names_train_gradient_methods_on_the_surrogate(tmp_path):
    # Was "skipped": the README's smoke example. One gradient method keeps it short (DDPO and RWR never needed it).
    out = tmp_path / "r"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods", "alignprop-k1", "--reward",
         "jpeg-compressibility", "--max-steps", "1", "--eval-n", "2", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs.status.tolist() == ["max_steps"] and "jpeg_rate_kb" in runs.surrogate[0]
    result = json.loads((out / "runs" / "alignprop-k1__jpeg-compressibility__s0" / "result.json").read_text())
    assert result["surrogate"] == runs.surrogate[0] and result["steps"] == 1
    assert result["final_eval_reward"] < 0  # evaluated with the true score: negated JPEG kB
