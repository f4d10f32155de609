"""``python -m bench.build_time [NAME] [--repeats 5]``: median seconds to build (load) a model on the CPU."""

from __future__ import annotations

import argparse
import statistics
import time

from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.models import load_model


@command
def main(argv: list[str] | None = None) -> int:
    """Time building a model (registry name, directory or hub id) on the CPU."""
    p = argparse.ArgumentParser(prog="python -m bench.build_time", description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="tiny-random", help="model to build (default tiny-random)")
    p.add_argument("--repeats", type=int, default=5, help="builds to time after the first (default 5)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    start = time.perf_counter()
    load_model(args.model)  # the first build also imports diffusers and transformers
    first = time.perf_counter() - start
    seconds = []
    for seed in range(args.repeats):
        start = time.perf_counter()
        load_model(args.model, seed=seed)
        seconds.append(time.perf_counter() - start)
    print(f"{args.model}: built in {statistics.median(seconds):.3f} s (median of {args.repeats}, max "
          f"{max(seconds):.3f} s); the first build, library imports included: {first:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
