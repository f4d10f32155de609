"""``python -m bench.run``: compare reward fine-tuning methods under equal budgets, one subprocess per run.

    python -m bench.run --methods alignprop,ddpo --reward aesthetic [--preset smoke|default|paper] ...
    python -m bench.run --list

Results go to ``--out`` (default ``results/<timestamp>_<methods>_<reward>/``): metrics.parquet / metrics.csv
(long format), runs.csv (one row per run), manifest.json, summary.md, and one folder per run under runs/.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench.core.cli import command
from bench.harness.environment import device_description, git_commit, versions
from bench.harness.guard import INTERRUPT_EXIT, Interrupted, raise_on_signals
from bench.harness.launch import check_submitit, launch, prepare_out
from bench.harness.plan import default_out, plan
from bench.harness.presets import PRESET_NAMES, PROTOCOLS
from bench.harness.tracking import TRACKER_NAMES
from bench.harness.recorder import COMPLETED, summary_markdown, write_manifest, write_results
from bench.harness.console import print_listing, print_plan


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", help="comma-separated method names (see --list), e.g. alignprop,ddpo")
    p.add_argument("--reward", help="reward name, weighted combination (0.5*a+0.5*b) or plug-in (module:Name); on a "
                   "shape-world model aesthetic means shape-aesthetic (laion-aesthetic: LAION's predictor)")
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
    p.add_argument("--eval-every-samples", type=int,
                   help="evaluate each time training reward queries cross a multiple of N (replaces the preset's --eval-every)")
    p.add_argument("--eval-at", metavar="SCHEDULE",
                   help="evaluate when training reward queries cross these counts: log (8, 12, 16, 24, 32, 48, ...), "
                        "log:FIRST, N, A:B:S or A::S, comma-separated (replaces the preset's --eval-every)")
    p.add_argument("--eval-n", type=int, help="number of evaluation images (fixed prompts and noise)")
    p.add_argument("--eval-seed", type=int,
                   help="seed of the fixed evaluation noise: image i starts from seed + i (default 1234)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps for --resume (0: never)")
    p.add_argument("--preset", default="default", help=f"one of {', '.join(PRESET_NAMES)} (default: default)")
    p.add_argument("--protocol", metavar="|".join(PROTOCOLS), help="matched (equal images per update) or published (each "
                   "method's own code's settings); default: published for --preset paper, else matched")
    p.add_argument("--precision", help="fp32, bf16 or fp16 (default: bf16 on a CUDA GPU that has it, else fp32)")
    p.add_argument("--resolution", type=float, help="image height = width in pixels (default: the model's own)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="override a method config field (KEY=VALUE applies to every chosen method); repeatable")
    p.add_argument("--config-from", metavar="FILE",
                   help="apply each method's tuned configuration from bench.tune file(s), comma-separated (explicit --set wins)")
    p.add_argument("--reward-weights", help="path to the reward model's weights file (else HF cache / hub)")
    p.add_argument("--strict-weights", action="store_true",
                   help="never fall back to a random-weight stand-in reward, even in the smoke preset")
    p.add_argument("--allow-stand-in", action="store_true",
                   help="outside the smoke preset, train against a random-weight stand-in when a reward model's "
                        "weights are missing (named in every output)")
    p.add_argument("--processes", type=int, default=1,
                   help="data-parallel processes per run (torch.distributed; gloo on CPU, nccl on GPUs)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once with the local launcher; each worker gets cores/(jobs x processes) torch threads "
                        "unless OMP_NUM_THREADS is set")
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
    p.add_argument("--tracker", default="none", metavar="|".join(TRACKER_NAMES),  # checked by the planner: one line
                   help="also log every run to an experiment tracker (offline where it can be; default none)")
    p.add_argument("--out", help="results folder (default results/<timestamp>_<methods>_<reward>/)")
    p.add_argument("--resume", action="store_true", help="continue unfinished runs in --out, skip finished ones")
    p.add_argument("--dry-run", action="store_true", help="print the runs that would be made and exit")
    p.add_argument("--list", action="store_true", help="list models, rewards, methods, prompt sets and presets")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    previous, lock = prepare_out(out, runs, args.resume, args.processes)  # noqa: F841 (held until exit)
    now = datetime.now(timezone.utc).isoformat()
    given = argv if argv is not None else sys.argv[1:]
    manifest = dict(command=[sys.executable, "-m", "bench.run", *given],
                    command_line=shlex.join(["python", "-m", "bench.run", *given]),
                    runs={s.run_id: s.to_dict() for s in runs}, versions=versions(), git_commit=git_commit(),
                    device=device_description(), started=now, finished=None, resumed=[], **{"plan": info},
                    reward=args.reward, reward_requested=getattr(args, "reward_requested", args.reward),
                    reward_note=getattr(args, "reward_note", None),  # what ran, what was asked, why they differ
                    processes=args.processes)  # --resume continues on as many
    if previous:  # --resume: keep when and how the results were started
        manifest.update(started=previous.get("started", now), command=previous.get("command", manifest["command"]),
                        command_line=previous.get("command_line", manifest["command_line"]),
                        resumed=[*previous.get("resumed", []), dict(at=now, command=manifest["command"])])
    write_manifest(out, manifest)
    print_plan(runs, info, args, out)
    raise_on_signals()  # SIGINT/SIGTERM: stop the workers, write what was recorded, exit 130 / 143
    interrupted = None
    try:
        results = launch(runs, out, args)
    except Interrupted as exc:
        interrupted, results = exc, dict(getattr(exc, "results", {}))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the tables are written whole
    manifest.update(interrupted=interrupted.name if interrupted else None)
    table = write_results(out, runs, results, manifest)
    if interrupted is not None:
        left = sum(r["status"] not in (*COMPLETED, "diverged", "skipped") for r in table)
        print(f"interrupted by {interrupted.name}: tables written; {left} unfinished run(s) continue with the same "
              f"flags and --resume: {out}", file=sys.stderr)
        return INTERRUPT_EXIT if interrupted.signum == signal.SIGINT else 128 + interrupted.signum  # SIGTERM: 143
    print("\n" + summary_markdown(table) + f"\nresults: {out}")
    if not any(r["status"] in COMPLETED for r in table):
        print("no run finished its budget (see the error column of runs.csv): exit code 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
