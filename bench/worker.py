"""``python -m bench.worker RUN_DIR``: one (method, reward, seed) run in its own process.

Reads ``RUN_DIR/config.json``, trains until the first budget is reached (``bench.harness.loop``), and writes
``RUN_DIR/result.json`` (status, counters and every recorded row); a crash is recorded there, never lost.
"""

from __future__ import annotations

import math
import sys
import traceback
import warnings
from pathlib import Path

from bench.core import distributed
from bench.core.cli import quiet_libraries
from bench.core.files import write_json
from bench.harness.loop import RESULT, Run, rows_so_far


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a reward's stand-in fallback) as one line each, without the Python source line."""
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    run_dir = Path((argv or sys.argv[1:])[0])
    quiet_libraries()
    warnings.simplefilter("once", UserWarning)
    warnings.showwarning = one_line_warning
    try:
        result = Run(run_dir).execute()
    except Exception as exc:  # the run failed: keep the message, let the other runs go on
        (run_dir / "error.log").write_text(traceback.format_exc())
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        result = dict(status="error", error=message, rows=rows_so_far(run_dir))
    if result.get("final_eval_reward") is not None and not math.isfinite(result["final_eval_reward"]):
        result["final_eval_reward"] = None
    if distributed.is_main():
        write_json(run_dir / RESULT, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
