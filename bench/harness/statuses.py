"""Run statuses: what ``result.json`` and runs.csv say of how a run ended (``bench.harness.recorder`` re-exports
them)."""

COMPLETED = ("max_steps", "max_seconds", "max_samples")
"""Statuses of runs that finished their budget (their final evaluation is the trained adapter's)."""
STATUSES = (*COMPLETED, "diverged", "oom", "killed", "interrupted", "error", "skipped")
"""Every run status: ``killed`` = the worker died of a signal (not a known OOM kill); ``interrupted`` = stopped by
SIGINT/SIGTERM (resumable)."""
