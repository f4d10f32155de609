"""A synthetic suite folder, as the suite runner writes it: suite.json and one bench.run results folder per (task,
family), with known true scores, learned rewards, fidelity, diversity and evaluation images.

Each run evaluates at 0, 8, 16, 32 and 64 reward queries; its true score moves on a straight line from the cell's base
to the run's final; the learned reward moves with it (for jpeg-compressibility it is the negated size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PROMPTS = ["a red circle", "two blue squares", "a green triangle", "three red circles"]
SAMPLES = (0, 8, 16, 32, 64)
TASKS = {"jpeg-compressibility": ("jpeg-compressibility", "true_jpeg_kb", False),
         "prompt-match": ("prompt-match", "true_match", True)}
"""Task -> (reward, true score, true score higher is better)."""
MODELS = {"sd": "tiny-shapes", "sd3": "tiny-shapes-flow"}


def reward_of(task: str, true: float) -> float:
    """The learned reward a run shows at true score ``true`` (jpeg-compressibility's is the negated size)."""
    return -true if task == "jpeg-compressibility" else float(np.log(max(true, 1e-3)))


def write_cell(directory: Path, task: str, family: str, base: float, finals: dict[str, list[float]], *,
               failed: dict[str, str] | None = None, images: bool = True) -> Path:
    """A results folder of one cell: ``finals`` method -> per-seed final true score; ``failed`` method -> status of
    its every run (no final evaluation)."""
    reward, true_score, _ = TASKS[task]
    model = MODELS[family]
    directory.mkdir(parents=True)
    runs, rows = [], []
    for i, (method, per_seed) in enumerate(finals.items()):
        for seed, final in enumerate(per_seed):
            status = (failed or {}).get(method, "max_samples")
            done = status == "max_samples"
            run_id = f"{method}__{reward}__s{seed}"
            points = SAMPLES if done else SAMPLES[:2]
            for step, n in enumerate(points):
                t = n / SAMPLES[-1]
                true = base + t * (final - base)
                common = dict(run_id=run_id, method=method, reward=reward, model=model, seed=seed, step=step,
                              samples=n, wall_s=n * 0.5 * (i + 1), cpu_s=n * 0.9 * (i + 1), split="eval", stand_in="")
                values = {"reward_mean": reward_of(task, true), "reward_std": 0.01, true_score: true,
                          "diversity[shapeworld-classifier]": 0.4 - 0.2 * t * (i + 1) / 3,
                          "attribute_diversity": 0.5 - 0.1 * t}
                if task == "prompt-match":
                    values.update(color_accuracy=0.8 + 0.1 * t, shape_accuracy=0.7 + 0.05 * t * i,
                                  exact_count=0.5 + 0.2 * t)
                rows += [dict(common, metric=k, value=v) for k, v in values.items()]
            runs.append(dict(run_id=run_id, method=method, reward=reward, model=model, seed=seed, status=status,
                             steps=len(points) - 1, samples=points[-1], wall_s=points[-1] * 0.5, cpu_s=points[-1],
                             peak_mem_mb=100.0, final_eval_reward=reward_of(task, final) if done else np.nan,
                             error="" if done else "boom", stand_in="", eval_guidance=2.0, eval_steps=10))
            if images:
                write_images(directory / "runs" / run_id, dict(method=method, reward=reward, model=model, seed=seed),
                             base, final, done, level=i)
    pd.DataFrame(rows).to_csv(directory / "metrics.csv", index=False)
    pd.DataFrame(runs).to_csv(directory / "runs.csv", index=False)
    manifest = {"command": ["bench.run"], "runs": {}, "versions": {}, "git_commit": "0" * 40, "device": "cpu",
                "started": "", "finished": "", "stand_ins": []}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def write_images(run_dir: Path, config: dict, base: float, final: float, done: bool, level: int) -> None:
    """eval_first/last.png (one 32 px tile per prompt: a square whose size grows with the score) and their json."""
    run_dir.mkdir(parents=True)
    config["eval"] = {"prompts": PROMPTS, "n": len(PROMPTS), "seed": 1234, "steps": 10, "guidance_scale": 2.0,
                      "eta": 0.0, "batch_size": 4}
    (run_dir / "config.json").write_text(json.dumps(config))
    for which, value in (("first", base), ("last", final)):
        if which == "last" and not done:
            continue
        row = np.full((32, 32 * len(PROMPTS), 3), 235, dtype=np.uint8)
        for k in range(len(PROMPTS)):
            half = int(4 + 4 * k + (6 * level if which == "last" else 0)) % 14 + 2
            row[16 - half:16 + half, 32 * k + 16 - half:32 * k + 16 + half] = (200 - 40 * k, 60 + 50 * level, 90)
        Image.fromarray(row).save(run_dir / f"eval_{which}.png")
        scores = [value + 0.01 * k for k in range(len(PROMPTS))]
        (run_dir / f"eval_{which}.json").write_text(json.dumps({"step": 0 if which == "first" else 4,
                                                                "reward": scores}))


def write_suite(root: Path, cells: dict[tuple[str, str], tuple[float, dict]], *, quick: bool = False,
                methods=None, seeds=(0, 1, 2), failed=None, images: bool = True) -> Path:
    """A suite folder: ``cells`` (task, family) -> (base true score, method -> per-seed finals)."""
    root.mkdir(parents=True)
    tasks = list(dict.fromkeys(t for t, _ in cells))
    families = list(dict.fromkeys(f for _, f in cells))
    found = list(dict.fromkeys(m for _, finals in cells.values() for m in finals))
    spec = {"command": ["python", "-m", "bench.suite.run", "--out", str(root)], "tasks": tasks, "families": families,
            "methods": list(methods or found), "seeds": list(seeds)}
    if quick:
        spec["quick"] = True
    (root / "suite.json").write_text(json.dumps(spec))
    for (task, family), (base, finals) in cells.items():
        write_cell(root / task / family, task, family, base, finals, failed=(failed or {}).get((task, family)),
                   images=images)
    return root


STANDARD = {
    ("jpeg-compressibility", "sd"): (1.20, {"ddpo": [1.00, 1.04, 0.96], "alignprop": [0.80, 0.84, 0.82],
                                            "refl": [1.10, 1.12, 1.08]}),
    ("jpeg-compressibility", "sd3"): (1.30, {"ddpo": [1.20, 1.22, 1.18], "alignprop": [0.90, 1.00, 0.95],
                                             "refl": [1.25, 1.21, 1.23]}),
    ("prompt-match", "sd"): (0.40, {"ddpo": [0.60, 0.64, 0.62], "alignprop": [0.70, 0.66, 0.74],
                                    "refl": [0.45, 0.50, 0.47]}),
    ("prompt-match", "sd3"): (0.30, {"ddpo": [0.50, 0.52, 0.48], "alignprop": [0.55, 0.65, 0.60]}),
}
"""Two tasks (one lower-is-better) x two families, three methods, three seeds; refl absent on prompt-match/sd3."""
