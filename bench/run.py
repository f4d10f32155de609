"""``python -m bench.run``: compare reward fine-tuning methods under equal budgets, one subprocess per run.

    python -m bench.run --methods alignprop,ddpo --reward aesthetic [--preset smoke|default|paper] ...
    python -m bench.run --list

Results go to ``--out`` (default ``results/<timestamp>_<methods>_<reward>/``): metrics.parquet / metrics.csv
(long format), runs.csv (one row per run), manifest.json, summary.md, and one folder per run under runs/.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.errors import UsageError
from bench.presets import PRESET_NAMES, get_preset
from bench.recorder import COMPLETED, write_json, write_tables, write_text
from bench.spec import RunSpec, method_config, parse_list, parse_seeds, parse_sets, run_id

REPO = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", help="comma-separated method names (see --list), e.g. alignprop,ddpo")
    p.add_argument("--reward", help="reward name, weighted combination (0.5*a+0.5*b) or plug-in (module:Name)")
    p.add_argument("--model", help="model: registry name, diffusers directory or hub id (default: the preset's)")
    p.add_argument("--prompts", help="training prompt set name or text file, one prompt per line")
    p.add_argument("--eval-prompts", help="held-out evaluation prompt set name or text file")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; one run per (method, seed) (default 0)")
    p.add_argument("--max-steps", type=float, help="optimizer-step budget per run")
    p.add_argument("--max-seconds", type=float, help="training wall-clock budget per run, evaluation excluded")
    p.add_argument("--max-samples", type=float, help="budget of reward queries made for training, per run")
    p.add_argument("--max-memory-gb", type=float,
                   help="memory cap: CUDA per-process fraction on GPU; on CPU the peak is recorded and an overrun marked")
    p.add_argument("--eval-every", type=int, help="evaluate every N optimizer steps (0: only first and last)")
    p.add_argument("--eval-n", type=int, help="number of evaluation images (fixed prompts and noise)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps for --resume (0: never)")
    p.add_argument("--preset", default="default", help=f"one of {', '.join(PRESET_NAMES)} (default: default)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="override a method config field (KEY=VALUE applies to every chosen method); repeatable")
    p.add_argument("--reward-weights", help="path to the reward model's weights file (else HF cache / hub)")
    p.add_argument("--strict-weights", action="store_true",
                   help="never fall back to a random-weight stand-in reward, even in smoke/default presets")
    p.add_argument("--processes", type=int, default=1,
                   help="data-parallel processes per run (torch.distributed; gloo on CPU, nccl on GPUs)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once with the local launcher")
    p.add_argument("--launcher", default="local", choices=("local", "slurm"),
                   help="local subprocesses, or one SLURM job per run through submitit")
    p.add_argument("--slurm-partition", help="SLURM partition (slurm launcher)")
    p.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per SLURM job (slurm launcher)")
    p.add_argument("--slurm-time-min", type=int, default=240, help="SLURM time limit in minutes (slurm launcher)")
    p.add_argument("--slurm-cluster", default=None, choices=("slurm", "local", "debug"),
                   help=argparse.SUPPRESS)  # submitit's local/debug executors, for tests
    p.add_argument("--run-timeout", type=float,
                   help="seconds after which a run's worker is stopped and recorded as error (default: 10 x "
                        "--max-seconds + 900 when there is a time budget, else none)")
    p.add_argument("--out", help="results folder (default results/<timestamp>_<methods>_<reward>/)")
    p.add_argument("--resume", action="store_true", help="continue unfinished runs in --out, skip finished ones")
    p.add_argument("--dry-run", action="store_true", help="print the runs that would be made and exit")
    p.add_argument("--list", action="store_true", help="list models, rewards, methods, prompt sets and presets")
    return p


def positive(value, flag: str, integer: bool = False):
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0 or (integer and value != int(value)):
        kind = "a positive integer" if integer else "positive"
        raise UsageError(f"{flag} must be {kind}, got {value:g}")
    return int(value) if integer else float(value)


def check_model_available(spec: str) -> None:
    """Registry names, directories and cached hub ids pass; a hub id missing offline fails before any run."""
    from bench.models import HUB_ALIASES, check_model, hub_offline

    check_model(spec)
    source = HUB_ALIASES.get(spec, spec)
    if "/" in source and not Path(source).exists() and hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(source, "model_index.json"), str):
            raise UsageError(
                f"model weights for {source!r} are not in the Hugging Face cache and HF_HUB_OFFLINE=1; download them "
                f"first (huggingface-cli download {source}) or pass a local diffusers directory"
            )


def plan(args) -> tuple[list[RunSpec], dict]:
    """Validate every choice and resolve the runs; raises UsageError before anything is written."""
    from bench.evaluate import EvalConfig
    import rewards
    from bench.prompts import load_prompts
    from methods import METHODS

    if not args.methods or not args.reward:
        raise UsageError("--methods and --reward are required (see --list for the valid names)")
    for flag in ("processes", "jobs", "slurm_gpus", "slurm_time_min", "run_timeout"):
        positive(getattr(args, flag), "--" + flag.replace("_", "-"), integer=flag != "run_timeout")
    preset = get_preset(args.preset)
    methods = parse_list(args.methods, "methods")
    method_classes = {m: METHODS.get(m) for m in methods}
    rewards.check_reward_spec(args.reward)
    seeds = parse_seeds(args.seeds)
    model = args.model or preset.model
    check_model_available(model)
    prompts = args.prompts or preset.prompts
    eval_prompts_name = args.eval_prompts or preset.eval_prompts
    train_set = load_prompts(prompts)
    eval_set = load_prompts(eval_prompts_name)
    rewards.check_reward_prompts(args.reward, train_set.prompts + eval_set.prompts)
    rewards.check_reward_weights(args.reward, args.reward_weights)
    budget = dict(
        max_steps=positive(args.max_steps, "--max-steps", integer=True) or preset.max_steps,
        max_seconds=positive(args.max_seconds, "--max-seconds") or preset.max_seconds,
        max_samples=positive(args.max_samples, "--max-samples", integer=True),
        max_memory_gb=positive(args.max_memory_gb, "--max-memory-gb"),
    )
    if args.max_steps is None and (args.max_seconds or args.max_samples):
        budget["max_steps"] = None  # an explicit time or sample budget replaces the preset's step budget
    if not any(budget[k] for k in ("max_steps", "max_seconds", "max_samples")):
        raise UsageError("no budget: give --max-steps, --max-seconds or --max-samples")
    for flag in ("eval_every", "eval_n", "checkpoint_every"):
        value = getattr(args, flag)
        if value is not None and (value < 0 or (flag == "eval_n" and value < 1)):
            raise UsageError(f"--{flag.replace('_', '-')} must be {'>= 1' if flag == 'eval_n' else '>= 0'}")
    eval_every = preset.eval_every if args.eval_every is None else args.eval_every
    checkpoint_every = preset.checkpoint_every if args.checkpoint_every is None else args.checkpoint_every
    n_eval = args.eval_n or preset.eval_n
    per_method, global_sets = parse_sets(args.sets, methods)
    configs = {m: method_config(cls, m, preset.method_overrides(m), per_method[m], global_sets)
               for m, cls in method_classes.items()}
    for key in global_sets:
        if not any(key in vars(c) for c in configs.values()):
            raise UsageError(f"--set {key}=...: no chosen method has the key {key!r}")
    # Evaluation settings come from the preset and global --set only, never from the chosen methods' own defaults,
    # so evaluations agree across methods and across invocations (folders a report combines).
    eval_cfg = EvalConfig(n=n_eval, steps=preset.method.get("steps", 50),
                          guidance_scale=preset.method.get("guidance_scale", 7.5), eta=0.0)
    if "steps" in global_sets:
        eval_cfg.steps = int(global_sets["steps"])
    if "guidance_scale" in global_sets:
        eval_cfg.guidance_scale = float(global_sets["guidance_scale"])
    eval_block = {"prompts": eval_set.first(n_eval), "config": vars(eval_cfg)}
    if args.processes > 1:
        single = [m for m, cls in method_classes.items() if not cls.supports_processes]
        if single:
            raise UsageError(f"--processes {args.processes}: {', '.join(single)} run(s) trl's own trainer, which the "
                             "harness does not synchronise across processes; use --processes 1 for them")
    allow_stand_in = preset.allow_stand_in and not args.strict_weights
    if not allow_stand_in:  # weights must exist: find out now, before any folder is made
        rewards.build_reward(args.reward, weights=args.reward_weights, allow_stand_in=False)
    runs = [
        RunSpec(run_id=run_id(m, args.reward, seed), method=m, reward=args.reward, model=model, seed=seed,
                method_config=configs[m].to_dict(), prompts=prompts, eval_prompts=eval_prompts_name,
                eval=eval_block, budget=budget, eval_every=eval_every, checkpoint_every=checkpoint_every,
                allow_stand_in=allow_stand_in,
                reward_weights=args.reward_weights, preset=args.preset)
        for m in methods for seed in seeds
    ]
    ids = [spec.run_id for spec in runs]
    if len(set(ids)) != len(ids):
        clash = sorted({i for i in ids if ids.count(i) > 1})
        raise UsageError(f"--methods give the same run id twice ({', '.join(clash)}); rename a plug-in class")
    return runs, dict(preset=args.preset, model=model, prompts=prompts, eval_prompts=eval_prompts_name,
                      budget=budget, eval=eval_block)


def default_out(methods: str, reward: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{methods.replace(',', '+')}_{reward}")
    return REPO / "results" / f"{stamp}_{safe}"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "trl", "peft", "accelerate", "pandas", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def print_plan(runs: list[RunSpec], info: dict, args=None, out: Path | None = None) -> None:
    print(f"{len(runs)} run(s); preset {info['preset']}, model {info['model']}, prompts {info['prompts']}, "
          f"eval {info['eval_prompts']} (n={len(info['eval']['prompts'])}), budget {info['budget']}")
    if args is not None:
        where = (f"slurm (partition {args.slurm_partition or 'default'}, {args.slurm_gpus} GPU(s), "
                 f"{args.slurm_time_min} min) one job per run" if args.launcher == "slurm"
                 else f"local, {args.jobs} at once")
        print(f"launcher: {where}; {args.processes} process(es) per run")
    for spec in runs:
        cfg = spec.method_config
        print(f"  {spec.run_id}: steps={cfg['steps']} batch={cfg['batch_size']}x{cfg['grad_accum']} lr={cfg['lr']}")
        if args is not None:
            run_dir = (out or Path("OUT")) / "runs" / spec.run_id
            print("    $ " + shlex.join(worker_command(run_dir, args.processes)))


def worker_command(run_dir: Path, processes: int) -> list[str]:
    """The command that makes one run: a worker process, or a torch.distributed group of them."""
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                "-m", "bench.worker", str(run_dir)]
    return [sys.executable, "-m", "bench.worker", str(run_dir)]


def run_timeout(spec: RunSpec, explicit: float | None) -> float | None:
    """Seconds a worker may take: ``--run-timeout``, else 10 x the time budget + 15 min, else no limit."""
    if explicit:
        return explicit
    return None if spec.budget.get("max_seconds") is None else 10 * spec.budget["max_seconds"] + 900


def execute(spec: RunSpec, out: Path, processes: int = 1, timeout: float | None = None, cwd: str | None = None) -> dict:
    """Run one spec in a subprocess; a crash, hang or kill becomes an ``error`` result, never lost results.

    The worker runs in the user's working directory (``cwd``), so relative paths given on the command line
    (prompt files, model folders, weights, plug-in files) mean there what they meant here; the package is found
    through PYTHONPATH."""
    import json

    run_dir = Path(out).resolve() / "runs" / spec.run_id
    result_file = run_dir / "result.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    try:
        proc = subprocess.run(worker_command(run_dir, processes), cwd=cwd or os.getcwd(), env=env, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    from bench.worker import _rows_so_far

    if code == "timeout":
        status, message = "error", f"worker timed out after {timeout:.0f} s (--run-timeout)"
    elif code == -9:
        status, message = "oom", "worker killed by SIGKILL (most likely out of memory)"
    else:
        status, message = "error", f"worker exited with code {code}"
    return dict(status=status, error=message, rows=_rows_so_far(run_dir))


def run_row(spec: RunSpec, result: dict) -> dict:
    steps = result.get("steps") or 0
    wall = result.get("wall_s") or 0.0
    cap = spec.budget.get("max_memory_gb")
    peak = result.get("peak_mem_mb")
    return dict(
        run_id=spec.run_id, method=spec.method, reward=spec.reward, model=spec.model, seed=spec.seed,
        status=result["status"], steps=steps, samples=result.get("samples") or 0, wall_s=round(wall, 4),
        peak_mem_mb=None if peak is None else round(peak, 2), final_eval_reward=result.get("final_eval_reward"),
        error=result.get("error", ""), stand_in=result.get("stand_in", ""),
        sec_per_step=round(wall / steps, 4) if steps else None,
        memory_overrun=bool(cap and peak and peak > cap * 1024), device=result.get("device", ""),
        surrogate=result.get("surrogate", ""),
    )


def summary_markdown(rows: list[dict]) -> str:
    head = "| run | status | final eval reward | steps | train s | s/step | peak MB |\n|---|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {r['run_id']} | {r['status']} | {fmt(r['final_eval_reward'], '.4g')} | {r['steps']} | "
                     f"{fmt(r['wall_s'], '.1f')} | {fmt(r['sec_per_step'], '.3f')} | {fmt(r['peak_mem_mb'], '.0f')} |")
    stand_ins = sorted({r["stand_in"] for r in rows if r.get("stand_in")})
    note = "".join(f"\nStand-in (random weights): {s}\n" for s in stand_ins)
    return head + "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            print_listing()
            return 0
        runs, info = plan(args)
        if args.dry_run:
            print_plan(runs, info, args, Path(args.out) if args.out else None)
            return 0
        if args.launcher == "slurm":
            check_submitit()
        out = (Path(args.out) if args.out else default_out(args.methods, args.reward)).resolve()
        previous = prepare_out(out, runs, args.resume)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = datetime.now(timezone.utc).isoformat()
    command = argv if argv is not None else sys.argv[1:]
    manifest = dict(command=[sys.executable, "-m", "bench.run", *command],
                    command_line=shlex.join(["python", "-m", "bench.run", *command]),
                    runs={s.run_id: vars(s) for s in runs}, versions=versions(), git_commit=git_commit(),
                    device=device_description(), started=now, finished=None, resumed=[], **{"plan": info})
    if previous:  # --resume: keep when and how the results were started
        manifest.update(started=previous.get("started", now), command=previous.get("command", manifest["command"]),
                        command_line=previous.get("command_line", manifest["command_line"]),
                        resumed=[*previous.get("resumed", []), dict(at=now, command=manifest["command"])])
    write_json(out / "manifest.json", manifest)
    print_plan(runs, info, args, out)
    results = launch(runs, out, args)
    rows = [row for spec in runs for row in results[spec.run_id].get("rows", [])]
    table = [run_row(spec, results[spec.run_id]) for spec in runs]
    write_tables(out, rows, table)
    manifest.update(finished=datetime.now(timezone.utc).isoformat(),
                    stand_ins=sorted({r["stand_in"] for r in table if r["stand_in"]}))
    write_json(out / "manifest.json", manifest)
    summary = summary_markdown(table)
    write_text(out / "summary.md", summary)
    print("\n" + summary + f"\nresults: {out}")
    return 0


def launch(runs: list[RunSpec], out: Path, args) -> dict[str, dict]:
    """Results of every run by id: finished ones reused on --resume, the rest made by the chosen launcher."""
    results = {}
    todo = []
    for spec in runs:
        previous = previous_result(out, spec) if args.resume else None
        if previous is None:
            todo.append(spec)
        else:
            results[spec.run_id] = previous
    if args.launcher == "slurm":
        results.update(launch_slurm(todo, out, args))
        return results
    from concurrent.futures import ThreadPoolExecutor

    cwd = os.getcwd()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        made = pool.map(lambda s: execute(s, out, args.processes, run_timeout(s, args.run_timeout), cwd), todo)
        for spec, result in zip(todo, made):
            results[spec.run_id] = result
    return results


def launch_slurm(runs: list[RunSpec], out: Path, args) -> dict[str, dict]:
    """One submitit job per run; each job runs the same worker subprocess as the local launcher."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"), cluster=args.slurm_cluster)
    executor.update_parameters(timeout_min=args.slurm_time_min, gpus_per_node=args.slurm_gpus,
                               tasks_per_node=1, nodes=1, name="bench")
    if args.slurm_partition:
        executor.update_parameters(slurm_partition=args.slurm_partition)
    cwd = os.getcwd()
    jobs = [(spec, executor.submit(execute, spec, out, args.processes, run_timeout(spec, args.run_timeout), cwd))
            for spec in runs]
    results = {}
    for spec, job in jobs:
        try:
            results[spec.run_id] = job.result()
        except Exception as exc:  # a job that failed on the cluster is recorded, the others are kept
            results[spec.run_id] = dict(status="error", error=f"slurm job {job.job_id}: {exc}".splitlines()[0])
    return results


