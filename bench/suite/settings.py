"""The suite's budgets: the full suite (sized to about 8 hours of a 2-core CPU machine, tuning included:
``docs/suite.md`` has the arithmetic) and ``--quick`` (minutes; its numbers mean nothing), and the per-method
settings every run shares.

Every (task, family) folder is one ``bench.run`` with these flags plus the task's own (``Task.run_args``); the
tuning is one ``bench.tune`` per family on one task's validation prompts (``bench.suite.plan``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

QUICK_LABEL = "QUICK: numbers meaningless at this budget"
"""Printed by the console and written into suite.json for a ``--quick`` suite."""

METHOD_SETS: dict[str, dict[str, str]] = {
    # The Makefile's DDPO_SETS: ddpo-pytorch's per-prompt statistics over rounds of 32 samples.
    "ddpo": {"batch_size": "32", "per_prompt_stat_tracking": "true", "stat_buffer_size": "32"},
    # The Makefile's GRPO_SETS and GRPO_KL_SETS (their lr and updates are tuned here): 4 groups of 8 per round.
    "grpo": {"batch_size": "32", "group_size": "8"},
    "grpo-kl": {"batch_size": "32", "group_size": "8"},
    # The Makefile's FLOW_PG_SETS (issue 34: each flow policy gradient's own loop structure, per update).
    "flow-grpo": {"batch_size": "8"},
    "dance-grpo": {"batch_size": "8"},
    "mixgrpo": {"batch_size": "2"},
    "diffusion-nft": {"batch_size": "8", "grad_accum": "2"},
    # Issue 38's methods at the same loop structure as their parents: flow-grpo-guard is flow-grpo's loop; awm makes
    # one update per sampling round of several groups (train_sd3_awm.py), here diffusion-nft's 2 groups of 8, so
    # its round-wide std is not one group's.
    "flow-grpo-guard": {"batch_size": "8"},
    "flow-grpo-cps": {"batch_size": "8"},
    "awm": {"batch_size": "8", "grad_accum": "2"},
}
"""Per-method settings of every suite run and tuning run (``--set METHOD.KEY=VALUE``), the ones the committed
comparisons use: the CPU costs in ``bench.suite.cost`` were measured with them."""

ALIASES_NOTE = "the same class as {twin} (methods/__init__.py): its runs would repeat {twin}'s"
"""Why a registered name that is another name's class is left out of the default selection (``draft-k``)."""



@dataclass(frozen=True)
class Settings:
    """One budget of the suite: what every run and every tuning run is given."""

    name: str
    seeds: tuple[int, ...]
    """Evaluation seeds of every (task, family, method)."""
    max_samples: int
    """Training reward queries per run (``--max-samples``): the budget, equal for every method."""
    max_seconds: float
    """Training wall-clock cap (``--max-seconds``), far above the query budget's time: only a hung run meets it."""
    steps: int
    """Sampling steps of training and evaluation (``--set steps=N``)."""
    eval_n: int
    """Evaluation images (``--eval-n``): 2 per ``shapes-eval`` prompt (20 prompts), so diversity is recorded."""
    eval_at: str | None
    """Evaluation schedule (``--eval-at``); None: at the start and the end only (``--eval-every 0``)."""
    grid: str | None
    """Tuning grid (``bench.tune --grid``); None: no tuning, every method at its defaults (and these settings)."""
    tune_seeds: tuple[int, ...]
    """Tuning seeds (never evaluation seeds: ``bench.run --config-from`` refuses an overlap)."""
    tune_eval_n: int
    """Tuning's evaluation images, start and end only: 2 per ``shapes-val`` prompt (10 prompts)."""
    methods: tuple[str, ...] | None
    """Default methods (each family runs those registered for it); None: every registered method."""
    jobs: int = 2
    """Runs at once (``--jobs``): one per core of the 2-core machine the budget was sized for."""

    def run_flags(self) -> list[str]:
        """``bench.run`` flags of every suite run (the task, methods, seeds and tuned file come beside them)."""
        schedule = ["--eval-at", self.eval_at] if self.eval_at else ["--eval-every", "0"]
        return ["--preset", "default", "--max-samples", str(self.max_samples), "--max-seconds", f"{self.max_seconds:g}",
                "--set", f"steps={self.steps}", "--eval-n", str(self.eval_n), *schedule]

    def tune_flags(self) -> list[str]:
        """``bench.run`` flags of every tuning run (``bench.tune`` adds ``--eval-seed 4321``, and for its ``--score
        late`` ``--eval-at`` at 1/2 and 3/4 of the budget): the runs' budget, on the validation prompts."""
        return ["--preset", "default", "--max-samples", str(self.max_samples), "--max-seconds", f"{self.max_seconds:g}",
                "--set", f"steps={self.steps}", "--eval-n", str(self.tune_eval_n), "--eval-every", "0"]

    def to_dict(self) -> dict:
        return asdict(self)


FULL = Settings(name="full", seeds=(0, 1, 2), max_samples=384, max_seconds=36000, steps=10, eval_n=40,
                eval_at="8,16,32,64,128,256", grid="lr=1e-3,3e-3,1e-2", tune_seeds=(100, 101), tune_eval_n=20,
                methods=None)
"""The full suite: 384 queries, 3 seeds, every registered method, the lr tuned per family; evaluations once per
doubling of the queries (``--eval-at log``'s two per doubling would cost 8.5 hours: docs/suite.md)."""

QUICK = Settings(name="quick", seeds=(0, 1), max_samples=8, max_seconds=300, steps=4, eval_n=40, eval_at=None,
                 grid=None, tune_seeds=(100, 101), tune_eval_n=20, methods=("alignprop", "flow-grpo", "grpo", "rwr"))
"""``--quick``: 8 queries, 4 sampling steps, 2 seeds, one method of each kind per family, no tuning."""


def method_sets(methods: list[str]) -> list[str]:
    """The ``--set`` flags of ``METHOD_SETS`` for ``methods`` (bench.run refuses one naming another method)."""
    return [flag for m in methods for k, v in METHOD_SETS.get(m, {}).items() for flag in ("--set", f"{m}.{k}={v}")]
