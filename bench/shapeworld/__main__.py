"""``python -m bench.shapeworld --check [--model tiny-shapes-flow]``: colour / shape / count accuracy of base
``tiny-shapes`` (or ``tiny-shapes-flow``) samples."""

from __future__ import annotations

import argparse

from bench.core.cli import command
from bench.shapeworld.check import check


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shapeworld", description="Quality of tiny-shapes samples")
    parser.add_argument("--check", action="store_true", help="measure colour / shape / count accuracy and the shape-aesthetic headroom")
    parser.add_argument("--prompts", default="shapes-eval", help="prompt set (default: the held-out one)")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (DDIM, or flow-ODE Euler steps)")
    parser.add_argument("--model", default="tiny-shapes", choices=("tiny-shapes", "tiny-shapes-flow"))
    parser.add_argument("--guidance", type=float, default=2.0, help="guidance scale")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 0
    for key, value in check(args.n, args.steps, args.guidance, args.prompts, args.model).items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
