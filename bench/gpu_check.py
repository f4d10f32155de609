"""The prepared GPU check: ``python -m bench.gpu_check`` (or ``make gpu-check``) fills the README's GPU table.

    python -m bench.gpu_check [--wheels DIR] [--out results/gpu-check] [--dry-run]

On one GPU, in this order, each command with its own time limit (at most 950 s in all by default, install
excluded; 470 s with ``--families sd``, 480 s with ``--families sd3``, 830 s with ``--families flux``):
1. with ``--wheels DIR``: ``pip install --no-index --find-links DIR`` of the pinned packages (constraints.txt, not
   torch: the machine's CUDA torch is kept), so a machine without internet gets the project's pins;
2. the memory ladder of the SD 1.5 architecture (``sd15-random``) at 512x512, T=50, batch 1, in fp32 and bf16
   (``oom`` rows kept; one timed step per row, no warm-up: pessimistic seconds), bf16 with the auto-checkpointing
   rows at 1x, 2x and 4x trl's step peak;
3. a 5-step ``--preset paper --model sd15-random`` run of alignprop, ddpo and rwr (published protocol) with
   ``mean-brightness`` (a differentiable stand-in reward), each method's accumulation cut to fit the time
   (alignprop 4 and rwr 8 images per step, ddpo one batch of 8 per epoch in 2 updates), stated in the output.
4. (family sd3) the SD 3.5 Medium ladder (``sd35m-random``, bf16, 512x512, 28 steps, batch 1): alignprop K=1,
   randomized K and full with checkpointing, rwr, and the sampler against diffusers' StableDiffusion3Pipeline;
   then one flow-grpo step (bf16, 512x512, a group of 8 images, 10 training-rollout steps, Flow-GRPO's SDE and KL).
5. (family flux, not by default) the same for FLUX.1-dev (``flux1-dev-random``): alignprop K=1, the sampler, flow-grpo.
It writes ``gpu_check.json`` (every command, its exit code, seconds, and the tables) and ``gpu_check.md``. This
module imports nothing beyond the standard library, so it runs before the pinned packages are installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LADDER_ROWS = "alignprop-full-nockpt,alignprop-full,alignprop-k1,alignprop,ddpo,rwr,sampler"
AUTO_ROWS = "alignprop-auto@1x,alignprop-auto@2x,alignprop-auto@4x"
CUTS = ("alignprop.grad_accum=1", "rwr.grad_accum=1", "ddpo.sample_batches=1", "ddpo.train_grad_accum=1")
"""The paper run's cuts (the published settings make 128-256 images per step: minutes each)."""
FLOW_LADDERS = {"sd3": ("sd35m-random", "sd35m", "alignprop-k1,alignprop,alignprop-full,rwr,sampler", 60, 300, 180),
                "flux": ("flux1-dev-random", "flux1", "alignprop-k1,sampler", 240, 500, 330)}
"""Flow families' ladders: model, short name, rows at 28 steps, limits in s (per row, step, flow-grpo step)."""
LADDER_STEPS = [f"ladder-{v[1]}-{k}" for v in FLOW_LADDERS.values() for k in ("bf16", "flow-grpo")]


