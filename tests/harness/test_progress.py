"""The worker's progress: on a terminal a bar counting what the budget counts, with the last eval reward and when the
next evaluation comes; redirected, whole lines, one per event, and no bar."""

from __future__ import annotations

import io
from types import SimpleNamespace

from bench.harness import progress as harness_progress
from bench.harness.spec import Budget


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(monkeypatch, stream, budget: Budget, **schedule) -> harness_progress.Progress:
    monkeypatch.setattr(harness_progress.sys, "stderr", stream)
    resumed = SimpleNamespace(step=0, samples=0, wall_s=0.0)  # a Recorder at its start
    progress = harness_progress.Progress(SimpleNamespace(run_id="rwr__r__s0", method="rwr", seed=0, **schedule),
                                         budget, initial=resumed)
    assert progress.state == f"step 0{f'/{budget.max_steps}' if budget.max_steps else ''}: training"
    for step in (1, 2):
        rec = SimpleNamespace(step=step, samples=2 * step, wall_s=0.5 * step, cpu_s=0.4 * step)
        progress.update(rec, {"reward_mean": 0.5})
        if step == 1:
            progress.evaluated(1, 0.61, 4, samples=2)
    return progress


def test_terminal_bar_counts_reward_queries_with_the_last_eval_and_the_next(monkeypatch):
    progress = drive(monkeypatch, Terminal(), Budget(max_samples=16, max_seconds=120.0), eval_every_samples=6)
    assert (progress.bar.n, progress.bar.total, progress.bar.unit) == (4, 16, "query")
    bar, text = str(progress.bar), harness_progress.sys.stderr.getvalue()  # the bar as drawn; what was written
    progress.close()
    assert bar.startswith("rwr s0:") and "4/16 query" in bar and "<00:00" in bar  # ETA to the budget
    assert "train 0.5 | eval 0.61 (step 1) | next eval in 2 queries" in bar and "eval=" not in bar
    assert "[rwr__r__s0] eval at step 1 (2 queries): reward 0.61 on 4 images; next eval in 4 queries" in text
    assert "0/16" in text


def test_the_next_evaluation_counts_what_the_schedule_counts(monkeypatch):
    progress = drive(monkeypatch, io.StringIO(), Budget(max_steps=40), eval_every=10)
    assert progress.next_eval(3, 12) == "next eval in 7 steps" and progress.next_eval(9, 36) == "next eval in 1 step"
    assert progress.next_eval(35, 140) == "next eval at the end"  # step 40 is the budget's own last evaluation
    progress.close()
    both = drive(monkeypatch, io.StringIO(), Budget(max_samples=64), eval_every=4, eval_every_samples=16)
    assert both.next_eval(1, 8) == "next eval in 8 queries or 3 steps"
    both.close()
    none = drive(monkeypatch, io.StringIO(), Budget(max_seconds=60.0))
    assert none.next_eval(5, 20) == "next eval at the end"
    none.close()


def test_step_budget_counts_steps_and_redirected_output_has_no_bar(monkeypatch):
    progress = drive(monkeypatch, Terminal(), Budget(max_steps=3, max_samples=8))
    assert (progress.bar.n, progress.bar.total, progress.bar.unit) == (2, 3, "step")
    progress.close()
    progress = drive(monkeypatch, io.StringIO(), Budget(max_samples=8))
    progress.close()
    assert harness_progress.sys.stderr.getvalue() == (
        "[rwr__r__s0] eval at step 1 (2 queries): reward 0.61 on 4 images; next eval at the end\n")


def test_redirected_status_lines_say_what_changed_once(monkeypatch):
    """The timer's status line is written only when the run moved on (no repeated "step 0: training" lines)."""
    monkeypatch.setattr(harness_progress, "PROGRESS_EVERY_S", 0.02)
    monkeypatch.setattr(harness_progress.sys, "stderr", io.StringIO())
    progress = harness_progress.Progress(SimpleNamespace(run_id="rwr__r__s0", eval_every=2), Budget(max_steps=4))
    import time

    time.sleep(0.2)
    progress.update(SimpleNamespace(step=1, samples=2, wall_s=0.5, cpu_s=0.4), {"reward_mean": 0.5})
    time.sleep(0.2)
    progress.close()
    lines = harness_progress.sys.stderr.getvalue().splitlines()
    assert lines == ["[rwr__r__s0] step 0/4: training",
                     "[rwr__r__s0] step 1/4 (2 queries): train reward 0.5, train 0.5 s (CPU 0.4 s); next eval in 1 step"]