def check_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--launcher slurm needs submitit: pip install -e '.[slurm]'") from None


FINISHED = {*COMPLETED, "diverged", "skipped"}
"""Statuses a --resume does not run again."""


def previous_result(out: Path, spec: RunSpec) -> dict | None:
    """A finished run's result (skipped on --resume); None for runs still to do or to retry."""
    import json

    path = out / "runs" / spec.run_id / "result.json"
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("status") in FINISHED:
            return result
        path.unlink()  # errors and OOMs are retried from their last checkpoint
    return None


def prepare_out(out: Path, runs: list[RunSpec], resume: bool) -> dict | None:
    """Check and lay out the results folder; on --resume return the earlier manifest."""
    import json

    previous = None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; pass a folder")
    if resume:
        if not (out / "manifest.json").is_file():
            raise UsageError(f"--resume: {str(out)!r} holds no results (manifest.json); drop --resume or fix --out")
        previous = json.loads((out / "manifest.json").read_text())
        before, now = sorted(previous.get("runs", {})), sorted(spec.run_id for spec in runs)
        if before != now:
            raise UsageError(f"--resume: {str(out)!r} holds runs {', '.join(before)}, the flags give "
                             f"{', '.join(now)}; repeat the original --methods, --reward and --seeds")
        for spec in runs:
            stored = out / "runs" / spec.run_id / "config.json"
            if stored.is_file() and RunSpec.from_file(stored).to_json() != spec.to_json():
                raise UsageError(f"--resume: run {spec.run_id} was made with other settings; repeat the original flags")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"{str(out)!r} already holds results; pass --resume to continue them or choose another --out")
    for spec in runs:
        run_dir = out / "runs" / spec.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.json").is_file():
            write_text(run_dir / "config.json", spec.to_json())
    return previous


def print_listing() -> None:
    from bench.models import model_names
    from bench.prompts import prompt_set_names
    from methods import METHODS
    from rewards import REWARDS

    print("models:      " + ", ".join(model_names()) + "  (or a diffusers directory / hub id)")
    print("rewards:     " + ", ".join(REWARDS.names()) + "  (or a combination / plug-in)")
    print("methods:     " + ", ".join(METHODS.names()))
    print("prompt sets: " + ", ".join(prompt_set_names()) + "  (or a text file)")
    print("presets:     " + ", ".join(PRESET_NAMES))


if __name__ == "__main__":
    sys.exit(main())
