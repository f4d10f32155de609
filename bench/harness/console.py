"""What ``bench.run`` prints before it starts: the plan (runs, resolved configs, budgets, stand-ins, worker
commands) and ``--list``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bench.harness.launch import worker_command
from bench.harness.plan import budget_text
from bench.harness.presets import PRESET_NAMES
from bench.harness.spec import RunSpec


def describe_config(spec: RunSpec, full: bool = False) -> str:
    """The images and optimizer updates one step makes, then the settings that differ from the method's defaults
    (its config class's, and the model family's LoRA targets and eta: ``non_default``), or with ``full`` every
    setting (the manifest and each run's config.json hold them all)."""
    from methods import METHODS

    config = METHODS.get(spec.method).Config(**spec.method_config)
    shown = spec.method_config if full else non_default(spec)
    settings = " ".join(f"{'sampling_steps' if k == 'steps' else k}={v}" for k, v in shown.items())
    return (f"images/step={config.images_per_step()} updates/step={config.updates_per_step()}"
            + (f" {settings}" if settings else ("" if full else " (the method's defaults)")))


def non_default(spec: RunSpec) -> dict:
    """The run's method settings that differ from the method's defaults: its config class's defaults, with the
    model family's own values (LoRA targets; eta 0 on a flow model) counted as defaults."""
    from bench.core.families import family_defaults
    from bench.core.models import family_of
    from bench.harness.spec import config_fields
    from methods import METHODS

    cls = METHODS.get(spec.method)
    defaults = config_fields(cls)
    try:
        family_values = family_defaults(family_of(spec.model), cls.Config)
    except Exception:  # a model whose family cannot be read here: the class defaults alone
        family_values = {}
    return {k: v for k, v in spec.method_config.items()
            if k not in defaults or (v != defaults[k] and not (k in family_values and v == family_values[k]))}


def first_per_method(runs: list[RunSpec]) -> list[RunSpec]:
    seen: dict[str, RunSpec] = {}
    for spec in runs:
        seen.setdefault(spec.method, spec)
    return list(seen.values())


def guidance_text(spec: RunSpec) -> str:
    """``method train/eval``, with ``(published)`` where the method pins its guidance (``Method.inference``), and
    ``true CFG train/eval`` where either samples with flux's true classifier-free guidance (``true_cfg_scale`` > 1)."""
    from methods import METHODS

    published = METHODS.get(spec.method).inference.get("guidance_scale")
    train, evaluation = spec.method_config["guidance_scale"], spec.eval.config.guidance_scale
    cfg = (spec.method_config.get("true_cfg_scale", 1.0), getattr(spec.eval.config, "true_cfg_scale", 1.0))
    return (f"{spec.method} {train:g}/{evaluation:g}" + (" (its published setting)" if published == train else "")
            + (f" true CFG {cfg[0]:g}/{cfg[1]:g}" if max(cfg) > 1 else ""))


def guidance_line(runs: list[RunSpec], model: str) -> str:
    """The plan's guidance line; where the model's family embeds guidance (``Family.embedded_guidance``) it says that
    ``guidance_scale`` is the embedding's value there."""
    from bench.core.models import family_of

    try:
        fam = family_of(model)
    except Exception:  # a model whose family cannot be read here: the plain line
        fam = None
    what = ("" if fam is None or fam.embedded_guidance is None else
            f"; on {fam.name} the guidance embedding's value, one pass, {fam.embedded_guidance:g} unless --set; "
            "classifier-free guidance only from true_cfg_scale > 1")
    return f"guidance (training / evaluation{what}): " + ", ".join(guidance_text(s) for s in first_per_method(runs))


def print_plan(runs: list[RunSpec], info: dict, args=None, out: Path | None = None) -> None:
    """The plan: one line of run-wide settings, the reward's meaning where the model changed it, stand-ins,
    guidance, notes, the launcher, and per run only what differs from its method's defaults (``--dry-run`` adds
    every setting and the worker command; the full configurations are in the manifest)."""
    dry = bool(getattr(args, "dry_run", False)) or out is None
    print(f"{len(runs)} run(s); preset {info['preset']}, protocol {info['protocol']}, precision {info['precision']}, "
          f"resolution {info['resolution'] or 'native'}, model {info['model']}, prompts {info['prompts']}, "
          f"eval {info['eval_prompts']} (n={len(info['eval']['prompts'])}, noise seed {info['eval']['config']['seed']}); "
          f"budget per run: {budget_text(info['budget'])}")
    evaluations = info.get("evaluations") or {}
    if evaluations.get("eval_at"):
        counts = ", ".join(map(str, evaluations["eval_at_queries"]))
        print(f"evaluations (--eval-at {evaluations['eval_at']}) at reward queries {counts}"
              + (", ..." if evaluations.get("eval_at_queries_truncated") else "")
              + (f", and every {evaluations['every_steps']} steps" if evaluations.get("every_steps") else ""))
    if getattr(args, "reward_note", None):
        print(args.reward_note)
    for stand_in in info.get("stand_ins", []):
        print(f"STAND-IN (random weights; its numbers say nothing about real models): {stand_in}")
    print(guidance_line(runs, info["model"]))
    for note in info.get("notes", []):
        print(f"note: {note}")
    if args is not None:
        where = (f"slurm (partition {args.slurm_partition or 'default'}, {args.slurm_gpus} GPU(s), "
                 f"{args.slurm_time_min} min) one job per run" if args.launcher == "slurm"
                 else f"local, {args.jobs} at once")
        print(f"launcher: {where}; {args.processes} process(es) per run")
    print("runs (settings that differ from each method's defaults):")
    for spec in runs:
        print(f"  {spec.run_id} ({spec.protocol}): {describe_config(spec)}")
        if args is not None and dry:
            print(f"    every setting: {describe_config(spec, full=True)}")
            run_dir = (out or Path("OUT")) / "runs" / spec.run_id
            print("    $ " + shlex.join(worker_command(run_dir, args.processes)))
    if not dry:
        print(f"every setting of every run: {out / 'manifest.json'}")
    sys.stdout.flush()  # before the runs' lines on stderr, also when stdout is a file (block-buffered)


def print_listing() -> None:
    from bench.core.models import HUB_ALIASES, STAND_INS, family_of, model_names
    from bench.core.prompts import prompt_set_names
    from methods import METHODS
    from rewards import REWARDS

    print("models (or a diffusers directory / hub id):")
    width = max(len(family_of(name).description) for name in model_names())
    for name in model_names():
        fam = family_of(name)
        note = f"hub: {HUB_ALIASES[name]}" if name in HUB_ALIASES else ("stand-in, " + STAND_INS[name]
                                                                        if name in STAND_INS else "trained, shipped")
        print(f"  {name:<17} family {fam.name:<4} {fam.description:<{width}}  {note}")
    print("rewards:     " + ", ".join(REWARDS.names()) + "  (or a combination / plug-in)")
    print("methods:     " + ", ".join(METHODS.names()))
    print("prompt sets: " + ", ".join(prompt_set_names()) + "  (or a text file)")
    print("presets:     " + ", ".join(PRESET_NAMES))
