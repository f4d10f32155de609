"""``python -m bench.interpolate RUN_A RUN_B --alphas 0,0.25,0.5,0.75,1``: AlignProp's LoRA-interpolation figure.

RUN_A and RUN_B are run folders (``DIR/runs/<run_id>``); RUN_B may be ``base`` for the base model (no adapter).
At each alpha the UNet carries the blended weight update

    dW(alpha) = (1 - alpha) * dW_A + alpha * dW_B,        dW_X = (lora_alpha_X / rank_X) * B_X @ A_X,

represented exactly as one LoRA of rank r_A + r_B (A stacked, B scaled and concatenated), so alpha = 0 is run A's
adapter and alpha = 1 run B's. With ``base``, alpha is the weight of run A's update, dW(alpha) = alpha * dW_A, so
alpha = 0 is the base model and alpha = 1 the fine-tuned run, as in the AlignProp paper's figure. Blending the low-rank factors separately would not interpolate
the weights. Every alpha is evaluated like the runner evaluates (run A's fixed prompts, fixed noise, sampler
settings) with both runs' true rewards. Writes mix.csv, mix.md and mix.png/pdf (each reward against alpha on its
own axis with standard-error bars over the evaluation images, the two-reward trade-off, an image strip). Adapters trained on different base models are refused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bench.analysis.pooling import read_config
from bench.core.errors import UsageError
from bench.core.files import read_table

BASE = "base"


@dataclass
class RunAdapter:
    """What mixing needs from one run folder."""

    name: str
    """Run id (folder name), or ``base``."""
    model: str
    """Base model spec the adapter was trained on."""
    reward: str | None
    """Reward spec of the run (None for the base model)."""
    config: dict
    """The run's resolved config.json."""
    state: dict[str, torch.Tensor]
    """Adapter tensors (keys contain lora_A / lora_B)."""
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    recorded_final: float | None = None
    """The run's final_eval_reward from runs.csv, when the results folder has one."""
    path: Path | None = None
    """The run folder (None for the base model)."""

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def load_run(path: str | Path) -> RunAdapter:
    """Read config.json and adapter.safetensors (with its model / lora metadata) of a run folder."""
    from safetensors import safe_open

    run_dir = Path(path)
    config_path, adapter_path = run_dir / "config.json", run_dir / "adapter.safetensors"
    if not run_dir.is_dir():
        raise UsageError(f"run folder {str(run_dir)!r} does not exist; pass DIR/runs/<run_id> or 'base'")
    for p in (config_path, adapter_path):
        if not p.is_file():
            raise UsageError(f"{str(p)!r} is missing; pass a run folder of a finished run (DIR/runs/<run_id>)")
    config = read_config(run_dir, strict=True)
    with safe_open(str(adapter_path), framework="pt") as handle:
        meta = handle.metadata() or {}
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    lora = lora_settings(meta, config)
    model = meta.get("model") or config.get("model")
    if not model or not lora.get("rank"):
        raise UsageError(f"{str(adapter_path)!r} lacks 'model'/'lora' metadata and config.json lacks them too")
    targets = lora.get("target_modules") or ()
    targets = tuple(t for t in targets.split(",") if t) if isinstance(targets, str) else tuple(targets)
    recorded = None
    runs_csv = run_dir.parent.parent / "runs.csv"
    if runs_csv.is_file():
        runs = read_table(runs_csv, "restore it or write the tables again with bench.run --resume",
                          columns=("run_id",), numbers=("final_eval_reward",))
        row = runs[runs["run_id"].astype(str) == run_dir.name]
        if len(row) and pd.notna(row["final_eval_reward"].iloc[0]):
            recorded = float(row["final_eval_reward"].iloc[0])
    return RunAdapter(
        name=run_dir.name, model=str(model), reward=config.get("reward"), config=config, state=state,
        rank=int(lora["rank"]), alpha=float(lora.get("alpha", lora["rank"])), target_modules=targets,
        recorded_final=recorded, path=run_dir,
    )  # fmt: skip


