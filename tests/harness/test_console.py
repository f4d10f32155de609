"""What bench.run prints: a plan of only the settings that differ from each method's defaults, whole lines however
many threads and workers write at once, a machine called busy only beyond the job's own load, and an end summary
of start -> final per method that names ties as ties."""

from __future__ import annotations

import io
import os
import threading
import time

from bench.harness import lines as console_lines
from bench.harness.summary_text import method_lines, summary_markdown
from test_run import bench_run_inprocess


def run_line(text: str, run_id: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"{run_id} ("))


def test_the_plan_lists_only_settings_that_differ_from_each_methods_defaults(capsys, tmp_path):
    code, text, _ = bench_run_inprocess(capsys, "--preset", "smoke", "--methods", "alignprop,ddpo", "--reward",
                                        "mean-brightness", "--set", "alignprop.lr=0.01", "--dry-run")
    assert code == 0
    alignprop, ddpo = run_line(text, "alignprop__mean-brightness__s0"), run_line(text, "ddpo__mean-brightness__s0")
    assert alignprop.split(": ", 1)[1] == "images/step=2 updates/step=1 sampling_steps=4 lr=0.01"
    assert ddpo.split(": ", 1)[1] == "images/step=2 updates/step=1 sampling_steps=4"  # no lr: its default
    for default in ("weight_decay=", "lora_rank=", "lora_targets=", "precision=", "eta="):  # class or family default
        assert default not in alignprop and default not in ddpo
    assert "guidance (training / evaluation): alignprop 7.5/7.5, ddpo 5/7.5" in text  # kept as before
    assert "every setting: " in text and "weight_decay=0.1" in text  # --dry-run writes no manifest: it shows them
    from bench.harness.console import print_plan
    from bench.harness.plan import plan
    from bench.run import build_parser

    args = build_parser().parse_args(["--preset", "smoke", "--methods", "rwr", "--reward", "mean-brightness"])
    runs, info = plan(args)
    print_plan(runs, info, args, tmp_path / "out")
    shown = capsys.readouterr().out
    assert "every setting:" not in shown and "bench.worker" not in shown
    assert f"every setting of every run: {tmp_path / 'out' / 'manifest.json'}" in shown


class SlowStream(io.StringIO):
    """A stream whose every write lets other threads run first (as a busy machine does)."""

    def write(self, text: str) -> int:
        time.sleep(0.0005)
        return super().write(text)


