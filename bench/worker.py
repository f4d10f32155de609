"""``python -m bench.worker RUN_DIR``: one (method, reward, seed) run in its own process.

Reads ``RUN_DIR/config.json``, trains until the first budget is reached (``bench.harness.loop``), appends rows to
``RUN_DIR/rows.jsonl`` as they are recorded and writes ``RUN_DIR/result.json`` (status and counters); a crash is
recorded there, never lost. SIGTERM or SIGINT stops it cleanly (``interrupted``, resumable); it dies with the
process that launched it; one worker at a time holds a run folder.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
import warnings
from pathlib import Path

from bench.core import distributed
from bench.core.cli import quiet_libraries
from bench.core.files import write_json
from bench.harness.guard import (INTERRUPT_EXIT, Interrupted, SafeStream, die_with_parent, keep_error_log, lock_folder,
                                 raise_on_signals, release_error_log, reserve_error_log)
from bench.harness.loop import RESULT, Run, failure_text
from bench.harness.recorder import ROWS, counters, read_rows


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a reward's stand-in fallback) as one line each, without the Python source line."""
    print(f"warning: {message}", file=file or sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    run_dir = Path((argv or sys.argv[1:])[0])
    sys.stderr = SafeStream(sys.stderr)
    die_with_parent()
    raise_on_signals()
    code = 0
    warnings.simplefilter("once", UserWarning)
    warnings.showwarning = one_line_warning
    try:
        quiet_libraries()
        main_process = int(os.environ.get("RANK", "0")) == 0  # before torch.distributed is joined
        lock = lock_folder(run_dir, "worker", wait_s=60) if main_process else None  # noqa: F841
        if main_process:
            reserve_error_log(run_dir)
        result = Run(run_dir).execute()
    except Interrupted as exc:  # stopped before or after the training loop
        result = dict(status="interrupted", error=f"stopped by {exc.name}", **counters(read_rows(run_dir / ROWS)))
    except Exception as exc:  # the run failed: keep the message, let the other runs go on
        keep_error_log(run_dir, traceback.format_exc())
        traceback.print_exc()
        message = failure_text(exc, run_dir)
        result = dict(status="error", error=message, **counters(read_rows(run_dir / ROWS)))
    if result.get("final_eval_reward") is not None and not math.isfinite(result["final_eval_reward"]):
        result["final_eval_reward"] = None
    if result["status"] == "interrupted":
        code = INTERRUPT_EXIT
    if distributed.is_main():
        release_error_log(run_dir)  # before the result: its space may be what result.json needs
        try:
            write_json(run_dir / RESULT, result)
        except OSError as exc:  # disk full: the launcher reads the cause from this last line
            print(f"error: cannot write {run_dir / RESULT}: {exc}", file=sys.stderr, flush=True)
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