def lora_settings(meta: dict, config: dict) -> dict:
    """rank / alpha / target_modules from the adapter metadata, else config.json ("lora" or method_config).

    Accepts both spellings: rank, alpha, target_modules (LoraSettings) and lora_rank, lora_alpha, lora_targets
    (method configs).
    """
    sources = []
    if meta.get("lora"):
        try:
            sources.append(json.loads(meta["lora"]))
        except json.JSONDecodeError:
            raise UsageError("adapter metadata 'lora' is not JSON; was the adapter saved by bench.run?") from None
    sources += [config.get("lora") or {}, config.get("method_config") or {}]
    out = {}
    for key, alias in (("rank", "lora_rank"), ("alpha", "lora_alpha"), ("target_modules", "lora_targets")):
        for source in sources:
            value = source.get(key, source.get(alias))
            if value is not None:
                out[key] = value
                break
    return out


def check_compatible(a: RunAdapter, b: RunAdapter | None) -> None:
    if b is None:
        return
    if a.model != b.model:
        raise UsageError(
            f"adapters come from different base models ({a.name}: {a.model!r}, {b.name}: {b.model!r}); "
            "mix two runs of the same model"
        )
    if set(a.target_modules) != set(b.target_modules):
        raise UsageError(
            f"adapters target different modules ({sorted(a.target_modules)} vs {sorted(b.target_modules)}); "
            "mix runs trained with the same --lora target_modules"
        )