def test_lines_from_threads_are_whole_lines():
    """``print`` writes the text and its newline apart, so two runs' "start" lines could share one line; ``emit``
    writes each in one piece."""
    stream = SlowStream()

    def start(tag: str) -> None:
        for i in range(30):
            console_lines.emit(f"[{tag}] run {i}: start", stream)

    threads = [threading.Thread(target=start, args=(tag,)) for tag in ("1/2", "2/2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = stream.getvalue().splitlines()
    assert len(written) == 60 and all(line.count("start") == 1 and line.endswith(": start") for line in written)


def test_worker_output_is_passed_on_in_whole_lines(monkeypatch):
    """Two workers' redirected output: a half-written line of one waits for its end instead of taking the other's
    line into it."""
    from bench.harness.lines import StderrTail

    sink = io.TextIOWrapper(io.BytesIO(), write_through=True)
    monkeypatch.setattr("sys.stderr", sink)
    tails = [StderrTail(), StderrTail()]
    writers = [os.dup(tail.child_fd) for tail in tails]  # the workers' ends
    for tail in tails:
        tail.start()
    a, b = writers
    for fd, data in ((a, b"[a] first half"), (b, b"[b] a whole line\n"), (a, b" and second half\n"),
                     (b, b"[b] no newline at the end")):
        os.write(fd, data)
        time.sleep(0.2)  # each chunk reaches its pump before the next is written
    for fd in writers:
        os.close(fd)
    for tail in tails:
        tail.join()
    assert sink.buffer.getvalue().decode().splitlines() == [
        "[b] a whole line", "[a] first half and second half", "[b] no newline at the end"]
    assert tails[1].cause() == "[b] no newline at the end"


def test_machine_busy_only_beyond_the_jobs_own_workers():
    from bench.harness.launch import run_end_line

    own = dict(status="max_steps", steps=4, load_avg=2.6, cores=2, job_workers=2, threads=1)
    assert "busy" not in run_end_line(own, 10.0)  # two workers x one thread on two cores: the job's own load
    assert "load" not in run_end_line(own, 10.0)
    busy = dict(own, load_avg=3.4)
    assert "machine busy: load 3.4 on 2 cores, 1.4 beyond this job's own 2 thread(s)" in run_end_line(busy, 10.0)
    alone = dict(own, load_avg=2.9, job_workers=1, threads=2)  # one worker on both cores
    assert "busy" not in run_end_line(alone, 10.0)


def test_the_end_line_and_the_summary_give_cpu_seconds_per_reward_query():
    from bench.harness.launch import run_end_line

    result = dict(status="max_steps", steps=4, wall_s=3.0, cpu_s=2.4, samples=8)
    assert "train 3.0 s (CPU 2.4 s, 0.3 CPU s/query)" in run_end_line(result, 10.0)
    assert "(CPU 0.0 s)" in run_end_line(dict(result, cpu_s=0.0, samples=0), 10.0)  # no query: no figure
    table = summary_markdown([dict(row("a", 0, 0.2, 0.9), cpu_s=2.4, samples=8), row("b", 0, 0.2, 0.5)])
    assert "| CPU s/query |" in table.splitlines()[0]
    assert "| 0.200 | 0.300 | 500 |" in table and "| 0.200 |  | 500 |" in table  # b has no cpu_s: empty, not 0


def row(method: str, seed: int, start: float, final: float, images=None, start_images=None) -> dict:
    return dict(run_id=f"{method}__shape-aesthetic__s{seed}", method=method, reward="shape-aesthetic", seed=seed,
                status="max_steps", start_eval_reward=start, final_eval_reward=final, final_images=images,
                start_images=start_images, steps=4, wall_s=1.0, sec_per_step=0.25, cpu_per_step=0.2, peak_mem_mb=500,
                error="", warning="", stand_in="", precision="fp32", protocol="matched")


def test_the_summary_shows_start_to_final_and_names_ties():
    # three seeds each: a and b apart by less than their seeds' spread (a tie), c far behind
    rows = ([row("a", s, 0.2, v) for s, v in enumerate((0.90, 0.80, 0.85))]
            + [row("b", s, 0.2, v) for s, v in enumerate((0.84, 0.88, 0.79))]
            + [row("c", s, 0.2, v) for s, v in enumerate((0.30, 0.31, 0.29))])
    text = "\n".join(method_lines(rows))
    assert "- a  0.2 -> 0.85" in text and "- c  0.2 -> 0.3" in text
    assert "- tie: a and b: finals 0.013 apart, within the noise" in text and "seeds' spread" in text
    assert "- behind them: c by 0.55" in text
    # clear of each other: no tie
    clear = [row("a", s, 0.2, 0.9 + 0.01 * s) for s in range(3)] + [row("b", s, 0.2, 0.5 + 0.01 * s) for s in range(3)]
    assert "- a ahead of b by 0.4" in "\n".join(method_lines(clear)) and "tie" not in "\n".join(method_lines(clear))
    # one seed: the paired per-image spread decides a tie; a lead is no ranking, and a change within it is no change
    one = [row("a", 0, 0.2, 0.31, [0.3, 0.32, 0.29, 0.33], [0.2, 0.2, 0.2, 0.2]),
           row("b", 0, 0.2, 0.30, [0.31, 0.29, 0.31, 0.29], [0.2, 0.21, 0.19, 0.2])]
    text = "\n".join(method_lines(one))
    assert "on 4 held-out images" in text and "1 seed" in text and "- tie: a and b" in text
    assert "paired evaluation images' spread" in text
    flat = [row("a", 0, 0.2, 0.2005, [0.2, 0.21, 0.19, 0.2012], [0.2, 0.2, 0.2, 0.2])]
    assert "within the noise" in method_lines(flat)[1] and "no change" in method_lines(flat)[1]
    table = summary_markdown(rows)
    assert "| eval reward start -> final |" in table and "| 0.2 -> 0.9 |" in table and "- tie: a and b" in table
