"""``python -m bench.suite``: the benchmark suite, tasks x families x methods x seeds, tuned with equal effort.

    python -m bench.suite [--quick] [--tasks a,b] [--families sd,sd3] [--methods a,b] [--seeds 0,1,2] --out DIR
    python -m bench.suite --out DIR --resume              # continue it: finished folders are skipped
    python -m bench.suite --dry-run                        # print every bench.tune / bench.run command, write nothing

One ``bench.run`` results folder per (task, family) at ``OUT/<task>/<family>/`` (every tool that reads a results
folder reads it), after one ``bench.tune`` per family (``OUT/tune/<family>/``, tuned files in ``OUT/tuned/``);
``OUT/suite.json`` records the command, commit, task file, every command with its state, and CPU seconds.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from bench.core.cli import command
from bench.core.errors import UsageError

STAGES = ("all", "tune", "run")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets (8 queries, 4 sampling steps, 2 seeds, one method of each kind per family, no "
                        "tuning): minutes; its numbers mean nothing")
    p.add_argument("--tasks", help="tasks to run, comma-separated (default: every task of the task file)")
    p.add_argument("--families", help="model families, comma-separated (default: every family the tasks run on)")
    p.add_argument("--methods", help="methods, comma-separated; each runs on the families it is registered for "
                                     "(default: every registered method; --quick: alignprop, grpo, flow-grpo, rwr)")
    p.add_argument("--seeds", help="evaluation seeds, comma-separated (default 0,1,2; --quick 0,1)")
    p.add_argument("--stage", default="all", choices=STAGES, metavar="|".join(STAGES),
                   help="all (default), tune (the tuning only) or run (the runs, with the tuned files of an earlier "
                        "--stage tune); another stage into the same --out needs --resume")
    p.add_argument("--grid", help='tuning grid, as bench.tune --grid (default "lr=1e-3,3e-3,1e-2"; --quick: none), '
                                  "or none: no tuning, every method at its defaults")
    p.add_argument("--tune-task", help="the task each family is tuned on (default: the first chosen task it runs)")
    p.add_argument("--tasks-file", help="task file (default bench/suite/tasks.toml)")
    p.add_argument("--jobs", type=int, help="runs at once within each bench.run and bench.tune (default 2)")
    p.add_argument("--out", help="suite folder (default results/suite-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the suite in --out begun by this same command: finished folders are skipped")
    p.add_argument("--dry-run", action="store_true", help="print the plan (every command) and write nothing")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(given)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {args.jobs}")
    if args.resume and not args.out:
        raise UsageError("--resume continues a suite: give its --out")
    if args.out is not None and not args.out.strip():
        raise UsageError("--out is empty; name a suite folder, or leave --out out for the default")
    args.out = args.out or f"results/suite-{'quick-' if args.quick else ''}{datetime.now():%Y%m%d-%H%M%S}"
    from bench.suite.console import print_plan
    from bench.suite.plan import make_plan
    from bench.suite.runner import check_out, check_stage, run_suite, states

    plan = make_plan(args)
    shown = states(plan) if args.resume and (Path(args.out) / "suite.json").is_file() else None
    if args.dry_run:
        if args.resume:
            check_out(plan, True)
        print_plan(plan, args.stage, shown)
        print("dry run: nothing written")
        return 0
    earlier = check_out(plan, args.resume)
    check_stage(plan, args.stage)
    print_plan(plan, args.stage, shown)
    suite_argv = [a for a in given if a != "--resume"]
    if not any(a == "--out" or a.startswith("--out=") for a in given):
        suite_argv += ["--out", args.out]  # the default folder, so that the recorded command repeats
    return run_suite(plan, suite_argv, args.stage, earlier, given)


if __name__ == "__main__":
    raise SystemExit(main())