def _pairs(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module prefix -> (lora_A weight, lora_B weight)."""
    out = {}
    for key, a_weight in state.items():
        if ".lora_A." in key:
            b_key = key.replace(".lora_A.", ".lora_B.")
            if b_key not in state:
                raise UsageError(f"adapter has {key} but no {b_key}; the adapter file is incomplete")
            out[key] = (a_weight, state[b_key])
    if not out:
        raise UsageError("adapter has no lora_A/lora_B tensors; was it saved by bench.run?")
    return out


def mixed_state(a: RunAdapter, b: RunAdapter | None, alpha: float) -> dict[str, torch.Tensor]:
    """Adapter tensors of rank r_A (+ r_B) whose update is (1 - alpha) dW_A + alpha dW_B, at scale 1."""
    pa = _pairs(a.state)
    pb = _pairs(b.state) if b is not None else {}
    if b is not None and set(pa) != set(pb):
        raise UsageError(f"adapters of {a.name} and {b.name} cover different modules; they cannot be mixed")
    state = {}
    for key, (lora_a, lora_b) in pa.items():
        b_key = key.replace(".lora_A.", ".lora_B.")
        a_parts, b_parts = [lora_a.float()], [(1 - alpha) * a.scale * lora_b.float()]
        if b is not None:
            other_a, other_b = pb[key]
            a_parts.append(other_a.float())
            b_parts.append(alpha * b.scale * other_b.float())
        state[key] = torch.cat(a_parts, dim=0)
        state[b_key] = torch.cat(b_parts, dim=1)
    return state


def make_reward(spec: str, weights=None, allow_stand_in: bool = True):
    """The run's reward, as the runner built it (a stand-in only where the run allowed one)."""
    from rewards import build_reward

    return build_reward(spec, weights=weights, allow_stand_in=allow_stand_in)


class _BothRewards:
    """Scores with the first reward (returned to ``evaluate``) and records the others on the same images."""

    def __init__(self, first, others):
        self.first, self.others = first, others
        self.recorded = [[] for _ in others]

    def __call__(self, images, prompts):
        for slot, reward in zip(self.recorded, self.others):
            slot.append(reward(images, prompts).float().cpu())
        return self.first(images, prompts)


def eval_config(config: dict):
    """The run's evaluation prompts (one per image) and settings, from its config.json."""
    from bench.harness.spec import EvalSettings

    try:
        settings = EvalSettings.from_dict(config.get("eval"))
    except ValueError:
        raise UsageError("run config.json has no eval prompts; interpolation needs the runner's evaluation settings") from None
    return settings.prompt_per_image(), settings.config


def run_mix(run_a: str, run_b: str, alphas: list[float], *, device: str = "cpu", model_seed: int = 0):
    """Evaluate every alpha; returns (table, images per alpha [n, 3, H, W], facts for the report)."""
    from bench.core.evaluate import evaluate
    from bench.core.lora import LoraSettings, add_lora, load_adapter_state_dict
    from bench.core.models import load_model

    a = load_run(run_a)
    b = None if run_b == BASE else load_run(run_b)
    check_compatible(a, b)
    prompts, cfg = eval_config(a.config)
    if b is not None and (b.config.get("eval") or {}) != (a.config.get("eval") or {}):
        print(f"warning: {b.name} was evaluated with other settings; all alphas use {a.name}'s", file=sys.stderr)
    reward_specs = [a.reward] + ([b.reward] if b is not None and b.reward != a.reward else [])
    if any(not s for s in reward_specs):
        raise UsageError("run config.json has no 'reward'; mix evaluates each run's own reward")
    source = {a.reward: a.config}
    if b is not None:
        source.setdefault(b.reward, b.config)
    rewards = [make_reward(s, source[s].get("reward_weights"), bool(source[s].get("allow_stand_in", True)))
               for s in reward_specs]
    loaded = load_model(a.model, seed=int(a.config.get("model_seed", model_seed)), device=device)
    rank = a.rank + (b.rank if b is not None else 0)
    from bench.core.families import family_of_pipe

    denoiser = getattr(loaded.pipe, family_of_pipe(loaded.pipe).denoiser)  # the UNet (sd) or transformer (sd3)
    add_lora(denoiser, LoraSettings(rank=rank, alpha=float(rank), target_modules=a.target_modules))
    rows, strips = [], {}
    for alpha in alphas:
        load_adapter_state_dict(denoiser, mixed_state(a, b, alpha if b is not None else 1.0 - alpha))
        scorer = _BothRewards(rewards[0].to(device), [r.to(device) for r in rewards[1:]])
        scores, images = evaluate(loaded.pipe, scorer, prompts, cfg)
        per_reward = [scores] + [torch.cat(s) for s in scorer.recorded]
        row = {"alpha": alpha, "n": len(scores)}
        for spec, values in zip(reward_specs, per_reward):
            row[f"{spec} mean"] = float(values.mean())
            row[f"{spec} std"] = float(values.std()) if len(values) > 1 else 0.0
        rows.append(row)
        strips[alpha] = images
    stand_ins = sorted({s for s in [loaded.stand_in, *(r.stand_in for r in rewards),
                                    a.config.get("stand_in"), b.config.get("stand_in") if b else None] if s})  # fmt: skip
    facts = dict(a=a, b=b, rewards=reward_specs, prompts=prompts, stand_ins=stand_ins, model=a.model)
    return pd.DataFrame(rows), strips, facts


def write_outputs(table: pd.DataFrame, strips: dict, facts: dict, out: Path, *, strip_prompts: int = 4) -> Path:
    from bench.analysis import plots
    from bench.analysis.plots import stand_in_note
    from bench.core.files import atomic_dir
    from bench.core.text import markdown_table

    a, b, specs = facts["a"], facts["b"], facts["rewards"]
    b_name = b.name if b is not None else "base model"
    note = stand_in_note(facts["stand_ins"], 90)
    with atomic_dir(out, "mix.md", [run.path for run in (a, b) if run is not None and run.path],
                    default="RUN_A/../../mix/<A>__vs__<B>") as tmp:
        table.to_csv(tmp / "mix.csv", index=False)
        panels = len(specs) + (len(specs) > 1)
        fig = plots.plt.figure(figsize=(5.5 * panels + 1, 9))
        grid = fig.add_gridspec(2, panels, height_ratios=[1, 1.1])
        sem = {spec: table[f"{spec} std"] / table["n"].clip(lower=1) ** 0.5 for spec in specs}
        xlabel = "α: weight of run B (0: run A, 1: run B)" if b is not None else "α: weight of run A (0: base model, 1: run A)"
        for j, spec in enumerate(specs):  # one axis per reward: two scales on one axis flatten both lines
            ax = fig.add_subplot(grid[0, j])
            ax.errorbar(table["alpha"], table[f"{spec} mean"], yerr=sem[spec], fmt="o-", capsize=3,
                        color=f"C{j}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(plots.reward_label(spec, "eval reward, mean ± s.e."))
            ax.set_title(f"{spec} ({'run A' if j == 0 else 'run B'}'s reward) vs α", fontsize=10)
            ax.grid(alpha=0.3)
            plots.tidy_axis(ax)
        if len(specs) > 1:
            plots.plot_tradeoff(fig.add_subplot(grid[0, -1]), table, x=f"{specs[0]} mean", y=f"{specs[1]} mean",
                                xerr=sem[specs[0]], yerr=sem[specs[1]], xlabel=plots.reward_label(specs[0], "run A's reward"),
                                ylabel=plots.reward_label(specs[1], "run B's reward"), title="trade-off (mean ± s.e.)")  # fmt: skip
        alphas = list(table["alpha"])
        k = min(strip_prompts, len(facts["prompts"]))
        tiles = [[strips[al][i].permute(1, 2, 0).numpy() for i in range(k)] for al in alphas]
        plots.plot_image_grid(fig.add_subplot(grid[1, :]), [list(r) for r in zip(*tiles)],
                              row_labels=facts["prompts"][:k], col_labels=[f"α={al:g}" for al in alphas],
                              title="evaluation images (fixed noise) per α")  # fmt: skip
        fig.suptitle(f"LoRA interpolation on {facts['model']}\nA: {a.name}   B: {b_name}" + note, fontsize=11)
        fig.tight_layout()
        fig.text(0.01, 0.0, f"Error bars: standard error over the {int(table['n'].iloc[0])} evaluation images (fixed "
                 "prompts and noise; the same images at every α, so differences between α are less noisy).",
                 fontsize=8, color="dimgray", va="top")  # fmt: skip
        plots.save_figure(fig, tmp / "mix")
        shown = table.drop(columns="n")
        for col in shown.columns[1:]:
            shown[col] = shown[col].map(lambda v: f"{v:.4f}")
        lines = [f"# LoRA interpolation: {a.name} ↔ {b_name}", "",
                 f"Model `{facts['model']}`; " + (f"α = 0 is {a.name}, α = 1 is {b_name}; weight update (1 − α)·ΔW_A + "
                 "α·ΔW_B" if b is not None else f"α = 0 is the base model, α = 1 is {a.name}; weight update α·ΔW_A")
                 + "; run A's evaluation prompts, noise and sampler settings.", ""]  # fmt: skip
        if facts["stand_ins"]:
            lines += ["> **STAND-INS (random weights):** " + "; ".join(facts["stand_ins"]), ""]
        lines += [markdown_table(shown), ""]
        for run, at in ((a, 0.0 if b is not None else 1.0), (b, 1.0)):
            if run is not None and run.recorded_final is not None and at in alphas:
                got = float(table.loc[table["alpha"] == at, f"{run.reward} mean"].iloc[0])
                lines.append(f"- {run.name}: recorded final eval reward {run.recorded_final:.6g}; α = {at:g} gives {got:.6g}")
        lines += ["", "![mix.png](mix.png)", ""]
        (tmp / "mix.md").write_text("\n".join(lines))
    return out
