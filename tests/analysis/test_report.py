"""bench.report on synthetic results folders: files exist, failed runs render, stand-ins are labelled."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.analysis import report, results as loading, summary as summaries
from bench.core.errors import UsageError

STAND_IN = "random weights (tiny-random: SD architecture at toy width)"
PROMPTS = ["cat", "dog", "horse", "llama"]


def write_results(directory: Path, reward: str, *, methods=("alignprop", "ddpo"), seeds=(0, 1, 2), failed=True,
                  stand_in=STAND_IN, formats=("csv", "parquet")) -> Path:  # fmt: skip
    """A results folder as bench.run writes it (contract layout), with known reward curves.

    Method i's eval reward at step s is 0.1 + 0.01 * (i + 1) * s + 0.001 * seed. With ``failed``, ddpo seed 2 runs
    out of memory after step 5 (partial metrics, no final eval) and an ``rwr`` run errors before any metric.
    """
    directory.mkdir(parents=True)
    runs, metrics = [], []
    for i, method in enumerate(methods):
        for seed in seeds:
            run_id = f"{method}__{reward}__s{seed}"
            oom = failed and method == "ddpo" and seed == 2
            last = 5 if oom else 10
            for step in range(0, last + 1, 5):
                value = 0.1 + 0.01 * (i + 1) * step + 0.001 * seed
                common = dict(run_id=run_id, method=method, reward=reward, model="tiny-random", seed=seed, step=step,
                              samples=step * 8, wall_s=step * (1.0 + i), peak_mem_mb=100.0 * (i + 1), stand_in=stand_in)  # fmt: skip
                metrics.append(dict(common, split="eval", metric="reward_mean", value=value))
                metrics.append(dict(common, split="eval", metric="reward_std", value=0.01))
                if step:
                    metrics.append(dict(common, split="train", metric="reward_mean", value=value - 0.01))
                    metrics.append(dict(common, split="train", metric="loss", value=-value))
            final = 0.1 + 0.01 * (i + 1) * 10 + 0.001 * seed
            runs.append(dict(run_id=run_id, method=method, reward=reward, model="tiny-random", seed=seed,
                             status="oom" if oom else "max_steps", steps=last, samples=last * 8,
                             wall_s=last * (1.0 + i), peak_mem_mb=100.0 * (i + 1),
                             final_eval_reward=np.nan if oom else final, error="CUDA out of memory" if oom else "",
                             stand_in=stand_in, sec_per_step=1.0 + i, eval_guidance=7.5, eval_steps=2))  # fmt: skip
            run_dir = directory / "runs" / run_id
            run_dir.mkdir(parents=True)
            config = {"method": method, "reward": reward, "model": "tiny-random", "seed": seed,
                      "eval": {"prompts": PROMPTS, "n": 4, "seed": 1234, "steps": 2, "guidance_scale": 7.5,
                               "eta": 0.0, "batch_size": 4}, "stand_in": stand_in}  # fmt: skip
            (run_dir / "config.json").write_text(json.dumps(config))
            for which, level in (("first", 60), ("last", 200)):
                if oom and which == "last":
                    continue
                row = np.full((32, 32 * len(PROMPTS), 3), level, dtype=np.uint8)
                row[:, ::32] = 0
                Image.fromarray(row).save(run_dir / f"eval_{which}.png")
    if failed:
        runs.append(dict(run_id=f"rwr__{reward}__s0", method="rwr", reward=reward, model="tiny-random", seed=0,
                         status="error", steps=0, samples=0, wall_s=np.nan, peak_mem_mb=np.nan,
                         final_eval_reward=np.nan, error="ValueError: boom", stand_in=stand_in,
                         sec_per_step=np.nan))  # fmt: skip
    frame = pd.DataFrame(metrics)
    if "csv" in formats:
        frame.to_csv(directory / "metrics.csv", index=False)
    if "parquet" in formats:
        frame.to_parquet(directory / "metrics.parquet", index=False)
    pd.DataFrame(runs).to_csv(directory / "runs.csv", index=False)
    manifest = {"command": ["bench.run"], "runs": {}, "versions": {}, "git_commit": "0" * 40, "device": "cpu",
                "started": "", "finished": "", "stand_ins": [stand_in] if stand_in else []}  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def two_folders(tmp_path):
    a = write_results(tmp_path / "brightness", "mean-brightness")
    b = write_results(tmp_path / "jpeg", "jpeg-compressibility", formats=("csv",))
    return a, b


def test_report_files_exist_and_failed_runs_render(two_folders, tmp_path):
    out = tmp_path / "rep"
    report.build_report(list(two_folders), out, n_boot=200, formats=("png",))
    names = {p.name for p in out.iterdir()}
    for stem in ("reward_vs_step", "reward_vs_wall_s", "reward_vs_samples", "resources",
                 "images_mean-brightness", "images_jpeg-compressibility"):  # fmt: skip
        assert f"{stem}.png" in names, names
        assert (out / f"{stem}.png").stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "STAND-IN" in text and STAND_IN in text
    # The oom seed and the errored method are listed, not dropped.
    assert "oom: 1" in text and "max_steps: 2" in text
    assert "rwr__mean-brightness__s0" in text and "error: 1" in text
    assert "— (error: 1)" in text
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["reward"]) == {"mean-brightness", "jpeg-compressibility"}
    row = summary[(summary["reward"] == "mean-brightness") & (summary["label"] == "alignprop")].iloc[0]
    assert row["final_mean"] == pytest.approx(0.2 + 0.001)  # mean over seeds 0, 1, 2
    assert row["final_lo"] <= row["final_mean"] <= row["final_hi"]
    assert row["runs"] == 3 and row["finished"] == 3


def test_time_to_target_uses_best_improvement(two_folders, tmp_path):
    results = loading.load_results([two_folders[0]])
    loading.add_labels(results.runs, results.metrics)
    summary = summaries.summarize(results, rng=np.random.default_rng(0), n_boot=100).set_index("label")
    # ddpo (slope 0.02/step, 2 s/step) is best: final ~0.301 (seeds 0, 1), start ~0.101.
    assert bool(summary.loc["ddpo", "best"]) and not bool(summary.loc["alignprop", "best"])
    start = np.mean([0.1 + 0.001 * s for s in (0, 1, 2)] * 2 + [])
    best = np.mean([0.3 + 0.001 * s for s in (0, 1)])
    target = start + 0.9 * (best - start)
    assert summary.loc["ddpo", "target"] == pytest.approx(target)
    # alignprop reaches at most 0.2 + 0.002 < target: never.
    assert np.isnan(summary.loc["alignprop", "time_to_target_s"])
    # ddpo's seeds 0 and 1 (to step 10) cross the target before 20 s, but seed 2 stopped at step 5 below it: the
    # seeds' time is then unknown (a bound), not the mean curve's crossing.
    assert np.isnan(summary.loc["ddpo", "time_to_target_s"]) and not bool(summary.loc["ddpo", "reached"])
    curves = results.metrics[(results.metrics["label"] == "ddpo") & (results.metrics["split"] == "eval")
                             & (results.metrics["metric"] == "reward_mean") & (results.metrics["seed"] < 2)]
    assert 15 < summaries.time_to_reach(curves, target, higher=True) <= 20


def test_single_seed_and_no_stand_in(tmp_path):
    folder = write_results(tmp_path / "one", "mean-brightness", seeds=(0,), failed=False, stand_in="")
    out = tmp_path / "rep"
    report.build_report([folder], out, n_boot=50, formats=("png",))
    text = (out / "report.md").read_text()
    assert "STAND-IN" not in text
    assert (out / "reward_vs_step.png").is_file() and (out / "reward_seen_vs_heldout.png").is_file()
    # One seed: one row of panels (no IQM row), at 150 dpi; so with 3 seeds (their IQM is their mean); 5 add one.
    one = Image.open(out / "reward_vs_step.png")
    assert one.info["dpi"][0] == pytest.approx(150, abs=1)
    three, five = tmp_path / "rep3", tmp_path / "rep5"
    report.build_report([write_results(tmp_path / "three", "mean-brightness", failed=False)], three, n_boot=50,
                        formats=("png",))  # fmt: skip
    report.build_report([write_results(tmp_path / "five", "mean-brightness", failed=False, seeds=range(5))], five,
                        n_boot=50, formats=("png",))  # fmt: skip
    assert Image.open(three / "reward_vs_step.png").size[1] < 1.2 * one.size[1]
    assert Image.open(five / "reward_vs_step.png").size[1] > 1.5 * one.size[1]
    assert "| IQM |" in (five / "report.md").read_text() and "| IQM |" not in (three / "report.md").read_text()


def test_caption_names_runs_not_shown_and_extra_metrics_get_a_figure(two_folders, tmp_path):
    from bench.analysis.figures_curves import not_shown_caption

    results = loading.load_results([two_folders[0]])
    loading.add_labels(results.runs, results.metrics)
    caption = not_shown_caption(results.runs)
    assert "error: rwr s0 (ValueError: boom)" in caption and "oom: ddpo s2" in caption
    assert "alignprop" not in caption
    folder = write_results(tmp_path / "shapes", "count", failed=False)
    metrics = pd.read_csv(folder / "metrics.csv")
    extra = metrics[(metrics.split == "eval") & (metrics.metric == "reward_mean")].assign(metric="exact_count")
    pd.concat([metrics, extra]).to_csv(folder / "metrics.csv", index=False)
    (folder / "metrics.parquet").unlink()
    out = tmp_path / "rep"
    report.build_report([folder], out, n_boot=20, formats=("png",))
    assert (out / "eval_metrics.png").stat().st_size > 1000


def test_two_folders_of_the_same_command_pool_and_others_are_refused(tmp_path):
    import shutil

    first = write_results(tmp_path / "a", "mean-brightness", seeds=(0,), failed=False)
    again = tmp_path / "b"
    shutil.copytree(first, again)
    results = loading.load_results([first, again])
    assert sorted(results.runs["run_id"]) == ["alignprop__mean-brightness__s0", "alignprop__mean-brightness__s0#2",
                                              "ddpo__mean-brightness__s0", "ddpo__mean-brightness__s0#2"]
    assert results.run_dir("ddpo__mean-brightness__s0#2") == again / "runs" / "ddpo__mean-brightness__s0"
    assert set(results.metrics["run_id"]) == set(results.runs["run_id"])
    out = tmp_path / "rep"
    report.build_report([first, again], out, n_boot=20, formats=("png",))
    assert "| 2 (2) |" in (out / "report.md").read_text()  # two runs per method, both with a final eval
    config = again / "runs" / "ddpo__mean-brightness__s0" / "config.json"
    config.write_text(config.read_text().replace('"steps": 2', '"steps": 3'))
    with pytest.raises(UsageError, match="cannot be pooled: settings differ in eval"):
        loading.load_results([first, again])


def test_cli_errors_exit_2_and_leave_nothing(two_folders, tmp_path, capsys):
    from bench import report as report_cli  # in-process: test_cli_writes_default_folder covers the module entry

    out = tmp_path / "rep"
    assert report_cli.main([str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert not out.exists()
    assert report_cli.main([str(two_folders[0]), str(two_folders[0]), "--out", str(out)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".rep*"))


def test_out_never_replaces_an_input_or_a_foreign_folder(two_folders, tmp_path):
    src = two_folders[0]
    for out in (src, src.parent):
        with pytest.raises(UsageError, match="holds the input"):
            report.build_report([src], out, n_boot=10, formats=("png",))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not an earlier output"):
        report.build_report([src], foreign, n_boot=10, formats=("png",))
    assert (foreign / "notes.txt").read_text() == "keep me" and (src / "runs.csv").is_file()
    again = tmp_path / "rep"
    report.build_report([src], again, n_boot=10, formats=("png",))
    report.build_report([src], again, n_boot=10, formats=("png",))  # an earlier report is replaced
    assert (again / "report.md").is_file()


def test_cli_writes_default_folder(two_folders):
    done = subprocess.run([sys.executable, "-m", "bench.report", str(two_folders[1]), "--n-boot", "50",
                           "--formats", "png,pdf"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = two_folders[1] / "report"
    assert (out / "report.md").is_file() and (out / "reward_vs_step.pdf").is_file()


def test_time_to_reach_is_the_seeds_first_crossings():
    # The summary's time to target is the time-to-target section's definition: each seed's crossing read between
    # the two evaluations that bracket it, mean over seeds; NaN unless every seed reached. Seeds that reach it at
    # their first evaluation count that evaluation (a straight line from the start would claim 1.25 s, an 8x larger
    # speed-up that nothing measured).
    rows = pd.DataFrame(dict(run_id=["a", "a", "b", "b"], step=[0, 10, 0, 10], wall_s=[0.0, 9.0, 0.0, 11.0],
                             value=[0.1, 0.5, 0.1, 0.5]))  # fmt: skip
    assert summaries.time_to_reach(rows, 0.15, higher=True) == pytest.approx(10.0)
    assert summaries.time_to_reach(rows, 0.15, higher=True, x="step") == 10
    assert summaries.time_to_reach(rows, 0.1, higher=True) == 0.0
    assert np.isnan(summaries.time_to_reach(rows, 0.6, higher=True))
    assert np.isnan(summaries.time_to_reach(rows, 0.05, higher=False))  # lower is better: 0.1 never gets to 0.05
    # Three evaluations: seed a crosses 0.3 a third of the way from 10 s to 40 s (at 20 s), seed b at 30 s (from the
    # 0.2 at 20 s to the 0.4 at 40 s, half-way); the mean curve (0.15, 0.25, 0.45) would read its first crossing
    # only at an evaluation (40 s), the per-seed definition gives their mean, 25 s.
    rows = pd.DataFrame(dict(run_id=["a"] * 3 + ["b"] * 3, step=[0, 1, 2] * 2, wall_s=[0.0, 10.0, 40.0, 0.0, 20.0, 40.0],
                             value=[0.1, 0.2, 0.5, 0.1, 0.2, 0.4]))  # fmt: skip
    assert summaries.time_to_reach(rows, 0.3, higher=True) == pytest.approx(((10 + 30 / 3) + 30.0) / 2)
    # one seed never reaching it: no time
    assert np.isnan(summaries.time_to_reach(rows, 0.45, higher=True))


def test_mean_curve_stops_where_a_seed_ends():
    # Seeds end at different CPU seconds: past the shortest one the mean would be over fewer seeds and jump.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from bench.analysis.plots import plot_reward_curves

    curves = pd.DataFrame(dict(label="m", run_id=["a"] * 3 + ["b"] * 3, x=[0, 5, 10, 0, 10, 20],
                               value=[0.0, 0.1, 0.2, 0.0, 0.2, 0.9]))
    fig, ax = plt.subplots()
    plot_reward_curves(ax, curves, x="x", rng=np.random.default_rng(0), n_boot=50)
    line = next(l for l in ax.get_lines() if l.get_label().startswith("m ("))
    drawn = np.asarray(line.get_xdata())[~np.isnan(np.asarray(line.get_ydata(), dtype=float))]
    assert drawn.max() == pytest.approx(10, abs=0.25) and drawn.min() == 0
    plt.close(fig)


def test_an_out_under_a_file_or_where_nothing_can_be_created_exits_2_before_any_work(two_folders, tmp_path, capsys,
                                                                                     monkeypatch):
    # Issue 36: --out somefile/sub raised FileExistsError (and /proc a FileNotFoundError) after the report was made.
    from bench import report as report_cli

    monkeypatch.setattr(report_cli, "build_report", lambda *a, **k: pytest.fail("work began"))
    a_file = tmp_path / "somefile.txt"
    a_file.write_text("keep")
    for out, message in ((a_file / "sub", f"its parent {str(a_file)!r} is a regular file"),
                         (a_file, "is a file, not a folder"), ("/proc/rep", "no file can be created in '/proc'")):
        assert report_cli.main([str(two_folders[0]), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --out {str(out)!r} ") and message in err, err
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["brightness", "jpeg",
                                                                                           "somefile.txt"]
