"""A finished run's adapter in the form the diffusers ecosystem uses: a folder ``pipe.load_lora_weights(folder)``
reads (``pytorch_lora_weights.safetensors``, keys prefixed by the adapted component, peft metadata for rank and
alpha) with a model card (``README.md``) a user can push to the Hub as is, or with ``merge`` a full pipeline with the
LoRA fused in (``DiffusionPipeline.from_pretrained(folder)``, with any component saved as null, an sd3 toy model's
``text_encoder_3`` and ``tokenizer_3``, passed as None). The card describes the run's model family (pipeline class,
denoiser, sampler, scheduler: ``bench.core.families``). A base model the adapter does not fit is refused, never
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
from bench.core.models import absent_components
from bench.harness.plan import budget_text
from bench.harness.recorder import COMPLETED, EVAL_SHAPE, MANIFEST_SHAPE, RESULT_SHAPE
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
    result = read_json(run_dir / "result.json", "pass a run folder written by bench.run", RESULT_SHAPE)
    status = result["status"]
    if status not in COMPLETED:
        raise UsageError(f"run {run_dir.name} ended as {status!r}, not on its budget; export a run whose status is "
                         f"one of {', '.join(COMPLETED)}")
    try:
        spec = RunSpec.from_file(run_dir / "config.json")
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{str(run_dir / 'config.json')!r} is damaged; pass a run folder written by "
                         "bench.run") from None
    check_against_manifest(run_dir, spec)
    return spec, result


def check_against_manifest(run_dir: Path, spec: RunSpec) -> None:
    """A run's ``config.json`` must say what its results folder's ``manifest.json`` (the source of truth, as for
    ``--resume``) recorded for it: an edited one (another LoRA rank, evaluation steps, model) would be exported
    under a card describing a run that never happened. A run folder outside a results folder is taken as it is."""
    from bench.harness.launch import spec_changes

    manifest = run_dir.parent.parent / "manifest.json"
    if run_dir.parent.name != "runs" or not manifest.is_file():
        return
    recorded = read_json(manifest, "restore it or export a run of an intact results folder",
                         MANIFEST_SHAPE).get("runs", {})
    if spec.run_id not in recorded:
        return
    changed = spec_changes(recorded[spec.run_id], spec)
    if changed:
        raise UsageError(f"{str(run_dir / 'config.json')!r} differs from {str(manifest)!r} in {', '.join(changed)}: "
                         "the run was made with the manifest's settings; restore config.json (the manifest's "
                         "runs." + spec.run_id + ") and export again")


def lora_settings(spec: RunSpec) -> LoraSettings:
    cfg, base = spec.method_config, LoraSettings()
    return LoraSettings(rank=cfg.get("lora_rank", base.rank), alpha=cfg.get("lora_alpha", base.alpha),
                        target_modules=cfg.get("lora_targets", base.target_modules))


def component_of(model: str) -> str:
    """The component a model's LoRA keys are prefixed by, its family's denoiser: ``transformer`` (sd3) or ``unet``
    (sd)."""
    from bench.core.models import family_of

    return family_of(model).denoiser


def lora_modules(path: Path) -> int:
    """LoRA modules (``lora_A`` tensors) in a safetensors file; a damaged or unreadable file is a ``UsageError``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return sum(".lora_A." in k for k in handle.keys())
    except Exception as exc:  # SafetensorError, OSError: a truncated or foreign file
        raise UsageError(f"{str(path)!r} is damaged or not a safetensors file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'}); rerun the run or "
                         "restore the file") from None


def trained_modules(run_dir: Path) -> int:
    """LoRA modules the run trained, from its files (checked readable before anything is written)."""
    found = [lora_modules(run_dir / name) for name in ("adapter.safetensors", DIFFUSERS_WEIGHTS)
             if (run_dir / name).is_file()]
    if not found:
        raise UsageError(f"run {run_dir.name} has no adapter ({DIFFUSERS_WEIGHTS} or adapter.safetensors)")
    if not max(found):
        raise UsageError(f"run {run_dir.name}'s adapter files hold no LoRA module; rerun the run")
    return max(found)


def write_weights(run_dir: Path, spec: RunSpec, dest: Path) -> None:
    """The run's diffusers-format file, or (a run from before it was written) one converted from its
    ``adapter.safetensors``, its keys prefixed by the component of the run's model family."""
    if (run_dir / DIFFUSERS_WEIGHTS).is_file():
        shutil.copyfile(run_dir / DIFFUSERS_WEIGHTS, dest)
        return
    from safetensors.torch import load_file

    save_diffusers_lora(dest, load_file(run_dir / "adapter.safetensors"), lora_settings(spec),
                        component_of(spec.model))


