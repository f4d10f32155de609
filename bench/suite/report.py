"""``python -m bench.suite.report SUITE [--out DIR]``: the suite report (scoreboard, aggregate, curves, image grids,
speed-ups) from a suite folder.

What the report holds: ``bench.analysis.suite``; the tasks' true scores and their directions come from the task file
(``bench.suite.tasks``), the one suite.json names as ``tasks_file`` or the suite's own.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.analysis.suite import write_report
from bench.analysis.suite_scores import SCORES, read_suite_file
from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.files import check_output
from bench.suite.tasks import TASKS_FILE, load_tasks


def suite_tasks(suite: Path, spec: dict) -> dict:
    """The tasks of the task file the suite names (``tasks_file`` in its suite.json ``spec``, relative to the suite
    folder when not absolute), else of the suite's own file."""
    named = spec.get("tasks_file")
    path = TASKS_FILE if not named else Path(named) if Path(named).is_absolute() else suite / named
    return load_tasks(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.suite.report", description=__doc__.splitlines()[0])
    parser.add_argument("suite", metavar="SUITE", help="suite folder written by the suite runner (holds suite.json)")
    parser.add_argument("--out", default=None, help="report folder to write (default: SUITE/report); replaced whole")
    parser.add_argument("--score", default="true", choices=SCORES,
                        help="what the scoreboard normalises: the task's true score (default) or the learned reward")
    parser.add_argument("--reference", default=None,
                        help="speed-up reference: one method for every family, or family=method pairs "
                             "(default sd=ddpo,sd3=flow-grpo, the policy-gradient anchor per family)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every bootstrap resampling (default 0)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples per interval (default 2000)")
    parser.add_argument("--formats", default="png", help="figure formats, comma-separated, from png, pdf, svg "
                        "(default png)")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formats = tuple(f for f in args.formats.split(",") if f)
    if not formats or any(f not in ("png", "pdf", "svg") for f in formats):
        raise UsageError(f"--formats {args.formats!r} invalid; use a comma list of png, pdf, svg")
    if args.n_boot < 1:
        raise UsageError(f"--n-boot must be >= 1, got {args.n_boot}")
    suite = Path(args.suite)
    spec = read_suite_file(suite)
    out = Path(args.out) if args.out else suite / "report"
    check_output(out, "--out", folder=True, whole=True)  # before reading the cells: nothing half-written
    line = shlex.join(["python", "-m", "bench.suite.report", *(sys.argv[1:] if argv is None else argv)])
    write_report(suite, out, tasks=suite_tasks(suite, spec), score=args.score, reference=args.reference,
                 seed=args.seed, n_boot=args.n_boot, formats=formats, command=line)
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
