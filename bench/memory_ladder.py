"""Memory and speed ladder of every method on one model: ``python -m bench.memory_ladder``.

The measurement itself lives in ``bench.perf.ladder``; ``bench.memory_vs_steps`` follows one method's gradient modes
as the number of sampling steps grows instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.core.cli import command
from bench.core.errors import UsageError
from bench.core.files import check_output
from bench.perf.ladder import DEFAULT_ROWS, ROWS, TRL_PAIRS, ladder_figure, ladder_markdown, measure, parse_row, with_pairs


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_ladder", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="sd15-random", help="model (default sd15-random: SD 1.5 architecture)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps T (default 50)")
    p.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    p.add_argument("--resolution", type=int, default=0, help="image size in pixels (default 0: the model's own)")
    p.add_argument("--dtypes", default="fp32,bf16", help="precisions, comma-separated: fp32, bf16, fp16")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                   help=f"rows, comma-separated, from {', '.join(ROWS)}, sampler, or 'all' (default: the GPU ladder's)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    p.add_argument("--repeats", type=int, default=1, help="timed steps per row; the median is reported")
    p.add_argument("--out", default="results/ladder", help="output folder (ladder.csv, ladder.md, ladder.png/pdf)")
    p.add_argument("--row-timeout", type=float, help="seconds after which a row's process is stopped (status timeout)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return 0
    rows = [*ROWS, "sampler"] if args.rows == "all" else [r for r in args.rows.split(",") if r]
    dtypes = [d for d in args.dtypes.split(",") if d]
    try:
        rows = with_pairs(rows)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bad = [r for r in rows if parse_row(r)[0] not in ROWS and r != "sampler"]
    bad += [d for d in dtypes if d not in ("fp32", "bf16", "fp16")]
    if bad or not rows or not dtypes or min(args.steps, args.batch, args.repeats) < 1 or args.warmup < 0:
        raise UsageError(f"bad --rows/--dtypes/--steps/--batch/--repeats ({bad or 'empty or < 1'}); rows: "
                         f"{', '.join(ROWS)}, sampler; dtypes: fp32, bf16")
    from bench.core.models import check_model

    check_model(args.model)
    out = check_output(Path(args.out), "--out", folder=True)  # before the measurements
    import pandas as pd

    from bench.perf.memory import last_line, run_isolated

    results = []
    for dtype in dtypes:
        step_mb = {}
        for row in rows:
            spec = dict(row=row, model=args.model, steps=args.steps, batch=args.batch, dtype=dtype, warmup=args.warmup,
                        repeats=args.repeats, resolution=args.resolution)
            base, mult = parse_row(row)
            if mult is not None:
                if step_mb.get(TRL_PAIRS[base]) is None:  # the trl pair failed: no budget to measure against
                    results.append({"row": row, "dtype": dtype, "status": "error", "error": "trl pair not measured"})
                    continue
                spec["budget_mb"] = mult * step_mb[TRL_PAIRS[base]]
            result, done = run_isolated("bench.memory_ladder", spec, timeout=args.row_timeout)
            if result is None:
                oom = "out of memory" in (done.stderr or "").lower()
                status = "timeout" if done.returncode == "timeout" else "oom" if oom else "error"
                result = dict(status=status, error=last_line(done.stderr or "")[:200])
            if result.get("status") == "ok":
                step_mb[row] = result.get("step_mem_mb")
            results.append({"row": row, "dtype": dtype, **result})
            print(json.dumps(results[-1]), file=sys.stderr)
    table = pd.DataFrame(results)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ladder.csv", index=False)
    ladder_figure(table, args, out)

    (out / "ladder.md").write_text(ladder_markdown(table, args) + "\n")
    print((out / "ladder.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