def commands(out: Path, wheels: str | None, families: str = "sd,sd3") -> list[tuple[str, list[str], int]]:
    """(name, command, time limit in seconds) of every step, in order."""
    py = sys.executable
    steps = []
    if wheels:
        pins = [line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
        steps.append(("install", [py, "-m", "pip", "install", "--no-index", "--find-links", wheels, *pins], 300))
    for dtype, rows, limit in (("fp32", LADDER_ROWS, 140), ("bf16", f"{LADDER_ROWS},{AUTO_ROWS}", 170)):
        steps.append((f"ladder-{dtype}", [py, "-m", "bench.memory_ladder", "--model", "sd15-random", "--steps", "50",
                                          "--batch", "1", "--dtypes", dtype, "--rows", rows, "--warmup", "0",
                                          "--repeats", "1", "--row-timeout", "40",
                                          "--out", str(out / f"ladder-{dtype}")], limit))
    cuts = [arg for cut in CUTS for arg in ("--set", cut)]
    steps.append(("paper", [py, "-m", "bench.run", "--preset", "paper", "--model", "sd15-random", "--methods",
                            "alignprop,ddpo,rwr", "--reward", "mean-brightness", "--max-steps", "5", "--eval-n", "2",
                            "--eval-every", "0", "--checkpoint-every", "0", *cuts, "--run-timeout", "70",
                            "--out", str(out / "paper")], 160))
    for model, short, rows, row_limit, limit, pg_limit in FLOW_LADDERS.values():
        for name, n, batch, chosen, per_row, total in ((f"ladder-{short}-bf16", 28, 1, rows, row_limit, limit), (
                f"ladder-{short}-flow-grpo", 10, 8, "flow-grpo", pg_limit - 30, pg_limit)):
            steps.append((name, [py, "-m", "bench.memory_ladder", "--model", model, "--steps", str(n), "--batch",
                                 str(batch), "--dtypes", "bf16", "--resolution", "512", "--rows", chosen, "--warmup",
                                 "0", "--row-timeout", str(per_row), "--out", str(out / name)], total))
    keep = {"sd": ("ladder-fp32", "ladder-bf16", "paper"),
            **{f: (f"ladder-{v[1]}-bf16", f"ladder-{v[1]}-flow-grpo") for f, v in FLOW_LADDERS.items()}}
    chosen = {n for f in families.split(",") for n in keep.get(f, ())} | {"install"}
    return [step for step in steps if step[0] in chosen]


def run_step(name: str, command: list[str], limit: int) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, timeout=limit, capture_output=True, text=True)
        code, tail = done.returncode, (done.stdout + done.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        code, tail = "timeout", f"stopped after {limit} s"
    return dict(name=name, command=command, exit_code=code, seconds=round(time.perf_counter() - start, 1), tail=tail)


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown (no nvidia-smi)"


def markdown(report: dict, out: Path) -> str:
    lines = [f"# GPU check, {report['date']}, {report['gpu']}", "",
             f"Paper run: published protocol with these cuts to fit the time: {', '.join(CUTS)}.", "",
             "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['exit_code']} | {s['seconds']} |" for s in report["steps"]]
    for name in ("ladder-fp32/ladder.md", "ladder-bf16/ladder.md", "paper/summary.md",
                 *(f"{step}/ladder.md" for step in LADDER_STEPS)):
        if (out / name).is_file():
            lines += ["", f"## {name}", "", (out / name).read_text().strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--wheels", help="folder of the pinned wheels (pip download, see README) to install offline first")
    p.add_argument("--out", default="results/gpu-check", help="output folder (gpu_check.json, gpu_check.md)")
    p.add_argument("--dry-run", action="store_true", help="print every command with its time limit and exit")
    p.add_argument("--families", default="sd,sd3",
                   help="model families to measure: sd (SD 1.5), sd3 (SD 3.5 M), flux (FLUX.1-dev)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if args.wheels and not Path(args.wheels).is_dir():
        print(f"error: --wheels {args.wheels!r} is not a folder; pip download the wheels first (README)",
              file=sys.stderr)
        return 2
    steps = commands(out, args.wheels, args.families)
    if args.dry_run:
        for name, command, limit in steps:
            print(f"# {name} (at most {limit} s)\n$ " + " ".join(command))
        return 0
    from bench.core.errors import UsageError
    from bench.core.files import check_output  # standard library only, like this module

    try:
        check_output(out, "--out", folder=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    report = dict(date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), gpu=gpu_name(),
                  python=platform.python_version(), steps=[])
    for name, command, limit in steps:
        print(f"[gpu-check] {name} ...", flush=True)
        report["steps"].append(run_step(name, command, limit))
        print(f"[gpu-check] {name}: exit {report['steps'][-1]['exit_code']} in {report['steps'][-1]['seconds']} s")
        if name == "install" and report["steps"][-1]["exit_code"] != 0:
            break  # without the pins nothing else can run
    for name in ("ladder-fp32", "ladder-bf16", *LADDER_STEPS):
        table = out / name / "ladder.csv"
        report[name] = table.read_text() if table.is_file() else None
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(report, out))
    print((out / "gpu_check.md").read_text())
    return 0 if all(s["exit_code"] == 0 for s in report["steps"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