def verify_export(spec: RunSpec, lora_file: Path, trained: int) -> dict:
    """Load the written adapter into a fresh pipeline of the run's model and check that every trained LoRA module
    took it (diffusers only notes keys it cannot place, and loads 0 of N silently); a ``UsageError`` otherwise.
    Returns the pipeline's ``call_arguments``."""
    from bench.core.lora import lora_component
    from bench.core.models import load_model

    pipe = load_model(spec.model).pipe
    component = lora_component(pipe)
    reason = load_lora(pipe, lora_file)
    if reason:
        raise UsageError(f"the exported adapter of {spec.run_id} does not load into {spec.model!r} ({reason}); "
                         "nothing was exported")
    loaded = sum(".lora_A." in n for n, _ in getattr(pipe, component).named_parameters())
    if loaded != trained:
        raise UsageError(f"the exported adapter of {spec.run_id} loads {loaded} of the {trained} trained LoRA "
                         f"modules into a fresh {spec.model!r}; nothing was exported")
    return call_arguments(pipe)


def load_lora(pipe, lora_file: Path) -> str | None:
    """Load ``lora_file`` into ``pipe`` with diffusers' and peft's chatter silenced (their error log would repeat
    the exception over many lines; what took it is judged by the caller); the failure's one-line reason, or None."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's note on modules the state dict lacks
            pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return next((line for line in lines if "mismatch" in line), lines[0] if lines else type(exc).__name__)[:160]
    finally:
        diffusers_logging.set_verbosity(level)
    return None


def call_arguments(pipe) -> dict:
    """Arguments of the card's ``pipe(...)`` call, beyond prompts, steps, guidance and noise, that the run's sampler
    used and diffusers' default would not: an sd3 or flux model's T5 context length (``max_sequence_length``: the
    chain's ``t5_tokens``, zero T5 tokens on the toy models that have no T5 encoder, where diffusers defaults to 256 /
    512) and a flux model's native image size (``height``, ``width``: diffusers' default is 1024 px)."""
    from bench.core.families import family_of_pipe

    fam = family_of_pipe(pipe)
    out = {}
    if fam.t5_encoder:  # as bench.core.families.flowmatch.FlowMatchChain reads it
        out["max_sequence_length"] = int(getattr(pipe, "t5_tokens", fam.t5_default))
    if "default_sample_size" in fam.facts:  # flux: the native size, which diffusers' saved files do not hold
        size = int(pipe.default_sample_size) * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        out.update(height=size, width=size)
    return out


def from_pretrained(source: str, absent) -> list[str]:
    """The card's lines that load a saved pipeline, passing its ``absent_components`` as None."""
    if not absent:
        return [f'pipe = DiffusionPipeline.from_pretrained("{source}")']
    return [f"# this model has no {', '.join(absent)} (saved as null): from_pretrained loads it with them passed "
            "as None",
            f'pipe = DiffusionPipeline.from_pretrained("{source}", {", ".join(f"{k}=None" for k in absent)})']


def final_interval(run_dir: Path, seed: int = 0) -> tuple[float, float, float, int] | None:
    """(mean, low, high, n): the final evaluation reward with a seeded 95 % bootstrap interval over its images."""
    from bench.analysis.stats import bootstrap_ci

    path = run_dir / "eval_last.json"
    if not path.is_file():
        return None
    rewards = read_json(path, "run the evaluation again with bench.run --resume", EVAL_SHAPE)["reward"]
    if not rewards:
        return None
    return (*bootstrap_ci(rewards, rng=np.random.default_rng(seed)), len(rewards))


def base_code(model: str) -> tuple[str, list[str]]:
    """(the lines that load the base pipeline the run was trained on, the diffusers names they use)."""
    from bench.core.models import BUILDERS, HUB_ALIASES, family_of

    if model in BUILDERS:  # built by this harness (tiny-random from code, seeded; the family's scheduler set)
        return (f'from bench.core.models import load_model  # diffusion-reward-bench\npipe = load_model("{model}").pipe',
                [])
    source = HUB_ALIASES.get(model, model)
    is_dir = Path(source).is_dir()
    source = str(Path(source).resolve()) if is_dir else source
    lines = from_pretrained(source, absent_components(Path(source)) if is_dir else [])
    fam = family_of(model)
    if fam.own_scheduler:  # the sd3 family samples with the model's own scheduler (FlowMatchEulerDiscreteScheduler)
        return "\n".join(lines), ["DiffusionPipeline"]
    return ("\n".join([*lines, f"pipe.scheduler = {fam.scheduler}.from_config(pipe.scheduler.config)  # the run "
                                f"sampled with {fam.sampler}"]),
            sorted([fam.scheduler, "DiffusionPipeline"]))


