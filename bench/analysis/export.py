"""A finished run's adapter in the form the diffusers ecosystem uses: a folder ``pipe.load_lora_weights(folder)``
reads (``pytorch_lora_weights.safetensors``, keys prefixed by the adapted component, peft metadata for rank and
alpha) with a model card (``README.md``) a user can push to the Hub as is, or with ``merge`` a full pipeline with the
LoRA fused in (``DiffusionPipeline.from_pretrained(folder)``). A base model the adapter does not fit is refused, never
merged silently.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.core.errors import UsageError
from bench.core.files import atomic_dir, read_json, write_json, write_text
from bench.core.lora import DIFFUSERS_WEIGHTS, LoraSettings, save_diffusers_lora
from bench.harness.plan import budget_text
from bench.harness.recorder import COMPLETED
from bench.harness.spec import RunSpec

MARKER = "bench_export.json"
"""Provenance of an export (run, settings, versions); also marks a folder a later export may replace."""


def finished_run(run_dir: Path) -> tuple[RunSpec, dict]:
    """The run's spec and result; a folder that is not a run that finished its budget is a ``UsageError``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run folder (no config.json); pass DIR/runs/<run_id>")
    if not (run_dir / "result.json").is_file():
        raise UsageError(f"run {run_dir.name} has no result.json (not finished); finish it with bench.run --resume")
    result = read_json(run_dir / "result.json", "pass a run folder written by bench.run")
    status = result.get("status") if isinstance(result, dict) else None
    if status not in COMPLETED:
        raise UsageError(f"run {run_dir.name} ended as {status!r}, not on its budget; export a run whose status is "
                         f"one of {', '.join(COMPLETED)}")
    try:
        spec = RunSpec.from_file(run_dir / "config.json")
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{str(run_dir / 'config.json')!r} is damaged; pass a run folder written by "
                         "bench.run") from None
    return spec, result


def lora_settings(spec: RunSpec) -> LoraSettings:
    cfg, base = spec.method_config, LoraSettings()
    return LoraSettings(rank=cfg.get("lora_rank", base.rank), alpha=cfg.get("lora_alpha", base.alpha),
                        target_modules=cfg.get("lora_targets", base.target_modules))


def write_weights(run_dir: Path, spec: RunSpec, dest: Path) -> None:
    """The run's diffusers-format file, or (a run from before it was written) one converted from its
    ``adapter.safetensors`` (every such run adapted a Stable Diffusion UNet)."""
    if (run_dir / DIFFUSERS_WEIGHTS).is_file():
        shutil.copyfile(run_dir / DIFFUSERS_WEIGHTS, dest)
        return
    if not (run_dir / "adapter.safetensors").is_file():
        raise UsageError(f"run {run_dir.name} has no adapter ({DIFFUSERS_WEIGHTS} or adapter.safetensors)")
    from safetensors.torch import load_file

    save_diffusers_lora(dest, load_file(run_dir / "adapter.safetensors"), lora_settings(spec), "unet")


def final_interval(run_dir: Path, seed: int = 0) -> tuple[float, float, float, int] | None:
    """(mean, low, high, n): the final evaluation reward with a seeded 95 % bootstrap interval over its images."""
    from bench.analysis.stats import bootstrap_ci

    path = run_dir / "eval_last.json"
    if not path.is_file():
        return None
    rewards = (read_json(path, "run the evaluation again with bench.run --resume") or {}).get("reward") or []
    if not rewards:
        return None
    return (*bootstrap_ci(rewards, rng=np.random.default_rng(seed)), len(rewards))


def base_code(model: str) -> str:
    """The line that loads the base pipeline the run was trained on."""
    from bench.core.models import BUILDERS, HUB_ALIASES

    if model in BUILDERS:  # built by this harness (tiny-random is built from code, seeded)
        return f'from bench.core.models import load_model  # diffusion-reward-bench\npipe = load_model("{model}").pipe'
    return (f'pipe = DiffusionPipeline.from_pretrained("{HUB_ALIASES.get(model, model)}")\n'
            "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the run sampled with DDIM")


