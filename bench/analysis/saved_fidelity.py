"""Prompt fidelity read back from a run's saved evaluation images, for folders whose evaluations did not record it.

Before every evaluation recorded the shape world's fidelity (``rewards.fidelity``), only the rewards that measure it
themselves (``shape-aesthetic``, ``prompt-match``) did: a JPEG task's folder holds no ``color_accuracy``,
``shape_accuracy`` or ``exact_count``. Its runs still saved the first and the final evaluation's images
(``eval_first.png``, ``eval_last.png``: every evaluation image in prompt order, 8-bit) and their prompts
(``config.json``), so the same classifiers can read them afterwards. The values are of those two evaluations only
(no curve), from 8-bit images (the run's own were float): the suite report says where they come from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.analysis.figures import read_eval_settings, split_row


def saved_fidelity(results) -> pd.DataFrame:
    """One row per (run, ``first`` / ``last``, metric) with the classifiers' accuracy on that evaluation's saved
    images; empty where no run saved images of shape-world prompts."""
    import torch

    from rewards.fidelity import fidelity_metrics

    rows = []
    for run_id in results.runs["run_id"]:
        run_dir = results.run_dir(run_id)
        settings = read_eval_settings(run_dir)
        if settings is None:
            continue
        prompts = settings.prompt_per_image()
        for which in ("first", "last"):
            path = run_dir / f"eval_{which}.png"
            if not path.is_file():
                continue
            tiles = split_row(path, len(prompts))
            if len(tiles) != len(prompts):
                continue
            images = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float()
            rows += [dict(run_id=run_id, which=which, metric=k, value=v)
                     for k, v in fidelity_metrics(images, prompts).items()]
    return pd.DataFrame(rows, columns=["run_id", "which", "metric", "value"])
