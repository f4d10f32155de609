"""A run's evaluation setting (guidance, sampling steps, true CFG) as report text and as the key of its start."""

from __future__ import annotations

import pandas as pd


def fmt_setting(value) -> str:
    """An evaluation setting (guidance scale, steps) as text: "2", "4.5", "?" when unknown."""
    if value is None or pd.isna(value):
        return "?"
    return f"{float(value):g}"


def guidance_text(guidance, cfg=1.0) -> str:
    """An evaluation's guidance as text: "guidance 2", plus ", true CFG 4" where flux's true CFG ran. Not "CFG":
    ``guidance_scale`` is the CFG weight on sd/sd3 but the guidance embedding's value on flux."""
    on = cfg is not None and not pd.isna(cfg) and float(cfg) > 1
    return f"guidance {fmt_setting(guidance)}" + (f", true CFG {fmt_setting(cfg)}" if on else "")


def true_cfg(runs: pd.DataFrame) -> pd.Series:
    """Each run's ``eval_true_cfg``; 1.0 (none) where a frame has none."""
    return runs["eval_true_cfg"] if "eval_true_cfg" in runs else pd.Series(1.0, runs.index)


def eval_setting(runs: pd.DataFrame) -> pd.Series:
    """Per run, the key of its starting point: (model, reward, eval guidance, steps, true CFG) as one string. The
    step-0 evaluation is the base model under these settings; runs that differ in any of them have different starts."""
    return (runs["model"].astype(str) + "|" + runs["reward"].astype(str) + "|" + runs["eval_guidance"].map(fmt_setting)
            + "|" + runs["eval_steps"].map(fmt_setting) + "|" + true_cfg(runs).map(fmt_setting))