def model_card(spec: RunSpec, result: dict, interval, merged: bool, base: str | None = None) -> str:
    """README.md: Hub front matter, what was trained how, the final reward with its interval, how to load it."""
    from bench.core.models import HUB_ALIASES

    hub_base = HUB_ALIASES.get(spec.model, spec.model)
    is_hub = "/" in hub_base and not Path(hub_base).exists()
    tags = ["diffusers", "text-to-image", "lora", "reward-fine-tuning", spec.method]
    front = ["---", "library_name: diffusers", *([f"base_model: {hub_base}"] if is_hub else []),
             "tags:", *[f"- {t}" for t in tags], "---", ""]
    stand_in = result.get("stand_in")
    cfg = spec.eval.config
    if interval:
        mean, low, high, n = interval
        final = f"{mean:.4g} [{low:.4g}, {high:.4g}] (95 % bootstrap interval over {n} evaluation images, seed 0)"
    else:
        final = "not recorded"
    lines = [
        f"# {spec.run_id}: {spec.method} LoRA fine-tuned on the `{spec.reward}` reward", "",
        *([f"**STAND-IN (random weights; its numbers say nothing about real models): {stand_in}**", ""]
          if stand_in else []),
        "Made by diffusion-reward-bench (`python -m bench.run`, exported with `python -m bench.export`).", "",
        "| | |", "|---|---|",
        f"| base model | `{spec.model}`{f' (fused into `{base}`)' if merged and base and base != spec.model else ''} |",
        f"| method | `{spec.method}` (protocol {spec.protocol}, precision {spec.precision}) |",
        f"| reward | `{spec.reward}` |",
        f"| budget | {budget_text(asdict(spec.budget))}; ended on `{result['status']}` after {result.get('steps')} "
        f"optimizer steps, {result.get('samples')} reward queries |",
        f"| seed | {spec.seed} |",
        f"| LoRA | rank {spec.method_config.get('lora_rank')}, alpha {spec.method_config.get('lora_alpha')}, "
        f"targets {spec.method_config.get('lora_targets')} |",
        f"| final evaluation reward | {final} |",
        f"| evaluation | {cfg.n} images of the run's held-out prompts, DDIM {cfg.steps} steps, guidance "
        f"{cfg.guidance_scale:g}, eta 0, noise seed {cfg.seed} + image index |", "",
        "## Use", "", "```python",
        f"from diffusers import {'' if merged else 'DDIMScheduler, '}DiffusionPipeline", "",
    ]
    if merged:
        lines += ['pipe = DiffusionPipeline.from_pretrained("THIS_FOLDER")  # the LoRA is fused into the UNet']
    else:
        lines += [base_code(spec.model), 'pipe.load_lora_weights("THIS_FOLDER")']
    lines += ['image = pipe("a prompt", num_inference_steps=%d, guidance_scale=%g).images[0]'
              % (cfg.steps, cfg.guidance_scale), "```", ""]
    return "\n".join(front + lines)


def merge(spec: RunSpec, lora_file: Path, base: str, dest: Path) -> None:
    """Load ``base``, apply the LoRA, check every adapted module took it, fuse, save the full pipeline."""
    from bench.core.lora import lora_component
    from bench.core.models import LoadedModel, load_model, save_model
    from safetensors import safe_open

    model = load_model(base)
    pipe = model.pipe
    component = lora_component(pipe)
    with safe_open(str(lora_file), framework="pt") as handle:
        expected = sum(".lora_A." in k for k in handle.keys() if k.startswith(component + "."))
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)  # its error log would repeat the exception's lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's note on modules the state dict lacks: judged below
            pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = next((line for line in lines if "mismatch" in line), lines[0] if lines else type(exc).__name__)
        raise UsageError(f"the adapter of {spec.run_id} does not fit base model {base!r} ({reason[:160]}); merge "
                         f"into the model it was trained on, {spec.model!r}") from None
    finally:
        diffusers_logging.set_verbosity(level)
    loaded = sum(".lora_A." in n for n, _ in getattr(pipe, component).named_parameters())
    if loaded != expected:
        raise UsageError(f"base model {base!r} took {loaded} of the {expected} LoRA modules of {spec.run_id}; merge "
                         f"into the model it was trained on, {spec.model!r}")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    save_model(LoadedModel(pipe=pipe, name=base, stand_in=model.stand_in), dest)


def export_run(run_dir: Path, out: Path, merged: bool = False, base: str | None = None) -> Path:
    """Write the export folder ``out`` whole (nothing half-written on failure); returns it."""
    from bench.harness.environment import versions

    run_dir = Path(run_dir)
    spec, result = finished_run(run_dir)
    base = base or spec.model
    interval = final_interval(run_dir)
    with atomic_dir(Path(out), MARKER, inputs=[run_dir]) as tmp:
        write_weights(run_dir, spec, tmp / DIFFUSERS_WEIGHTS)
        if merged:
            merge(spec, tmp / DIFFUSERS_WEIGHTS, base, tmp)
            (tmp / DIFFUSERS_WEIGHTS).unlink()  # fused: loading it again would apply the update twice
        write_text(tmp / "README.md", model_card(spec, result, interval, merged, base))
        write_json(tmp / MARKER, dict(run=str(run_dir.resolve()), run_id=spec.run_id, model=spec.model,
                                      merged_into=base if merged else None, method=spec.method, reward=spec.reward,
                                      seed=spec.seed, status=result["status"],
                                      final_eval_reward=interval[0] if interval else None,
                                      versions=versions(), config=json.loads(spec.to_json())))
    return Path(out)
