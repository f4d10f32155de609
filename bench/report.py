"""``python -m bench.report DIR [DIR ...] [--out OUT_DIR]``: report.md plus figures from results folders.

What the report holds: ``bench.analysis.report``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.analysis.report import build_report
from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.files import check_output


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="results folder(s) written by python -m bench.run")
    parser.add_argument("--out", default=None, help="report folder to write (default: DIR/report of the first DIR); replaced whole")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for confidence intervals (default 2000)")
    parser.add_argument("--formats", default="png,pdf",
                        help="figure formats, comma-separated (default png,pdf); html adds report.html, one "
                             "self-contained page (PNG figures embedded, sortable tables, the commands)")
    parser.add_argument("--reference", default=None,
                        help="method whose final reward (and start, for fractions of the best gain) the speed-up "
                             "table measures the others against; it must have runs in DIR (default ddpo, if any)")
    args = parser.parse_args(argv)
    formats = tuple(f for f in args.formats.split(",") if f)
    if not formats or any(f not in ("png", "pdf", "svg", "html") for f in formats):
        raise UsageError(f"--formats {args.formats!r} invalid; use a comma list of png, pdf, svg, html")
    if args.n_boot < 1:
        raise UsageError(f"--n-boot must be >= 1, got {args.n_boot}")
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    check_output(out, "--out", folder=True, whole=True)  # before reading anything: nothing half-written
    line = shlex.join(["python", "-m", "bench.report", *(sys.argv[1:] if argv is None else argv)])
    build_report(args.dirs, out, seed=args.seed, n_boot=args.n_boot, formats=formats, reference=args.reference,
                 command=line)
    print(out / "report.md")
    if "html" in formats:
        print(out / "report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
