"""``python -m bench.perf.identity --before DIR``: do two checkouts of the harness record the same values, and what does
each cost per reward query?

For each case and each repeat, one run of the checkout in ``--before`` (a copy of an earlier commit, e.g.
``git archive <commit> | tar -x -C DIR``) and one of this checkout, interleaved (A B, then B A, ...) since a shared
machine's load drifts, each in its own process with ``OMP_NUM_THREADS=1``. A method case (``CASES``: a method on a
tiny model) is a ``python -m bench.run --preset smoke`` run; an evaluation case (``EVALS``) times
``bench.core.evaluate.evaluate`` alone. Then:

- identity: every value of every run's ``metrics.parquet`` (all columns but timings and memory, ``VOLATILE``), the
  per-image rewards of its two evaluations and every tensor of its ``adapter.safetensors`` (an evaluation case: its
  scores and images) must equal the case's first before-run's bit for bit;
- cost: training CPU seconds per reward query (runs.csv ``cpu_s`` / ``samples``, evaluation excluded) and the whole
  worker's CPU seconds (training, both evaluations, start-up: the children's rusage); an evaluation case's CPU
  seconds per evaluation. Means over repeats, the ratio after / before, the load average at the start and end.

Prints a Markdown table and writes ``identity.json`` in ``--out``; exit code 1 when any value differs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.core.cli import command
from bench.core.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
CASES = {
    "alignprop": ("alignprop", "tiny-random"),
    "rwr": ("rwr", "tiny-random"),
    "grpo": ("grpo", "tiny-random"),
    "flow-grpo": ("flow-grpo", "tiny-flow-random"),
    "diffusion-nft": ("diffusion-nft", "tiny-flow-random"),
    "awm": ("awm", "tiny-flow-random"),
}
"""Case name -> (method, model): the sd family on tiny-random, the flow family on tiny-flow-random."""
EVALS = {"eval-sd": "tiny-random", "eval-sd3": "tiny-flow-random"}
"""Evaluation cases -> model: ``bench.core.evaluate.evaluate`` alone (8 images, 10 steps, guidance 4.5, a LoRA
attached as in a run, mean brightness as the reward), timed in-process over ``EVAL_REPEATS`` calls after a warm-up."""
EVAL_REPEATS = 5
EVAL_SCRIPT = """
import json, sys, time, torch
from bench.core.evaluate import EvalConfig, evaluate
from bench.core.lora import LoraSettings, add_lora
from bench.core.models import load_model
from bench.core.sampler import Sampler, SamplerConfig
torch.manual_seed(0)
pipe = load_model(sys.argv[1]).pipe
chain = Sampler(pipe, SamplerConfig()).chain
add_lora(chain.denoiser, LoraSettings(rank=4, target_modules=chain.lora_targets))
config = EvalConfig(n=8, steps=10, guidance_scale=4.5, batch_size=8)
prompts = ["snail", "hippopotamus", "cheetah", "crocodile", "owl", "zebra", "walrus", "flamingo"]
reward = lambda images, prompts: images.mean(dim=(1, 2, 3))
evaluate(pipe, reward, prompts, config)
start = time.process_time()
for _ in range(int(sys.argv[3])):
    scores, images = evaluate(pipe, reward, prompts, config)
cpu = time.process_time() - start
torch.save(dict(scores=scores, images=images), sys.argv[2])
print(json.dumps(dict(cpu_s=cpu)))
"""
VOLATILE = ("wall_s", "cpu_s", "peak_mem_mb")
"""metrics.parquet columns that measure time or memory (they differ between any two runs)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.identity", description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="folder of the earlier checkout (its bench/ and methods/)")
    parser.add_argument("--out", default="results/identity", help="output folder (default results/identity)")
    parser.add_argument("--cases", default=",".join([*CASES, *EVALS]),
                        help=f"comma-separated, from {', '.join([*CASES, *EVALS])} (default all)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per checkout and case, interleaved (default 2)")
    parser.add_argument("--max-steps", type=int, default=3, help="optimizer steps per run (default 3, the smoke's)")
    parser.add_argument("--reward", default="jpeg-compressibility", help="reward of every run (default "
                        "jpeg-compressibility: differentiable surrogate, no weights)")
    return parser


def load() -> float:
    return os.getloadavg()[0]


def one_run(code: Path, case: str, out: Path, args) -> dict:
    """One smoke run of ``case`` by the checkout in ``code``; its CPU seconds (whole worker) and run folder."""
    method, model = CASES[case]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(code))
    cmd = [sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods", method, "--model", model,
           "--reward", args.reward, "--max-steps", str(args.max_steps), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{case} in {code} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    import pandas as pd

    row = pd.read_csv(out / "runs.csv").iloc[0]
    return dict(case=case, code=str(code), out=str(out), status=row["status"], samples=int(row["samples"]),
                train_cpu_s=float(row["cpu_s"]), wall_s=time.perf_counter() - start,
                worker_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))


def eval_run(code: Path, case: str, out: Path) -> dict:
    """One evaluation case by the checkout in ``code``: CPU seconds per evaluation; images and scores saved."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(code))
    done = subprocess.run([sys.executable, "-c", EVAL_SCRIPT, EVALS[case], str(out / "eval.pt"), str(EVAL_REPEATS)],
                          cwd=code, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{case} in {code} failed:\n{done.stderr[-2000:]}")
    cpu = json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]
    return dict(case=case, code=str(code), out=str(out), eval_cpu_s=cpu / EVAL_REPEATS)


def eval_differences(a: Path, b: Path) -> tuple[int, list[str]]:
    """(values compared, what differs) between two evaluation cases' scores and images."""
    import torch

    ta, tb = (torch.load(p / "eval.pt") for p in (a, b))
    return sum(t.numel() for t in ta.values()), [k for k in ta if not torch.equal(ta[k], tb[k])]


