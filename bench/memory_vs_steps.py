"""``python -m bench.memory_vs_steps --model tiny-random --steps 5,10,20,50``: memory and time of AlignProp's gradient modes.

The measurement itself lives in ``bench.perf.scaling``; ``bench.memory_ladder`` compares whole methods instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.files import check_output
from bench.core.text import safe_name
from bench.perf.memory import return_freed_memory_to_os
from bench.perf.scaling import MODES, measure, measure_isolated, write_outputs


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_vs_steps", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random", help="model: registry name, diffusers directory or hub id (default tiny-random)")
    parser.add_argument("--steps", default="5,10,20,50", help="sampling step counts T, comma-separated (default 5,10,20,50)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"modes, comma-separated, from {', '.join(MODES)} (default all)")
    parser.add_argument("--batch", type=int, default=1, help="images per rollout (default 1)")
    parser.add_argument("--k-range", default="1,10", help="random-k: K drawn uniformly from LO,HI, clipped to T (default 1,10)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance weight (default 7.5; <= 1 disables)")
    parser.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                        help="measure each (T, mode) in a fresh process: auto = yes on CPU (RSS needs it), no on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rollout noise and of random-k's K (default 0)")
    parser.add_argument("--out", default=None, help="output folder (default results/scaling/<model>); replaced whole")
    parser.add_argument("--worker", default=None, help="internal: measure one JSON-encoded setting and print JSON")
    args = parser.parse_args(argv)  # fmt: skip
    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.worker:
        return_freed_memory_to_os()
        spec = json.loads(args.worker)
        spec["k_range"] = tuple(spec["k_range"])
        print(json.dumps(measure(**spec)))
        return 0
    steps = parse_ints(args.steps, "--steps")
    k_range = tuple(parse_ints(args.k_range, "--k-range"))
    if len(k_range) != 2 or k_range[0] > k_range[1]:
        raise UsageError(f"--k-range {args.k_range!r} must be LO,HI with 1 <= LO <= HI")
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UsageError(f"unknown mode(s) {unknown or args.modes!r}; valid: {', '.join(MODES)}")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    from bench.core.models import check_model

    check_model(args.model)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} but CUDA is not available here; use --device cpu")
    out = Path(args.out) if args.out else Path("results") / "scaling" / safe_name(args.model)
    check_output(out, "--out", folder=True, whole=True)  # before the measurements
    isolate = args.isolate == "yes" or (args.isolate == "auto" and not device.startswith("cuda"))
    rows = []
    for t in steps:
        for mode in modes:
            spec = dict(model=args.model, steps=t, mode=mode, batch=args.batch, device=device, k_range=k_range,
                        guidance=args.guidance, seed=args.seed)  # fmt: skip
            row = measure_isolated(spec) if isolate else measure(**spec)
            if not isolate:
                row["memory_kind"] += " (in-process: allocator reuse, lower bound)"
            rows.append(row)
            print(f"T={t:>3} {mode:<12} {row['seconds']:.2f} s  {row['peak_mem_mb']:.1f} MB", file=sys.stderr)
    table = pd.DataFrame(rows)
    write_outputs(table, out, model=args.model)
    print((out / "scaling.md").read_text())
    return 0

def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a comma-separated list of integers, e.g. 5,10,20,50") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{flag} {text!r} must list integers >= 1, e.g. 5,10,20,50")
    return values


if __name__ == "__main__":
    raise SystemExit(main())
