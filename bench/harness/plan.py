"""Planning a benchmark: validate every command-line choice and resolve the runs before anything is written."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from bench.core.errors import UsageError
from bench.core.text import safe_name
from bench.harness.presets import PROTOCOLS, get_preset
from bench.harness.schedule import check_eval_at, describe as describe_schedule
from bench.harness.tracking import check_tracker
from bench.harness.tuned import apply_tuned
from bench.harness.spec import (Budget, EvalSettings, RunSpec, config_fields, given_source, method_config, parse_list,
                                 parse_seeds, parse_sets, run_id, source_of)

REPO = Path(__file__).resolve().parents[2]


def positive(value, flag: str, integer: bool = False):
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0 or (integer and value != int(value)):
        kind = "a positive integer" if integer else "positive"
        raise UsageError(f"{flag} must be {kind}, got {value:g}")
    return int(value) if integer else float(value)

def check_model_available(spec: str) -> None:
    """Registry names, directories and cached hub ids pass; a hub id missing offline fails before any run."""
    from bench.core.models import HUB_ALIASES, check_model, hub_offline

    check_model(spec)
    source = HUB_ALIASES.get(spec, spec)
    if "/" in source and not Path(source).exists() and hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "model_index.json"), str):
            raise UsageError(
                f"model weights for {source!r} are not in the Hugging Face cache and HF_HUB_OFFLINE=1; download them "
                f"first (huggingface-cli download {source}) or pass a local diffusers directory"
            )

def check_families(model: str, method_classes: dict, fam=None):
    """The model's family (``bench.core.families``; ``fam``: already resolved); a method that cannot run on it fails
    here, before any run, naming the family and the registered methods that can."""
    from bench.core.models import family_of
    from methods import METHODS

    fam = fam or family_of(model)
    refused = [m for m, cls in method_classes.items() if fam.name not in getattr(cls, "families", (fam.name,))]
    if refused:
        can = [n for n in METHODS.names() if fam.name in METHODS.get(n).families]
        raise UsageError(f"{', '.join(refused)} cannot run on {model} (model family {fam.name}: {fam.description}); "
                         f"methods that can: {', '.join(can)}")
    return fam


def check_lora_targets(model: str, fam, configs: dict, method_classes: dict, per_method=None,
                       global_sets=None) -> None:
    """LoRA targets changed from a method's default must name modules of the chosen model's (family ``fam``)
    denoiser (peft matches a target against a module's full name or its last dotted parts)."""
    usual = (config_fields(method_classes[m]).get("lora_targets") for m in configs)
    family_targets = ",".join(fam.lora_targets)
    changed = {m: c.lora_targets for (m, c), default in zip(configs.items(), usual)
               if hasattr(c, "lora_targets") and c.lora_targets not in (default, family_targets)}
    if not changed:
        return
    from bench.core.models import unet_module_names

    names = unet_module_names(model, fam)
    if names is None:
        return
    for method, targets in changed.items():
        for target in (t for t in str(targets).split(",") if t):
            if not any(n == target or n.endswith("." + target) for n in names):
                source = given_source(method, "lora_targets", targets, per_method or {}, global_sets or {})
                raise UsageError(f"{source}: {target!r} is no module of {model}'s denoiser; use names such as "
                                 "to_q,to_k,to_v,to_out.0 (attention) or proj_in,proj_out,ff.net.2")


RUN_WIDE = ("precision", "resolution")
"""Config keys that are run-wide settings: ``--set KEY=VALUE`` means ``--KEY VALUE`` (training, the plan, runs.csv
and evaluation all use it); a per-method ``--set METHOD.KEY`` is refused."""


def fold_run_wide(args, global_sets: dict[str, str], per_method: dict[str, dict]):
    """``args`` with each run-wide ``--set KEY=VALUE`` moved onto its flag (a contradicting flag is refused)."""
    import argparse

    for method, sets in per_method.items():
        for key in RUN_WIDE:
            if key in sets:  # given by --set, a --config-from file or a --grid: its source is named
                raise UsageError(f"{source_of(sets[key], f'{method}.{key}')}: {key} is run-wide (training and "
                                 f"evaluation), not a setting of {method}; use --{key} VALUE or --set {key}=VALUE")
    moved = {}
    for key in [k for k in RUN_WIDE if k in global_sets]:
        raw = global_sets.pop(key)
        value = raw.strip()
        if key == "resolution":
            try:
                value = float(value)
            except ValueError:
                raise UsageError(f"{source_of(raw, key)}: expected a whole number of pixels") from None
            value = value or None  # 0: the model's native size, as the flag left out
        flag = getattr(args, key, None)
        if flag is not None and flag != value:
            raise UsageError(f"{source_of(raw, key)} contradicts --{key} {flag}; give one of them")
        moved[key] = value
    return argparse.Namespace(**{**vars(args), **moved}) if moved else args


def resolve_scale(args, model: str, fam) -> dict:
    """``--precision`` (default: bf16 on a CUDA device that supports it, else fp32) and ``--resolution`` (checked
    against the model's (family ``fam``) VAE and denoiser factors where its configs can be read here; else when the
    run builds it)."""
    from bench.core import precision as mp
    from bench.core.models import model_geometry
    from bench.core.families.base import check_resolution

    name = getattr(args, "precision", None)
    if name is not None and not name.strip():
        raise UsageError(f"--precision is empty; give one of {', '.join(mp.PRECISIONS)}, or leave it out for the default")
    name = name or mp.default_precision()
    if name not in mp.PRECISIONS:
        raise UsageError(f"--precision {name!r} unknown; valid: {', '.join(mp.PRECISIONS)}")
    resolution = positive(getattr(args, "resolution", None), "--resolution", integer=True) or 0
    geometry = model_geometry(model, fam) if resolution else None
    if geometry:
        try:
            check_resolution(resolution, *geometry)
        except ValueError as exc:
            raise UsageError(f"--resolution: {model} cannot draw it: {exc}") from None
    return dict(precision=name, resolution=resolution)


def plan(args) -> tuple[list[RunSpec], dict]:
    """Validate every choice and resolve the runs; raises UsageError before anything is written."""
    from bench.core.evaluate import EvalConfig
    import rewards
    from bench.core.prompts import load_prompts
    from methods import METHODS

    from bench.core.calibrate import repeats_from_env

    repeats_from_env()  # BENCH_CALIBRATE_REPEATS, read by every worker: checked once, here
    resolve_reward(args)  # the reward name on this model (shape world: aesthetic = shape-aesthetic), in place
    if not args.methods or not args.reward:
        raise UsageError("--methods and --reward are required (see --list for the valid names)")
    if args.out is not None and not args.out.strip():
        raise UsageError("--out is empty; name a results folder, or leave --out out for the default")
    for flag in ("processes", "jobs", "slurm_gpus", "slurm_time_min", "run_timeout"):
        positive(getattr(args, flag), "--" + flag.replace("_", "-"), integer=flag != "run_timeout")
    check_tracker(getattr(args, "tracker", None))
    preset = get_preset(args.preset)
    methods = parse_list(args.methods, "methods")
    method_classes = {m: METHODS.get(m) for m in methods}
    rewards.check_reward_spec(args.reward)
    seeds = parse_seeds(args.seeds)
    model = args.model or preset.model
    check_model_available(model)
    from bench.core.models import family_of

    fam = check_families(model, method_classes, family_of(model))  # the model's family, resolved once here
    prompts = args.prompts or preset.prompts
    eval_prompts_name = args.eval_prompts or preset.eval_prompts
    train_set = load_prompts(prompts)
    eval_set = load_prompts(eval_prompts_name)
    rewards.check_reward_prompts(args.reward, train_set.prompts + eval_set.prompts)
    rewards.check_reward_weights(args.reward, args.reward_weights)
    budget = dict(
        max_steps=positive(args.max_steps, "--max-steps", integer=True) or preset.max_steps,
        max_seconds=positive(args.max_seconds, "--max-seconds") or preset.max_seconds,
        max_samples=positive(args.max_samples, "--max-samples", integer=True) or preset.max_samples,
        max_memory_gb=positive(args.max_memory_gb, "--max-memory-gb"),
    )
    if args.max_steps is not None and args.max_samples is None:
        budget["max_samples"] = None  # an explicit step budget replaces the preset's sample budget
    if args.max_steps is None and (args.max_seconds or args.max_samples):
        budget["max_steps"] = None  # an explicit time or sample budget replaces the preset's step budget
    if not any(budget[k] for k in ("max_steps", "max_seconds", "max_samples")):
        raise UsageError("no budget: give --max-steps, --max-seconds or --max-samples")
    for flag in ("eval_every", "eval_every_samples", "eval_n", "checkpoint_every"):
        value = getattr(args, flag)
        if value is not None and (value < 0 or (flag == "eval_n" and value < 1)):
            raise UsageError(f"--{flag.replace('_', '-')} must be {'>= 1' if flag == 'eval_n' else '>= 0'}")
    eval_every_samples = args.eval_every_samples or 0
    eval_at = check_eval_at(getattr(args, "eval_at", None), every_samples=eval_every_samples,
                            max_samples=budget["max_samples"])
    # A query schedule replaces the preset's step schedule (an explicit --eval-every still adds to it).
    queries = eval_every_samples or eval_at is not None
    eval_every = (0 if queries else preset.eval_every) if args.eval_every is None else args.eval_every
    checkpoint_every = preset.checkpoint_every if args.checkpoint_every is None else args.checkpoint_every
    n_eval = args.eval_n or preset.eval_n
    per_method, global_sets = parse_sets(args.sets, methods)
    tuned = apply_tuned(getattr(args, "config_from", None), args.reward, seeds, per_method, model)
    args = fold_run_wide(args, global_sets, per_method)
    scale = resolve_scale(args, model, fam)
    protocol = getattr(args, "protocol", None) or preset.protocol
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol {protocol!r} unknown; valid: {', '.join(PROTOCOLS)}")
    # Run-wide settings every method config carries (below --set; the cap only where a method uses it).
    run_wide = dict(scale, **({"max_memory_gb": budget["max_memory_gb"]} if budget["max_memory_gb"] else {}))
    # The model family's own values (LoRA targets; eta 0 on a deterministic chain; flux's guidance embedding) sit above
    # the preset's and the method's (its published settings and pinned inference values included).
    from bench.core.families import family_defaults

    configs = {m: method_config(cls, m, {**preset.method_overrides(cls, protocol), **family_defaults(fam, cls.Config),
                                         **published_targets(cls, protocol), **run_wide}, per_method[m], global_sets)
               for m, cls in method_classes.items()}
    for m, c in configs.items():
        given = lambda key, value: given_source(m, key, value, per_method, global_sets)  # where m.key was given
        sde = getattr(c, "sde", "")
        if fam.stochastic and sde and sde != "memoryless":  # bench.core.flow.MEMORYLESS: DDIM's eta step on sd
            raise UsageError(f"{given('sde', sde)}: {model} (family {fam.name}) has DDIM's stochastic step, not a "
                             "flow SDE; drop it")
        schedule = getattr(c, "schedule", "scheduler")
        if fam.stochastic and schedule != "scheduler":
            raise UsageError(f"{given('schedule', schedule)}: {model} (family {fam.name}) samples DDIM's timesteps; "
                             "a sigma schedule is a flow chain's; drop it")
        if not fam.stochastic and not sde and getattr(c, "eta", 0) > 0:
            raise UsageError(f"{given('eta', c.eta)}: {model} (family {fam.name}) samples the deterministic flow "
                             f"ODE unless a flow SDE is chosen; drop it or give {m}.sde (flow-grpo, "
                             "dance-grpo) if the method has one")
        if fam.embedded_guidance is None and getattr(c, "true_cfg_scale", 1.0) > 1:
            raise UsageError(f"{given('true_cfg_scale', c.true_cfg_scale)}: {model} (family {fam.name}) has no "
                             "guidance embedding; its guidance_scale is the classifier-free weight: drop it")
    for key in global_sets:
        if not any(key in vars(c) for c in configs.values()):
            raise UsageError(f"--set {key}=...: no chosen method has the key {key!r}")
    check_lora_targets(model, fam, configs, method_classes, per_method, global_sets)
    # Evaluation settings come from the preset, the family's guidance embedding and global --set only (in that order),
    # never from the chosen methods' own defaults, so evaluations agree across methods and invocations (folders a
    # report combines). A per-method --set (m.guidance_scale, m.true_cfg_scale) is training's, unless pinned.
    eval_seed = EvalConfig.seed if getattr(args, "eval_seed", None) is None else args.eval_seed
    if not 0 <= eval_seed <= 2**32 - 1 - n_eval:
        raise UsageError(f"--eval-seed {eval_seed} is out of range; give an integer in 0..{2**32 - 1 - n_eval}")
    embedded = fam.embedded_guidance
    sampling = dict(steps=preset.method.get("steps", 50), true_cfg_scale=1.0,
                    guidance_scale=preset.method.get("guidance_scale", 7.5) if embedded is None else embedded)
    for key, kind in (("steps", int), ("guidance_scale", float), ("true_cfg_scale", float)):
        if key in global_sets:
            sampling[key] = kind(global_sets[key])
    eval_cfg = EvalConfig(n=n_eval, seed=eval_seed, eta=0.0, **sampling, **scale,
                          vae_fp32=global_sets.get("vae_fp32", "false").lower() in ("1", "true", "yes", "on"))
    eval_block = {"prompts": eval_set.first(n_eval), "config": vars(eval_cfg)}
    from bench.core.models import model_notes

    notes = ((tuned or {}).get("notes", []) + pinned_notes(method_classes, configs, per_method, global_sets, fam)
             + model_notes(model, fam))
    method_eval = {m: method_eval_config(eval_cfg, method_classes[m], configs[m]) for m in methods}
    eval_block["methods"] = {m: {k: getattr(c, k) for k in method_classes[m].inference}
                             for m, c in method_eval.items() if method_classes[m].inference}
    if args.processes > 1:
        single = [m for m, cls in method_classes.items() if not cls.supports_processes]
        if single:
            raise UsageError(f"--processes {args.processes}: {', '.join(single)} run(s) trl's own trainer, which the "
                             "harness does not synchronise across processes; use --processes 1 for them")
    allow_stand_in = (preset.allow_stand_in or getattr(args, "allow_stand_in", False)) and not args.strict_weights
    stand_ins = planned_stand_ins(args, model, allow_stand_in)
    runs = [
        RunSpec(run_id=run_id(m, args.reward, seed), method=m, reward=args.reward, model=model, seed=seed,
                method_config=configs[m].to_dict(), prompts=prompts, eval_prompts=eval_prompts_name,
                eval=EvalSettings(eval_block["prompts"], method_eval[m]), budget=Budget(**budget), eval_every=eval_every,
                eval_every_samples=eval_every_samples, eval_at=eval_at.text if eval_at else "",
                checkpoint_every=checkpoint_every, allow_stand_in=allow_stand_in,
                reward_weights=args.reward_weights, preset=args.preset, protocol=protocol,
                precision=scale["precision"], tracker=getattr(args, "tracker", None) or "none")
        for m in methods for seed in seeds
    ]
    ids = [spec.run_id for spec in runs]
    if len(set(ids)) != len(ids):
        clash = sorted({i for i in ids if ids.count(i) > 1})
        raise UsageError(f"--methods give the same run id twice ({', '.join(clash)}); rename a plug-in class")
    return runs, dict(preset=args.preset, model=model, prompts=prompts, eval_prompts=eval_prompts_name,
                      budget=budget, eval=eval_block, tuned=tuned, protocol=protocol, **scale,
                      evaluations=dict(every_steps=eval_every, every_queries=eval_every_samples,
                                       **(describe_schedule(eval_at, budget["max_samples"]) if eval_at else {})),
                      stand_ins=stand_ins, notes=notes)


def published_targets(method_cls, protocol: str) -> dict:
    """The published protocol keeps a method's own LoRA targets (DanceGRPO: to_q,to_k,to_v,to_out.0) above the
    family's default targets."""
    published = getattr(method_cls, "published", {})
    return {"lora_targets": published["lora_targets"]} if protocol == "published" and "lora_targets" in published else {}


def method_eval_config(eval_cfg, method_cls, config):
    """The invocation's evaluation settings, with the method's pinned ``inference`` settings (``Method.inference``)
    at their effective values: a CFG-free method is evaluated CFG-free, and its step-0 evaluation is its own start."""
    import copy

    out = copy.copy(eval_cfg)
    for key in getattr(method_cls, "inference", {}):
        setattr(out, key, getattr(config, key))
    return out


def pinned_notes(method_classes: dict, configs: dict, per_method: dict, global_sets: dict, fam=None) -> list[str]:
    """One line per explicit ``--set`` (global or per-method) that changes a method's pinned inference setting: its
    published value, or the family's where the family sets the key (``family_defaults``: flux's guidance embedding,
    the pin's CFG-free meaning kept by ``true_cfg_scale`` 1)."""
    from bench.core.families import family_defaults

    notes = []
    for m, cls in method_classes.items():
        family = family_defaults(fam, cls.Config) if fam is not None else {}
        for key, published in getattr(cls, "inference", {}).items():
            value, usual = getattr(configs[m], key), family.get(key, published)
            cfg = getattr(configs[m], "true_cfg_scale", 1.0)
            if key in family and published <= 1 < cfg:  # flux: the CFG-free pin is true_cfg_scale's to keep
                notes.append(f"{given_source(m, 'true_cfg_scale', f'{cfg:g}', per_method, global_sets)} gives {m} "
                             f"true classifier-free guidance {cfg:g}; its published sampling is CFG-free")
            if value == usual:
                continue
            source = given_source(m, key, f"{value:g}", per_method, global_sets)
            what = (f"published {key} {published:g}" if key not in family
                    else f"{key} from the {fam.name} family's {usual:g} (its guidance embedding)")
            notes.append(f"{source} changes {m}'s {what} (sampling, training and evaluation of {m} use {value:g})")
    return notes


def planned_stand_ins(args, model: str, allow_stand_in: bool) -> list[str]:
    """The stand-ins (random weights) the runs will use, found before anything is written: the model's, and the
    reward's when its weights are missing. A missing reward model without ``allow_stand_in`` is a UsageError that
    names the download and ``--allow-stand-in``."""
    import warnings

    import rewards
    from bench.core.models import STAND_IN_MARKER, STAND_INS

    found = [STAND_INS[model]] if model in STAND_INS else []
    marker = Path(model) / STAND_IN_MARKER
    if marker.is_file():
        found.append(marker.read_text().strip())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the plan names the stand-in itself, once
            reward = rewards.build_reward(args.reward, weights=args.reward_weights, allow_stand_in=allow_stand_in)
    except UsageError as exc:
        if args.strict_weights:
            raise
        raise UsageError(f"{exc}; or pass --allow-stand-in to train against a random-weight stand-in (its scores "
                         "mean nothing)") from None
    if getattr(reward, "stand_in", None):
        found.append(str(reward.stand_in))
    return found


def budget_text(budget: dict) -> str:
    """The budget in words ("40 optimizer steps or 300 s of training, whichever first")."""
    parts = [text.format(budget[key]) for key, text in (("max_steps", "{} optimizer steps"),
             ("max_seconds", "{:g} s of training"), ("max_samples", "{} reward queries")) if budget.get(key)]
    memory = f"; memory cap {budget['max_memory_gb']:g} GB" if budget.get("max_memory_gb") else ""
    return " or ".join(parts) + (", whichever first" if len(parts) > 1 else "") + memory


def default_out(methods: str, reward: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = safe_name(f"{methods.replace(',', '+')}_{reward}")
    return REPO / "results" / f"{stamp}_{safe}"


def resolve_reward(args):
    """Resolve ``args.reward`` for the model the run will use (``--model``, else the preset's; the meanings are
    ``rewards.resolve``'s), in place, once: ``args.reward`` becomes what runs, ``args.reward_requested`` keeps what was asked and ``args.reward_note`` is the
    console's one line (None when the name kept its meaning). Returns ``args``."""
    if getattr(args, "reward_requested", None) is not None or not getattr(args, "reward", None):
        return args
    model = getattr(args, "model", None)
    if not model:
        try:
            model = get_preset(getattr(args, "preset", None) or "default").model
        except UsageError:  # an unknown preset: the planner says so
            return args
    asked = args.reward
    from rewards.resolve import reward_for_model

    resolved = reward_for_model(asked, model, getattr(args, "reward_weights", None))
    args.reward_requested = asked
    args.reward_note = None
    if resolved != asked:
        args.reward = resolved
        args.reward_note = (f"reward {asked} on {model} (a shape-world model): the world's aesthetic, {resolved} "
                            "(LAION's photo predictor would judge 32x32 shapes; --reward laion-aesthetic asks for it)")
    return args