def differences(a: Path, b: Path) -> tuple[int, list[str]]:
    """(values compared, what differs) between two run folders: every metrics.parquet value but ``VOLATILE``
    columns, the per-image rewards of both evaluations, every adapter weight."""
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    ma, mb = (pd.read_parquet(p / "metrics.parquet") for p in (a, b))
    keys = [c for c in ma.columns if c not in VOLATILE]
    ma, mb = (m[keys].sort_values(["run_id", "split", "metric", "step"]).reset_index(drop=True) for m in (ma, mb))
    diffs = [] if list(ma.columns) == list(mb.columns) and len(ma) == len(mb) else ["metrics.parquet shape"]
    n = ma.size
    if not diffs:
        unequal = ~((ma == mb) | (ma.isna() & mb.isna()))
        diffs += [f"{ma.loc[i, 'split']} {ma.loc[i, 'metric']} step {ma.loc[i, 'step']}: {float(ma.loc[i, 'value'])!r} != "
                  f"{float(mb.loc[i, 'value'])!r}" for i in unequal.any(axis=1).to_numpy().nonzero()[0]]
    (ra,), (rb,) = ((p / "runs").iterdir() for p in (a, b))
    for name in ("eval_first.json", "eval_last.json"):
        ea, eb = (json.loads((r / name).read_text()) for r in (ra, rb))
        n += len(ea["reward"])
        diffs += [] if ea == eb else [name]
    ta, tb = load_file(str(ra / "adapter.safetensors")), load_file(str(rb / "adapter.safetensors"))
    n += sum(t.numel() for t in ta.values())
    if set(ta) != set(tb):
        diffs.append("adapter keys")
    diffs += [f"adapter {k}" for k in ta if k in tb and not torch.equal(ta[k], tb[k])]
    return n, diffs


def mean(rows: list[dict], key) -> float:
    return sum(key(r) for r in rows) / len(rows)


def table(results: list[dict], checks: dict) -> str:
    """Markdown: per case the values compared, whether all were equal, and the means of both checkouts' costs."""
    lines = ["| case | values compared | all equal | cost | before | after | after / before |",
             "|---|---|---|---|---|---|---|"]
    for case, check in checks.items():
        rows = {x: [r for r in results if r["case"] == case and r["label"] == x] for x in ("before", "after")}
        costs = ([("eval CPU s", lambda r: r["eval_cpu_s"])] if case in EVALS else
                 [("train CPU s / query", lambda r: r["train_cpu_s"] / r["samples"]),
                  ("worker CPU s", lambda r: r["worker_cpu_s"])])
        for k, (name, key) in enumerate(costs):
            b, a = mean(rows["before"], key), mean(rows["after"], key)
            head = f"| {case} | {check['compared']} | {'yes' if not check['differs'] else 'NO'}" if k == 0 else "| | |"
            lines.append(f"{head} | {name} | {b:.3f} | {a:.3f} | {a / b:.3f} |")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    before, after, out = Path(args.before).resolve(), REPO, Path(args.out).resolve()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES and c not in EVALS]
    if unknown or not (before / "bench" / "run.py").is_file() or args.repeats < 1:
        raise UsageError(f"unknown case(s) {unknown} (valid: {', '.join([*CASES, *EVALS])}), --before without "
                         "bench/run.py, or --repeats < 1")
    results, start_load = [], load()
    for r in range(args.repeats):
        order = [("before", before), ("after", after)][:: 1 if r % 2 == 0 else -1]  # A B, then B A
        for case in cases:
            for label, code in order:
                folder = out / case / f"{label}-{r}"
                res = eval_run(code, case, folder) if case in EVALS else one_run(code, case, folder, args)
                results.append(dict(res, label=label, repeat=r))
                cost = (f"{res['eval_cpu_s']:.3f} CPU s per evaluation" if case in EVALS else
                        f"{res['train_cpu_s'] / res['samples']:.3f} train CPU s / query, {res['worker_cpu_s']:.1f} "
                        "worker CPU s")
                print(f"{case} {label} #{r}: {cost}, load {load():.1f}", flush=True)
    checks = {}
    for case in cases:
        ref, compared, differs = out / case / "before-0", 0, []
        for res in results:
            if res["case"] == case and Path(res["out"]) != ref:
                n, found = (eval_differences if case in EVALS else differences)(ref, Path(res["out"]))
                compared, differs = max(compared, n), differs + [f"{res['label']}-{res['repeat']}: {x}" for x in found]
        checks[case] = dict(compared=compared, differs=differs)
    text = table(results, checks)
    print(f"\nload {start_load:.1f} at the start, {load():.1f} at the end ({os.cpu_count()} cores); {args.repeats} "
          f"run(s) per checkout and case, each compared with before-0\n\n{text}")
    for case, check in checks.items():
        for line in check["differs"][:10]:
            print(f"{case}: {line}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "identity.json").write_text(json.dumps(dict(results=results, checks=checks, load_start=start_load,
                                                       load_end=load(), table=text), indent=1))
    return 1 if any(c["differs"] for c in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
