"""Harness overhead around trl's DDPO step: ``python -m bench.trl_overhead [--steps 20] [--repeats 8]``.

Times (a) trl's ``DDPOTrainer.step`` called directly and (b) the same trainer driven by the harness: the ``ddpo``
method's ``step()`` plus what the worker does per step (metrics, recorder rows, divergence check). Both use the same
model, settings and seeds, alternating (a) and (b) so machine noise hits both; prints per-step medians and the
overhead (b - a) / a.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.core.cli import command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.trl_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="sampling steps T")
    p.add_argument("--batch", type=int, default=4, help="samples per step")
    p.add_argument("--repeats", type=int, default=8, help="timed steps of each kind")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the heavy imports: --help and bad flags answer at once
    from bench.core.models import load_model
    from bench.core.prompts import load_prompts
    from bench.harness.recorder import Recorder, is_finite
    from bench.core.cli import quiet_libraries
    from methods.ddpo import DDPO

    quiet_libraries()
    from rewards import build_reward

    model = load_model("tiny-random")
    config = DDPO.Config(steps=args.steps, batch_size=args.batch)
    method = DDPO(model.pipe, build_reward("mean-brightness"), load_prompts("simple-animals"), config, seed=0)
    recorder = Recorder(dict(run_id="overhead"), torch.device("cpu"))
    method.step()  # warm-up
    raw, harness = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        method.trainer.step(method.epoch, method.epoch)
        method.epoch += 1
        raw.append(time.perf_counter() - start)
        start = time.perf_counter()
        metrics = method.step()
        recorder.step += 1
        recorder.add("train", metrics)
        is_finite(metrics["reward_mean"], metrics["loss"])
        all(torch.isfinite(q).all() for q in method.trainable_parameters())
        harness.append(time.perf_counter() - start)
    a, b = statistics.median(raw), statistics.median(harness)
    print(f"trl DDPOTrainer.step: {a:.4f} s   harness step: {b:.4f} s   overhead: {100 * (b - a) / a:+.2f} %"
          f"   (median of {args.repeats}, T={args.steps}, batch {args.batch}, tiny-random)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
