"""A run's progress on stderr (``Progress``): on a terminal a bar counting what the budget counts, with the last
evaluation and when the next one comes; redirected to a file, whole lines, one per event."""

from __future__ import annotations

import os
import sys
import threading

from bench.core import distributed
from bench.harness.recorder import Recorder
from bench.harness.schedule import QuerySchedule
from bench.harness.spec import Budget, RunSpec


PROGRESS_EVERY_S = float(os.environ.get("BENCH_PROGRESS_S", 30))
"""Without a terminal (output redirected to a log), a status line at most this often, and only when something changed
(env BENCH_PROGRESS_S)."""


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"
"""The run's bar: what its budget counts done and left, the time to the budget, then the postfix."""
MIN_BAR = 10
"""Columns the bar itself keeps; postfix parts that would squeeze it narrower are left out."""


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


class Progress:
    """A run's progress on stderr. On a terminal a tqdm bar as wide as the terminal (``dynamic_ncols``) counting what
    the budget counts, with the last training reward, the last evaluation and when the next one comes (and a bar per
    evaluation). Redirected to a file, whole lines, one per event: each evaluation, and a status line at most every
    ``PROGRESS_EVERY_S`` seconds when the run moved on (a timer thread, so a log shows a live job)."""

    def __init__(self, spec: RunSpec, budget: Budget, initial: Recorder | None = None):
        from tqdm.auto import tqdm

        self.tty = sys.stderr.isatty()
        self.run_id, self.total, self.budget = spec.run_id, budget.max_steps, budget
        self.eval_every = int(getattr(spec, "eval_every", 0) or 0)
        self.eval_every_samples = int(getattr(spec, "eval_every_samples", 0) or 0)
        eval_at = getattr(spec, "eval_at", "")
        self.eval_at = QuerySchedule.parse(eval_at) if eval_at else None
        step, samples = (initial.step, initial.samples) if initial is not None else (0, 0)
        self.state = f"step {step}{f'/{self.total}' if self.total else ''}: training"
        self.said = None
        """The last status line written (a repeat of it is not written again)."""
        # The bar counts what the budget counts (steps, else reward queries, else training seconds): tqdm's ETA is then
        # the time to the budget. ``initial`` (a resumed run's Recorder) starts it where the run is.
        if budget.max_steps or not (budget.max_samples or budget.max_seconds):
            self.counter, total, unit = "step", budget.max_steps, "step"
        elif budget.max_samples:
            self.counter, total, unit = "samples", budget.max_samples, "query"
        else:
            self.counter, total, unit = "wall_s", budget.max_seconds, "s"
        self.eval_reward = None
        self.eval_step = None
        self.lock = threading.Lock()
        # Short: the run's method and seed (the job's reward and model are in the plan), no rate; the postfix keeps
        # what fits the terminal (``fit``), the next evaluation first.
        self.label = f"{spec.method} s{getattr(spec, 'seed', 0)}" if getattr(spec, "method", None) else spec.run_id
        self.bar = tqdm(total=total, initial=getattr(initial, self.counter, 0) if initial is not None else 0,
                        desc=self.label, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True,
                        bar_format=BAR_FORMAT if total else None,
                        position=int(os.environ.get("BENCH_BAR_SLOT", 0)),  # its line among the runs at once
                        disable=not self.tty or not distributed.is_main())
        self.bar.set_postfix_str(self.next_eval(step, samples), refresh=False)
        self.stop = threading.Event()
        self.thread = None
        if not self.tty and distributed.is_main():
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()

    def say(self, text: str) -> None:
        """One whole line (``[run_id] text``), written in one piece under a lock."""
        if not distributed.is_main():
            return
        with self.lock:
            if self.tty:
                self.bar.write(f"[{self.run_id}] {text}", file=sys.stderr)
            else:
                from bench.harness.lines import emit

                emit(f"[{self.run_id}] {text}")

    def _beat(self) -> None:
        while not self.stop.wait(PROGRESS_EVERY_S):
            state = self.state
            if state != self.said:  # nothing new: no line
                self.said = state
                self.say(state)

    def next_eval(self, step: int, samples: int) -> str:
        """When the next evaluation comes: "next eval in 8 queries" (or steps), or "next eval at the end" when the
        schedule's next one lies past the budget or there is no schedule."""
        b, parts = self.budget, []
        if self.eval_every_samples:
            left = self.eval_every_samples - samples % self.eval_every_samples
            if not b.max_samples or samples + left < b.max_samples:
                parts.append(plural(left, "query", "queries"))
        nxt = self.eval_at.next_after(samples) if self.eval_at is not None else None
        if nxt is not None and (not b.max_samples or nxt < b.max_samples):
            parts.append(plural(nxt - samples, "query", "queries"))
        if self.eval_every:
            left = self.eval_every - step % self.eval_every
            if not b.max_steps or step + left < b.max_steps:
                parts.append(plural(left, "step"))
        return f"next eval in {' or '.join(parts)}" if parts else "next eval at the end"

    def update(self, rec: Recorder, metrics: dict) -> None:
        of = f"/{self.total}" if self.total else ""
        reward = metrics.get("reward_mean", float("nan"))
        upcoming = self.next_eval(rec.step, rec.samples)
        self.state = (f"step {rec.step}{of} ({plural(rec.samples, 'query', 'queries')}): train reward {reward:.4g}, "
                      f"train {rec.wall_s:.1f} s (CPU {rec.cpu_s:.1f} s); {upcoming}")
        last = [] if self.eval_reward is None else [f"eval {self.eval_reward:.4g} (step {self.eval_step})"]
        if self.tty:
            self.bar.set_postfix_str(self.fit([upcoming, *last, f"train {reward:.4g}"]), refresh=False)
        self.bar.update(getattr(rec, self.counter) - self.bar.n)

    def fit(self, parts: list[str]) -> str:
        """The postfix parts, most important first, that fit beside a bar of at least ``MIN_BAR`` columns on the
        terminal as wide as it is now; shown in reading order (train, eval, next eval)."""
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        if not columns:
            return " | ".join(reversed(parts))
        fixed = len(self.label) + len(f": 100%|| {self.bar.total}/{self.bar.total} {self.bar.unit} [00:00<00:00], ")
        room, kept = columns - fixed - MIN_BAR, []
        for part in parts:
            if sum(len(p) + 3 for p in kept) + len(part) <= room:
                kept.append(part)
        return " | ".join(reversed(kept))

    def evaluated(self, step: int, reward: float, n: int, samples: int | None = None) -> None:
        """An evaluation's line (the same on a terminal and in a log); the bar shows the last eval reward."""
        self.eval_reward, self.eval_step = reward, step
        at = f"step {step}" + (f" ({plural(samples, 'query', 'queries')})" if samples else "")
        b = self.budget
        done = (b.max_steps and step >= b.max_steps) or (b.max_samples and (samples or 0) >= b.max_samples)
        upcoming = "" if samples is None or done else f"; {self.next_eval(step, samples)}"
        self.say(f"eval at {at}: reward {reward:.4g} on {plural(n, 'image')}{upcoming}")

    def evaluating(self, n: int):
        """A context whose value is ``evaluate``'s progress callback (images done): a bar on a terminal."""
        from contextlib import contextmanager

        from tqdm.auto import tqdm

        @contextmanager
        def phase():
            before = self.state
            self.state = f"{before.split(':')[0]}: evaluating {plural(n, 'image')}"
            bar = tqdm(total=n, desc=f"{self.label} eval", unit="img", file=sys.stderr, leave=False,
                       dynamic_ncols=True, disable=not self.tty or not distributed.is_main())
            try:
                yield lambda done: bar.update(done - bar.n)
            finally:
                bar.close()
                self.state = before
        return phase()

    def close(self) -> None:
        self.stop.set()
        self.bar.close()