CARD_PROMPTS = 4
"""Evaluation prompts the model card's snippet draws (the first ones, with the evaluation's own noise)."""


def usage_code(spec: RunSpec, merged: bool, folder: Path | str, absent=(), call: dict | None = None) -> list[str]:
    """The model card's snippet: it runs as printed (offline too: the weights file is named, as diffusers 0.39 asks
    with HF_HUB_OFFLINE=1; a merged folder's ``absent`` components passed as None) and redraws the run's first
    evaluation images: its own held-out prompts, its evaluation noise (image i from a generator seeded ``seed + i``),
    steps and guidance, eta 0, and the run's ``call`` arguments (``call_arguments``)."""
    cfg = spec.eval.config
    folder = str(Path(folder).resolve())
    if merged:
        load, names = from_pretrained(folder, absent), ["DiffusionPipeline"]
        load[-1] += "  # the LoRA is fused in; on the Hub: its repo id"
    else:
        base, names = base_code(spec.model)
        load = [base, f'pipe.load_lora_weights("{folder}", weight_name="{DIFFUSERS_WEIGHTS}")  # this folder; on the '
                      "Hub: its repo id"]
    prompts = list(dict.fromkeys(spec.eval.prompts))[:CARD_PROMPTS]
    size = {"height": cfg.resolution, "width": cfg.resolution} if getattr(cfg, "resolution", 0) else {}
    true_cfg = getattr(cfg, "true_cfg_scale", 1.0)  # flux's true CFG, against the sampler's empty negative prompt
    guided = dict(true_cfg_scale=true_cfg, negative_prompt="") if true_cfg > 1 else {}
    extra = "".join(f", {k}={v!r}" for k, v in {**(call or {}), **size, **guided}.items())  # the run's size wins
    why = (["# max_sequence_length: the T5 tokens the run's transformer saw (zeros where the model has no T5 "
            "encoder)"] if "max_sequence_length" in (call or {}) else [])
    return [
        "import torch", *([f"from diffusers import {', '.join(names)}"] if names else []), "", *load, "",
        f"prompts = {json.dumps(prompts)}  # the first {len(prompts)} of the run's held-out evaluation prompts",
        f"noise = [torch.Generator().manual_seed({cfg.seed} + i) for i in range(len(prompts))]  # the evaluation's noise",
        *why, f"images = pipe(prompts, num_inference_steps={cfg.steps}, guidance_scale={cfg.guidance_scale:g}{extra}, "
        "generator=noise).images",
    ]


def model_card(spec: RunSpec, result: dict, interval, merged: bool, base: str | None = None,
               folder: Path | str = "THIS_FOLDER", absent=(), call: dict | None = None) -> str:
    """README.md: Hub front matter, what was trained how (the model family's pipeline class, denoiser and
    sampler), the final reward with its interval, how to load it (``usage_code``, naming ``folder``, the export's
    own path)."""
    from bench.core.models import HUB_ALIASES, family_of

    hub_base = HUB_ALIASES.get(spec.model, spec.model)
    is_hub = "/" in hub_base and not Path(hub_base).exists()
    tags = ["diffusers", "text-to-image", "lora", "reward-fine-tuning", spec.method]
    front = ["---", "library_name: diffusers", *([f"base_model: {hub_base}"] if is_hub else []),
             "tags:", *[f"- {t}" for t in tags], "---", ""]
    stand_in = result.get("stand_in")
    cfg = spec.eval.config
    fam = family_of(spec.model)
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
        f"| model family | `{fam.name}`: `{fam.pipeline}`, LoRA on its `{fam.denoiser}` ({fam.description}) |",
        f"| method | `{spec.method}` (protocol {spec.protocol}, precision {spec.precision}) |",
        f"| reward | `{spec.reward}` |",
        f"| budget | {budget_text(asdict(spec.budget))}; ended on `{result['status']}` after {result.get('steps')} "
        f"optimizer steps, {result.get('samples')} reward queries |",
        f"| seed | {spec.seed} |",
        f"| LoRA | rank {spec.method_config.get('lora_rank')}, alpha {spec.method_config.get('lora_alpha')}, "
        f"targets {spec.method_config.get('lora_targets')} |",
        f"| final evaluation reward | {final} |",
        f"| evaluation | {cfg.n} images of the run's held-out prompts, {fam.sampler} (`{fam.scheduler}`) "
        f"{cfg.steps} steps, guidance {cfg.guidance_scale:g}"
        + (f", true CFG {cfg.true_cfg_scale:g}" if getattr(cfg, "true_cfg_scale", 1.0) > 1 else "")
        + f", noise seed {cfg.seed} + image index |", "",
        "## Use", "",
        "Draws the run's first evaluation images (its prompts and noise); it runs as printed, offline too. Moved or "
        "pushed to the Hub, give the folder's new path or the repo id.", "",
        "```python", *usage_code(spec, merged, folder, absent, call), "```", "",
    ]
    return "\n".join(front + lines)


