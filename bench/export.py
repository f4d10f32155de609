"""``python -m bench.export RUN_DIR --out DIR [--merge] [--base MODEL]``: a finished run's adapter for diffusers.

DIR gets ``pytorch_lora_weights.safetensors`` (``pipe.load_lora_weights(DIR)`` reads it; push DIR to the Hub as is)
and a model card ``README.md`` (base model, method, reward, budget, final reward with its interval); with
``--merge``, a full pipeline with the LoRA fused in instead (``DiffusionPipeline.from_pretrained(DIR)``).
The work lives in ``bench.analysis.export``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.core.cli import command, quiet_libraries


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder, DIR/runs/<run_id>")
    parser.add_argument("--out", help="export folder (default RUN_DIR/../../export/<run_id>); replaced whole if it "
                                      "is an earlier export, refused if it holds anything else")
    parser.add_argument("--merge", action="store_true",
                        help="write a full pipeline with the LoRA fused into the base model instead of the adapter")
    parser.add_argument("--base", metavar="MODEL",
                        help="with --merge: the base model to fuse into (default: the run's model); one the adapter "
                             "does not fit is refused")
    args = parser.parse_args(argv)
    quiet_libraries()
    from bench.analysis.export import default_out, export_run
    from bench.core.errors import UsageError
    from bench.core.files import check_output

    if args.base and not args.merge:
        raise UsageError("--base only applies with --merge; add --merge or drop --base")
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else default_out(run_dir)
    check_output(out, "--out", folder=True, whole=True)  # before any model is loaded
    export_run(run_dir, out, merged=args.merge, base=args.base)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
