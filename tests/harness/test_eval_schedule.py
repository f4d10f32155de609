"""``bench.run --eval-at``: evaluations dense where curves move (``bench.harness.schedule``). The schedule's query
counts, its refusals (exit 2, one line, nothing written), what the plan and manifest record, and a run's loop
evaluating where its queries cross a count."""

import io
from types import SimpleNamespace

import pandas as pd
import pytest

from bench.core.errors import UsageError
from bench.harness import progress as harness_progress
from bench.harness.schedule import QuerySchedule, check_eval_at, describe
from bench.harness.spec import Budget
from bench.run import build_parser, main

BASE = ["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness"]


def test_log_and_range_schedules_give_their_query_counts():
    log = QuerySchedule.parse("log")  # two counts per doubling from 8: x1, 1.5, 2, 3, 4, 6, ...
    assert log.counts(768) == [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768]
    assert log.evaluations(768) == [0, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768]
    assert log.evaluations(100) == [0, 8, 12, 16, 24, 32, 48, 64, 96, 100]  # the budget's end always
    assert QuerySchedule.parse("log:5").counts(40) == [5, 8, 10, 15, 20, 30, 40]  # 7.5 rounds to 8
    piecewise = QuerySchedule.parse("16:128:16, 192::64")  # every 16 up to 128, then every 64 to the end
    assert piecewise.counts(768) == [16, 32, 48, 64, 80, 96, 112, 128, 192, 256, 320, 384, 448, 512, 576, 640, 704,
                                     768]
    assert QuerySchedule.parse("100,10,50,10").counts(1000) == [10, 50, 100]
    assert QuerySchedule.parse("log,20").counts(24) == [8, 12, 16, 20, 24]
    assert QuerySchedule.parse("64::64").counts(256) == [64, 128, 192, 256]  # --eval-every-samples 64
    # a step evaluates once when its queries cross one count or several
    assert log.crossed(10, 20) and log.crossed(0, 8) and not log.crossed(8, 11) and not log.crossed(16, 23)
    assert log.next_after(16) == 24 and QuerySchedule.parse("5").next_after(5) is None
    assert describe(log, 100) == {"eval_at": "log", "eval_at_queries": [0, 8, 12, 16, 24, 32, 48, 64, 96, 100],
                                  "eval_at_queries_truncated": False}
    assert describe(QuerySchedule.parse("1::1"), None, limit=4)["eval_at_queries_truncated"]


@pytest.mark.parametrize("given, message", [
    ("x", "is not a query count N, a range A:B:S or A::S, or log[:FIRST]"),
    ("0", "a query count must be >= 1"),
    ("8,,16", "'' is not a query count"),
    ("64:32:8", "the range ends (32) before it starts (64)"),
    ("8:64:0", "start and step of A:B:S must be >= 1"),
    ("log:0", "the first count must be >= 1"),
    ("log,log:4", "log is given twice"),
    (" ", "--eval-at is empty"),
])
def test_bad_schedules_exit_2_in_one_line_before_anything_is_written(tmp_path, capsys, given, message):
    out = tmp_path / "never"
    capsys.readouterr()
    code = main([*BASE, "--max-samples", "64", "--eval-at", given, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_eval_at_beside_eval_every_samples_or_past_the_budget_is_refused():
    with pytest.raises(UsageError, match=r"both query schedules; give one \(--eval-at 32::32 is --eval-every-sampl"):
        check_eval_at("log", every_samples=32, max_samples=768)
    with pytest.raises(UsageError, match="no count lies below the budget of 64 reward queries"):
        check_eval_at("64,128", every_samples=0, max_samples=64)
    assert check_eval_at(None, every_samples=32, max_samples=64) is None  # --eval-every-samples alone: as before
    assert check_eval_at("log", every_samples=0, max_samples=None).text == "log"  # no query budget: open-ended


@pytest.mark.slow  # a real run evaluated at its schedule: ~25 s of CPU (make test-slow)
def test_the_plan_and_manifest_record_the_schedule_and_the_run_evaluates_where_queries_cross_it(tmp_path, capsys):
    from bench.harness.loop import Run
    from bench.harness.plan import plan
    from bench.harness.recorder import ROWS

    args = build_parser().parse_args([*BASE, "--max-samples", "6", "--eval-at", "3,5", "--eval-n", "1"])
    (spec,), info = plan(args)
    assert spec.eval_at == "3,5" and spec.eval_every == 0  # replaces the preset's step schedule
    assert info["evaluations"]["eval_at_queries"] == [0, 3, 5, 6]
    assert main([*BASE, "--max-samples", "6", "--eval-at", "3,5", "--dry-run"]) == 0
    assert "evaluations (--eval-at 3,5) at reward queries 0, 3, 5, 6" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(spec.to_json())
    assert Run(run_dir).execute()["status"] == "max_samples"
    rows = pd.read_json(run_dir / ROWS, lines=True)
    # rwr's smoke step queries 2 images: none at 2, 3 is crossed by the step to 4, 5 by the last step (the end, once)
    assert rows.query("split == 'eval' and metric == 'reward_mean'").samples.tolist() == [0, 4, 6]


def test_the_progress_line_counts_queries_to_the_next_count(monkeypatch):
    monkeypatch.setattr(harness_progress.sys, "stderr", io.StringIO())
    progress = harness_progress.Progress(SimpleNamespace(run_id="rwr__r__s0", eval_at="log"), Budget(max_samples=100))
    assert progress.next_eval(3, 10) == "next eval in 2 queries" and progress.next_eval(24, 96) == "next eval at the end"
    progress.close()
