"""Memory and speed ladder of every method on one model: ``python -m bench.ladder``.

    python -m bench.ladder --model sd15-random --steps 50 --batch 1 --dtypes fp32,bf16   # the GPU table
    python -m bench.ladder --model tiny-random --steps 4                                 # a CPU smoke check

For each row (AlignProp full without / with checkpointing, K=1, randomized K, DDPO, RWR) and dtype (fp32, or bf16
autocast), one fresh process builds the model, runs one warm-up and one timed optimizer step of the method with the
toy reward, and reports seconds per step and peak memory (CUDA max allocated; on CPU the process's peak RSS). A row
that runs out of memory is reported as ``oom``. The ``sampler`` rows time the shared sampler without gradient
against diffusers' own ``StableDiffusionPipeline`` on the same latents (ratio < 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS = {  # row -> (method, config overrides)
    "alignprop-full-nockpt": ("alignprop-full", {"checkpointing": False}),
    "alignprop-full": ("alignprop-full", {}),
    "alignprop-k1": ("alignprop-k1", {}),
    "alignprop": ("alignprop", {}),  # randomized K ~ U[1, T]
    "ddpo": ("ddpo", {}),  # trl's DDPOTrainer
    "rwr": ("rwr", {}),
}


def measure(row: str, model: str, steps: int, batch: int, dtype: str, warmup: int) -> dict:
    """One row in this process: seconds of one optimizer step and peak memory."""
    import torch

    from bench.models import load_model
    from bench.prompts import load_prompts
    from bench.recorder import peak_memory_mb
    from bench.worker import quiet_libraries
    from methods import METHODS
    from rewards.toy import MeanBrightness

    quiet_libraries()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(model, device=str(device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    if row == "sampler":
        return _sampler_ratio(loaded.pipe, steps, batch, autocast, device)
    name, extra = ROWS[row]
    cls = METHODS.get(name)
    method = cls(loaded.pipe, MeanBrightness(), load_prompts("simple-animals"),
                 cls.Config(steps=steps, batch_size=batch, **extra), seed=0)
    try:
        for _ in range(warmup):
            with autocast:
                method.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with autocast:
            method.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    except torch.cuda.OutOfMemoryError:
        return dict(status="oom", seconds=None, peak_mem_mb=peak_memory_mb(device))
    return dict(status="ok", seconds=seconds, peak_mem_mb=peak_memory_mb(device))


def _sampler_ratio(pipe, steps, batch, autocast, device) -> dict:
    import torch

    from bench.sampler import Sampler, SamplerConfig

    sampler = Sampler(pipe, SamplerConfig(steps=steps, guidance_scale=7.5))
    prompts = ["a photo of a cat"] * batch
    noise = sampler.initial_noise(batch, torch.Generator().manual_seed(0))

    def timed(fn):
        fn()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    with autocast:
        ours = timed(lambda: sampler.sample(prompts, latents=noise))
        theirs = timed(lambda: pipe(prompts, latents=noise.clone(), num_inference_steps=steps, guidance_scale=7.5,
                                    output_type="pt"))
    return dict(status="ok", seconds=ours, diffusers_seconds=theirs, ratio=ours / theirs, peak_mem_mb=None)


def main(argv: list[str] | None = None) -> int:
    from bench.errors import UsageError

    p = argparse.ArgumentParser(prog="python -m bench.ladder", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sd15-random", help="model (default sd15-random: SD 1.5 architecture)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps T (default 50)")
    p.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast), comma-separated")
    p.add_argument("--rows", default=",".join([*ROWS, "sampler"]), help="rows to measure, comma-separated")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed one")
    p.add_argument("--out", default="results/ladder", help="output folder (ladder.csv, ladder.md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return 0
    try:
        rows = [r for r in args.rows.split(",") if r]
        dtypes = [d for d in args.dtypes.split(",") if d]
        bad = [r for r in rows if r not in ROWS and r != "sampler"] + [d for d in dtypes if d not in ("fp32", "bf16")]
        if bad or not rows or not dtypes or args.steps < 1 or args.batch < 1:
            raise UsageError(f"bad --rows/--dtypes/--steps/--batch ({bad or 'empty'}); rows: {', '.join(ROWS)}, sampler")
        from bench.models import check_model

        check_model(args.model)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    results = []
    for dtype in dtypes:
        for row in rows:
            spec = dict(row=row, model=args.model, steps=args.steps, batch=args.batch, dtype=dtype, warmup=args.warmup)
            done = subprocess.run([sys.executable, "-m", "bench.ladder", "--worker", json.dumps(spec)],
                                  capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if lines:
                result = json.loads(lines[-1])
            else:
                oom = "out of memory" in done.stderr.lower()
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                result = dict(status="oom" if oom else "error", error=tail[:200])
            results.append({"row": row, "dtype": dtype, **result})
            print(json.dumps(results[-1]), file=sys.stderr)
    table = pd.DataFrame(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ladder.csv", index=False)
    from bench.report import markdown_table

    head = f"# Ladder: {args.model}, T={args.steps}, batch {args.batch}\n\n"
    (out / "ladder.md").write_text(head + markdown_table(table) + "\n")
    print((out / "ladder.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
