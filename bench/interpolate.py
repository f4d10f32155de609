"""``python -m bench.interpolate RUN_A RUN_B --alphas 0,0.25,0.5,0.75,1``: AlignProp's LoRA-interpolation figure.

Blending and evaluation live in ``bench.analysis.interpolate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.analysis.interpolate import BASE, run_mix, write_outputs
from bench.core.cli import command, quiet_libraries
from bench.core.errors import UsageError
from bench.core.files import check_output


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interpolate", description=__doc__.splitlines()[0])
    parser.add_argument("run_a", metavar="RUN_A", help="run folder DIR/runs/<run_id> (alpha = 0)")
    parser.add_argument("run_b", metavar="RUN_B", help="run folder DIR/runs/<run_id> (alpha = 1), or 'base' for the base model")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="comma-separated blend weights in [0, 1] (default 0,0.25,0.5,0.75,1)")
    parser.add_argument("--out", help="output folder (default: RUN_A/../../mix/<A>__vs__<B>); replaced whole")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--strip-prompts", type=int, default=4, help="evaluation prompts shown in the image strip (default 4)")
    args = parser.parse_args(argv)  # fmt: skip
    quiet_libraries()
    alphas = parse_alphas(args.alphas)
    if args.out:  # the default folder is named after the runs, checked once they are read
        check_output(Path(args.out), "--out", folder=True, whole=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} but CUDA is not available here; use --device cpu")
    table, strips, facts = run_mix(args.run_a, args.run_b, alphas, device=device)
    b_name = facts["b"].name if facts["b"] is not None else BASE
    out = Path(args.out) if args.out else Path(args.run_a).parent.parent / "mix" / f"{facts['a'].name}__vs__{b_name}"
    check_output(out, "--out", folder=True, whole=True)
    write_outputs(table, strips, facts, out, strip_prompts=max(1, args.strip_prompts))
    print(table.to_string(index=False))
    print(out / "mix.md")
    return 0

def parse_alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise UsageError(f"--alphas {text!r} is not a comma-separated list of numbers, e.g. 0,0.25,0.5,0.75,1") from None
    if not alphas or any(not 0 <= a <= 1 for a in alphas):
        raise UsageError(f"--alphas {text!r} must list numbers in [0, 1], e.g. 0,0.25,0.5,0.75,1")
    return sorted(set(alphas))


if __name__ == "__main__":
    raise SystemExit(main())
