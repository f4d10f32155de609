"""The worker's progress: on a terminal a bar counting what the budget counts, with the last eval reward; redirected,
the plain lines of before and no bar."""

from __future__ import annotations

import io
from types import SimpleNamespace

from bench.harness import loop
from bench.harness.spec import Budget


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(monkeypatch, stream, budget: Budget) -> loop.Progress:
    monkeypatch.setattr(loop.sys, "stderr", stream)
    resumed = SimpleNamespace(step=0, samples=0, wall_s=0.0)  # a Recorder at its start
    progress = loop.Progress(SimpleNamespace(run_id="rwr__r__s0"), budget, initial=resumed)
    assert progress.state == f"step 0{f'/{budget.max_steps}' if budget.max_steps else ''}: training"
    for step in (1, 2):
        rec = SimpleNamespace(step=step, samples=2 * step, wall_s=0.5 * step, cpu_s=0.4 * step)
        progress.update(rec, {"reward_mean": 0.5})
        if step == 1:
            progress.evaluated(1, 0.61, 4)
    return progress


def test_terminal_bar_counts_reward_queries_with_the_last_eval(monkeypatch):
    progress = drive(monkeypatch, Terminal(), Budget(max_samples=8, max_seconds=120.0))
    assert (progress.bar.n, progress.bar.total, progress.bar.unit) == (4, 8, "query")
    bar, text = str(progress.bar), loop.sys.stderr.getvalue()  # the bar as drawn now; what was written
    progress.close()
    assert "4/8" in bar and "query" in bar and "eval=0.61" in bar and "reward=0.5" in bar and "<00:00" in bar  # ETA
    assert "[rwr__r__s0] eval at step 1: reward 0.61 (4 images)" in text and "0/8" in text


def test_step_budget_counts_steps_and_redirected_output_has_no_bar(monkeypatch):
    progress = drive(monkeypatch, Terminal(), Budget(max_steps=3, max_samples=8))
    assert (progress.bar.n, progress.bar.total, progress.bar.unit) == (2, 3, "step")
    progress.close()
    progress = drive(monkeypatch, io.StringIO(), Budget(max_samples=8))
    progress.close()
    assert loop.sys.stderr.getvalue() == "[rwr__r__s0] eval at step 1: reward 0.61 (4 images)\n"