def merge(spec: RunSpec, lora_file: Path, base: str, dest: Path) -> None:
    """Load ``base``, apply the LoRA, check every adapted module took it, fuse, save the full pipeline."""
    from bench.core.lora import lora_component
    from bench.core.models import LoadedModel, load_model, save_model

    from bench.core.models import model_family

    if model_family(base) != model_family(spec.model):
        raise UsageError(f"--base {base!r} is a {model_family(base)} model; {spec.run_id} adapted a "
                         f"{model_family(spec.model)} model ({spec.model!r}): merge into a model of that family")
    model = load_model(base)
    pipe = model.pipe
    component = lora_component(pipe)
    expected = lora_modules(lora_file)  # every module of the file must land in the component (none elsewhere)
    reason = load_lora(pipe, lora_file)
    if reason:
        raise UsageError(f"the adapter of {spec.run_id} does not fit base model {base!r} ({reason}); merge "
                         f"into the model it was trained on, {spec.model!r}")
    loaded = sum(".lora_A." in n for n, _ in getattr(pipe, component).named_parameters())
    if loaded != expected or not expected:
        raise UsageError(f"base model {base!r} took {loaded} of the {expected} LoRA modules of {spec.run_id}; merge "
                         f"into the model it was trained on, {spec.model!r}")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    save_model(LoadedModel(pipe=pipe, name=base, stand_in=model.stand_in), dest)


def check_not_fused_in(run_dir: Path, spec: RunSpec, base: str) -> None:
    """Refuse a ``--base`` that is this run's own merged export: its adapter is fused in already, and fusing it again
    would apply the update twice (every module fits, so nothing else would say so)."""
    marker = Path(base) / MARKER
    if not marker.is_file():
        return
    made = read_json(marker, "export the run again", {"run?": str, "merged_into?": (str, type(None))})
    if made.get("merged_into") and made.get("run") == str(Path(run_dir).resolve()):
        raise UsageError(f"--base {base!r} is {spec.run_id}'s own merged export: its adapter is fused in already "
                         f"and would be applied twice; merge into the model it was trained on, {spec.model!r}")


def default_out(run_dir: Path) -> Path:
    """``bench.export``'s default ``--out``: RESULTS/export/<run_id> beside the run's RESULTS/runs."""
    return Path(run_dir).parent.parent / "export" / Path(run_dir).name


def export_run(run_dir: Path, out: Path, merged: bool = False, base: str | None = None) -> Path:
    """Write the export folder ``out`` whole (nothing half-written on failure); returns it."""
    from bench.harness.environment import versions

    run_dir = Path(run_dir)
    spec, result = finished_run(run_dir)
    base = base or spec.model
    if merged:
        check_not_fused_in(run_dir, spec, base)
    trained = trained_modules(run_dir)  # the files are read (and a damaged one refused) before anything is written
    interval = final_interval(run_dir)
    with atomic_dir(Path(out), MARKER, inputs=[run_dir], default=str(default_out(run_dir))) as tmp:
        write_weights(run_dir, spec, tmp / DIFFUSERS_WEIGHTS)
        call = verify_export(spec, tmp / DIFFUSERS_WEIGHTS, trained)
        if merged:
            merge(spec, tmp / DIFFUSERS_WEIGHTS, base, tmp)
            (tmp / DIFFUSERS_WEIGHTS).unlink()  # fused: loading it again would apply the update twice
        write_text(tmp / "README.md", model_card(spec, result, interval, merged, base, folder=out,
                                                 absent=absent_components(tmp) if merged else (), call=call))
        write_json(tmp / MARKER, dict(run=str(run_dir.resolve()), run_id=spec.run_id, model=spec.model,
                                      merged_into=base if merged else None, method=spec.method, reward=spec.reward,
                                      seed=spec.seed, status=result["status"],
                                      final_eval_reward=interval[0] if interval else None,
                                      versions=versions(), config=json.loads(spec.to_json())))
    return Path(out)
