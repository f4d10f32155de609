"""``python -m bench.compare NEW_DIR --baseline BASELINE``: regression gate for smoke benchmarks.

What it compares and its tolerances: ``bench.analysis.compare``. Exit code 0 when nothing regressed, 1 on a
regression, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.analysis.compare import KEY, Tolerance, baseline_json, compare, load_summary, render
from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.files import check_output, write_text


@command
def main(argv: list[str] | None = None) -> int:
    defaults = Tolerance()
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("new", metavar="NEW_DIR", help="results folder of the new run (python -m bench.run --out)")
    parser.add_argument("--baseline", help="baseline: a results folder or a JSON file written by --write-baseline")
    parser.add_argument("--write-baseline", metavar="PATH", help="write NEW_DIR's summary as a baseline JSON file to PATH")
    parser.add_argument("--reward-sigmas", type=float, default=defaults.reward_sigmas,
                        help=f"allowed reward drop in standard errors across seeds (default {defaults.reward_sigmas:g})")
    parser.add_argument("--reward-rel-tol", type=float, default=defaults.reward_rel_tol,
                        help=f"allowed reward drop as a fraction of |baseline| (default {defaults.reward_rel_tol:g})")
    parser.add_argument("--reward-abs-tol", type=float, default=defaults.reward_abs_tol,
                        help=f"allowed reward drop in reward units, at least (default {defaults.reward_abs_tol:g})")
    parser.add_argument("--time-tol", type=float, default=defaults.time_tol,
                        help=f"largest allowed seconds-per-step ratio new/baseline (default {defaults.time_tol:g})")
    parser.add_argument("--mem-tol", type=float, default=defaults.mem_tol,
                        help=f"largest allowed peak-memory ratio new/baseline (default {defaults.mem_tol:g})")
    parser.add_argument("--json", metavar="PATH", help="also write the comparison table as JSON to PATH")
    args = parser.parse_args(argv)  # fmt: skip
    if not args.baseline and not args.write_baseline:
        raise UsageError("nothing to do: pass --baseline BASELINE to compare, or --write-baseline PATH")
    inputs = [p for p in (args.new, args.baseline) if p]  # never overwritten, nor compared against what was just written
    for flag, path in (("--write-baseline", args.write_baseline), ("--json", args.json)):
        if path:  # before anything is read or printed
            check_output(Path(path), flag, example="baseline.json" if flag == "--write-baseline" else "compare.json",
                         inputs=inputs)
    if args.json and args.write_baseline and Path(args.json).resolve() == Path(args.write_baseline).resolve():
        raise UsageError(f"--json and --write-baseline both name {args.json!r}; one would overwrite the other: name "
                         "two files")
    tol = Tolerance(args.reward_sigmas, args.reward_rel_tol, args.reward_abs_tol, args.time_tol, args.mem_tol)
    if not Path(args.new).is_dir():
        raise UsageError(f"results folder {args.new!r} does not exist; pass a folder written by bench.run")
    new = load_summary(args.new)  # a folder read around damage (no tables: from its rows) says so on stderr
    if args.write_baseline:
        write_text(Path(args.write_baseline), baseline_json(new, str(args.new)))
        print(f"wrote baseline {args.write_baseline} ({len(new)} entries)")
    if not args.baseline:
        return 0
    table = compare(new, load_summary(args.baseline), tol)
    print(render(table))
    if args.json:
        write_text(Path(args.json), table.to_json(orient="records", indent=2) + "\n")
    bad = table[table["regression"]]
    if len(bad):
        names = ", ".join("/".join(str(r[k]) for k in KEY) for _, r in bad.iterrows())
        print(f"REGRESSION in {len(bad)} of {len(table)}: {names}")
        return 1
    print(f"OK: no regression in {len(table)} entries (reward {tol.reward_sigmas:g} SE / {tol.reward_rel_tol:g} rel / "
          f"{tol.reward_abs_tol:g} abs; time {tol.time_tol:g}x; memory {tol.mem_tol:g}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
