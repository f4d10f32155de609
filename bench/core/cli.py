"""What every command shares: bad input as one line and exit code 2, and quiet libraries."""

from __future__ import annotations

import functools
import sys

from bench.core.errors import OutputError, UsageError


def command(main):
    """Wrap a command's ``main(argv) -> int``: a ``UsageError`` (``OutputError``) prints ``error: <one line>`` on
    stderr and returns its exit code, 2 (1), instead of a traceback; Ctrl-C prints one line and returns 130."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv) or 0
        except (UsageError, OutputError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM turned into one) outside a command's own handling
            print("interrupted", file=sys.stderr)
            return 130

    return wrapped


def quiet_libraries() -> None:
    """Library chatter (deprecations inside trl, dtype notes) would bury the progress bar and the summary."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # diffusers and transformers reset their library logger's level when first imported: set it through them.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars; the worker draws its own
    transformers_logging.set_verbosity_error()
    for name in ("trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
