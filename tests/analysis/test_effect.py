"""What fine-tuning changed: prompts chosen by reward change, rewards under the images, learned vs true score."""

import json

import numpy as np
import pandas as pd
from PIL import Image

from bench.analysis import effect, results as loading
from test_report import PROMPTS, write_results


def add_scores(folder, reward):
    """Per-image eval rewards: the base scores 0.1 everywhere; alignprop's final changes prompt 2 most."""
    for run_dir in (folder / "runs").iterdir():
        if not (run_dir / "eval_last.png").is_file():
            continue
        (run_dir / "eval_first.json").write_text(json.dumps({"step": 0, "reward": [0.1] * len(PROMPTS)}))
        last = [0.1, 0.15, 0.9, 0.1] if run_dir.name.startswith("alignprop") else [0.1, 0.12, 0.3, 0.1]
        (run_dir / "eval_last.json").write_text(json.dumps({"step": 10, "reward": last}))


def test_columns_put_the_largest_changes_first_then_a_fixed_sample():
    assert effect.chosen_columns(np.array([0.0, 0.5, 0.1, 0.9, 0.0, 0.0]), 2, 2) == [1, 3, 0, 5]
    assert effect.chosen_columns(np.array([0.3, 0.1]), 4, 4) == [0, 1]


def test_effect_and_learned_vs_true_figures(tmp_path):
    folder = write_results(tmp_path / "sa", "shape-aesthetic", failed=False)
    add_scores(folder, "shape-aesthetic")
    metrics = pd.read_csv(folder / "metrics.csv")
    true = metrics[(metrics.split == "eval") & (metrics.metric == "reward_mean")].assign(metric="true_aesthetic")
    true["value"] = true["value"] * 0.8
    pd.concat([metrics, true]).to_csv(folder / "metrics.csv", index=False)
    (folder / "metrics.parquet").unlink()
    results = loading.load_results([folder])
    loading.add_labels(results.runs, results.metrics)
    out = tmp_path / "figs"
    out.mkdir()
    names = effect.effect_figures(results, out, n_change=1, n_fixed=2, formats=("png",))
    assert names == ["effect_shape-aesthetic.png"]
    image = Image.open(out / names[0])
    assert image.width >= 500 and image.height >= 400  # readable tiles, not thumbnails
    assert effect.learned_vs_true_figures(results, out, formats=("png",)) == ["learned_vs_true_shape-aesthetic.png"]
    plain = write_results(tmp_path / "mb", "mean-brightness", failed=False)
    results = loading.load_results([plain])
    loading.add_labels(results.runs, results.metrics)
    assert effect.effect_figures(results, out, formats=("png",)) == []  # no per-image scores: no figure
    assert effect.learned_vs_true_figures(results, out, formats=("png",)) == []  # no true score recorded
