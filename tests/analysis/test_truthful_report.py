"""Reports that tell the truth at a glance: seeds counted as seeds, no interval or winner one seed cannot give,
sorted summaries with their starts, per-setting starts, bounds printed as bounds, busy flags beyond the job's own
load, and training diagnostics that say when a clip never acted."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.analysis import diagnostics, report, results as loading, summary as summaries
from bench.analysis.results import Results, add_labels
from test_report import write_results

FIDELITY = {"true_aesthetic": 0.5, "color_accuracy": 0.9, "shape_accuracy": 0.8, "exact_count": 0.7}


def summary_rows(text: str) -> list[str]:
    """The rows of report.md's summary table (header and rule left out)."""
    block = text.split("## Summary", 1)[1].split("\n\n", 2)[1]
    return [line for line in block.splitlines() if line.startswith("|")][2:]


def add_eval_metrics(folder, metrics=FIDELITY, slope=-0.01):
    """Extra evaluation metrics beside every reward_mean row: ``base + slope * step`` (fidelity falls)."""
    table = pd.read_csv(folder / "metrics.csv")
    reward = table[(table["split"] == "eval") & (table["metric"] == "reward_mean")]
    extra = [reward.assign(metric=name, value=base + slope * reward["step"]) for name, base in metrics.items()]
    pd.concat([table, *extra]).to_csv(folder / "metrics.csv", index=False)
    (folder / "metrics.parquet").unlink(missing_ok=True)


def edit(folder, runs=None, metrics=None):
    """Rewrite a folder's runs.csv / metrics.csv through functions of their tables."""
    if runs:
        table = pd.read_csv(folder / "runs.csv")
        runs(table).to_csv(folder / "runs.csv", index=False)
    if metrics:
        table = pd.read_csv(folder / "metrics.csv")
        metrics(table).to_csv(folder / "metrics.csv", index=False)
        (folder / "metrics.parquet").unlink(missing_ok=True)


def test_one_seed_report_has_no_interval_no_bold_no_iqm_and_says_why(tmp_path):
    folder = write_results(tmp_path / "one", "mean-brightness", seeds=(0,), failed=False, stand_in="")
    out = tmp_path / "rep"
    report.build_report([folder], out, n_boot=50, formats=("png",))
    text = (out / "report.md").read_text()
    rows = summary_rows(text)
    assert rows and not any("[" in r or "**" in r for r in rows)  # no interval, no bold
    assert "| IQM |" not in text.split("## Summary", 1)[1].split("##", 1)[0]
    assert "1 seed: no intervals, no winner" in text
    assert not pd.read_csv(out / "summary.csv")["best"].any()


def test_three_seed_report_is_sorted_with_a_start_row_and_true_and_fidelity_columns(tmp_path):
    folder = write_results(tmp_path / "sa", "shape-aesthetic", methods=("alignprop", "ddpo", "rwr"), failed=False,
                           stand_in="")
    add_eval_metrics(folder)
    out = tmp_path / "rep"
    report.build_report([folder], out, n_boot=200, formats=("png",))
    text = (out / "report.md").read_text()
    header = text.split("## Summary", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    for column in ("true score (true_aesthetic)", "colour acc.", "shape acc.", "exact count", "eval guidance", "start"):
        assert f"| {column} |" in header, header
    assert "| IQM |" not in header  # 3 seeds: below 5
    rows = summary_rows(text)
    # method i's final is 0.1 + 0.1 (i + 1) + 0.001 seed: rwr > ddpo > alignprop > the start (0.101)
    order = [r.split(" | ")[1] for r in rows]
    assert order == ["rwr", "ddpo", "alignprop", "*start (base model, step 0)*"], order
    assert "**0.401 [" in rows[0] and "**" not in rows[1]  # separated from ddpo: rwr wins, in bold
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    cells = dict(zip(split(header), split(rows[0])))
    assert cells["start"] == "0.101" and cells["true score (true_aesthetic)"] == "0.400"  # 0.5 - 0.01 * 10
    assert cells["colour acc."] == "0.800" and cells["eval guidance"] == "7.5"
    start = dict(zip(cells, split(rows[-1])))
    assert start["final eval reward, mean [95% CI]"] == "*0.101*" and start["colour acc."] == "*0.900*"
    # what fine-tuning changed (here the learned-vs-true figure) comes right after the summary
    assert text.index("## Summary") < text.index("## What fine-tuning changed") < text.index("## Time to target")


def test_pooled_replicates_are_one_seed_not_two(tmp_path):
    first = write_results(tmp_path / "a", "mean-brightness", seeds=(0,), failed=False, stand_in="")
    again = tmp_path / "b"
    shutil.copytree(first, again)
    out = tmp_path / "rep"
    report.build_report([first, again], out, n_boot=50, formats=("png",))
    summary = pd.read_csv(out / "summary.csv")
    methods = summary[summary["kind"] == "method"].set_index("label")
    assert methods.loc["ddpo", "runs"] == 2 and methods.loc["ddpo", "seeds"] == 1
    text = (out / "report.md").read_text()
    assert "| 1 | 2 (2) |" in text and "1 seed: no intervals, no winner" in text
    assert not any("[" in r for r in summary_rows(text))


def test_a_tie_is_said_not_bolded():
    close = [dict(label="a", seeds=3, mean=0.50, lo=0.40, hi=0.60), dict(label="b", seeds=3, mean=0.45, lo=0.40,
                                                                         hi=0.50),
             dict(label="c", seeds=3, mean=0.10, lo=0.09, hi=0.11)]
    winner, tied, line = summaries.verdict(close, higher=True)
    assert winner is None and tied == ["a", "b"] and line.startswith("tie: a, b")
    apart = [dict(close[0], lo=0.49, hi=0.51), dict(close[1], lo=0.44, hi=0.46)]
    assert summaries.verdict(apart, higher=True)[0] == "a"
    # lower is better: the smallest mean wins
    assert summaries.verdict(apart, higher=False)[0] == "b"
    one = [dict(close[0], seeds=1), dict(close[2], seeds=3)]
    assert summaries.verdict(one, higher=True)[0] is None


def test_starts_are_per_model_reward_and_eval_guidance(tmp_path):
    folder = write_results(tmp_path / "two", "mean-brightness", methods=("alignprop", "ddpo", "diffusion-nft"),
                           failed=False, stand_in="")
    shift = {"ddpo": ("sd3", 7.5, 0.3), "diffusion-nft": ("tiny-random", 1.0, 0.05)}

    def runs(t):
        for method, (model, cfg, _) in shift.items():
            t.loc[t["method"] == method, "model"] = model
        t["eval_guidance"] = [shift.get(m, ("", 7.5))[1] for m in t["method"]]
        t["eval_steps"] = 2
        return t

    def metrics(t):
        for method, (model, _, offset) in shift.items():
            t.loc[t["method"] == method, "model"] = model
            t.loc[t["method"] == method, "value"] += offset
        return t

    edit(folder, runs, metrics)
    results = loading.load_results([folder])
    add_labels(results.runs, results.metrics)
    summary = summaries.summarize(results, rng=np.random.default_rng(0), n_boot=50)
    methods = summary[summary["kind"] == "method"].set_index("method")
    # alignprop's start is its own (0.101), not pooled with sd3's ddpo (0.401) nor the CFG-1 nft (0.151)
    assert methods.loc["alignprop", "start"] == pytest.approx(0.101)
    assert methods.loc["ddpo", "start"] == pytest.approx(0.401)
    assert methods.loc["diffusion-nft", "start"] == pytest.approx(0.151)
    starts = summary[summary["kind"] == "start"]
    assert sorted(np.round(starts["final_mean"], 3)) == [0.101, 0.151, 0.401]
    # Issue 36 item 6: time to target never pools models: ddpo (sd3) is compared with no run of another model.
    from bench.analysis import speedup

    reach = speedup.time_to_targets(results, "alignprop", rng=np.random.default_rng(0), n_boot=50)
    assert "ddpo" not in set(reach.loc[reach["model"] != "sd3", "method"])
    assert "alignprop" not in set(reach.loc[reach["model"] == "sd3", "method"])
    assert reach.loc[reach["method"] == "alignprop", "start"].to_numpy() == pytest.approx(0.101)
    assert set(starts["eval_guidance"]) == {1.0, 7.5}
    text = summaries.summary_markdown(summary)
    assert "| diffusion-nft [tiny-random] | 1 |" in text and "| ddpo [sd3] | 7.5 |" in text


def test_a_flux_guidance_embedding_is_not_called_cfg_and_true_cfg_is_its_own_setting(tmp_path):
    # flux's guidance_scale is the guidance embedding's value, not a CFG weight; its true CFG is eval_true_cfg
    folder = write_results(tmp_path / "flux", "mean-brightness", failed=False, stand_in="")
    edit(folder, lambda t: t.assign(eval_guidance=3.5, eval_true_cfg=[
        4.0 if (m, s) == ("ddpo", 0) else 1.0 for m, s in zip(t["method"], t["seed"])]))
    out = tmp_path / "rep"
    report.build_report([folder], out, n_boot=50, formats=("png",))
    text = (out / "report.md").read_text()
    assert "CFG 3.5" not in text and "@CFG" not in text and "eval CFG" not in text
    assert "| ddpo @guidance 3.5, true CFG 4 | 3.5, true CFG 4 |" in text and "| ddpo @guidance 3.5 | 3.5 |" in text
    assert "`alignprop` guidance 3.5, 2 steps" in text
    assert "eval_true_cfg" in pd.read_csv(out / "summary.csv")


def test_eval_settings_fall_back_to_the_manifest_and_busy_counts_the_jobs_own_load(tmp_path):
    folder = write_results(tmp_path / "old", "mean-brightness", seeds=(0,), failed=False, stand_in="")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["command"] = ["python", "-m", "bench.run", "--jobs", "2"]
    manifest["plan"] = {"eval": {"config": {"guidance_scale": 4.5, "steps": 20}}}
    manifest["runs"] = {"alignprop__mean-brightness__s0": {"eval": {"config": {"guidance_scale": 1.0, "steps": 10}}},
                        "ddpo__mean-brightness__s0": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    old_note = "machine busy: load 2.3 > 2 cores (wall-clock inflated; see cpu_per_step)"

    def runs(t):  # an older runs.csv: no eval columns, and a busy note that counted the job's own two workers
        t = t.drop(columns=[c for c in ("eval_guidance", "eval_steps") if c in t])
        t["load_avg"], t["cores"], t["threads"] = [2.3, 3.4], 2, 1
        t["warning"] = old_note
        return t

    edit(folder, runs)
    results = loading.load_results([folder])
    table = results.runs.set_index("method")
    assert table.loc["alignprop", "eval_guidance"] == 1.0 and table.loc["alignprop", "eval_steps"] == 10
    assert table.loc["ddpo", "eval_guidance"] == 4.5 and table.loc["ddpo", "eval_steps"] == 20
    assert (table["eval_true_cfg"] == 1.0).all()  # before the column: no true CFG ran
    assert table.loc["alignprop", "job_workers"] == 2
    assert table.loc["alignprop", "warning"] == ""  # 2.3 on 2 cores is the job's own 2 workers: not busy
    assert table.loc["ddpo", "warning"].startswith("machine busy: load 3.4 on 2 cores, 1.4 beyond this job's own 2")
    assert loading.busy_note(4.0, 2, 4) == "" and loading.busy_note(3.0, 2, 1).startswith("machine busy")


def diagnostic_results(clipfracs: dict[str, list[list[float]]]) -> Results:
    """Training rows of ``method -> per-seed clipfrac per step`` (ratio_max_dev alike)."""
    runs, rows = [], []
    for method, seeds in clipfracs.items():
        for seed, values in enumerate(seeds):
            run_id = f"{method}__r__s{seed}"
            runs.append(dict(run_id=run_id, method=method, reward="r", model="m", seed=seed, status="max_steps"))
            for step, value in enumerate(values, start=1):
                common = dict(run_id=run_id, method=method, reward="r", model="m", seed=seed, step=step, split="train")
                rows.append(dict(common, metric="clipfrac", value=value))
                rows.append(dict(common, metric="ratio_max_dev", value=value / 10))
                rows.append(dict(common, metric="loss", value=1.0))
    r = Results(runs=pd.DataFrame(runs), metrics=pd.DataFrame(rows), sources={})
    add_labels(r.runs, r.metrics)
    return r


def test_diagnostics_say_when_the_clip_never_acted_and_how_often_it_did(tmp_path):
    r = diagnostic_results({"dance-grpo": [[0.0] * 4, [0.0] * 4],
                            "flow-grpo": [[0.0, 0.2, 0.0, 0.4], [0.0, 0.1, 0.0, 0.3]]})
    table = diagnostics.diagnostics_table(r).set_index(["label", "metric"])
    assert table.loc[("flow-grpo", "clipfrac"), "updates"] == 8
    assert table.loc[("flow-grpo", "clipfrac"), "acted"] == pytest.approx(0.5)
    assert table.loc[("flow-grpo", "clipfrac"), "mean"] == pytest.approx(1.0 / 8)
    assert ("dance-grpo", "loss") not in table.index  # only the diagnostic metrics
    said = diagnostics.verdicts(diagnostics.diagnostics_table(r))
    assert said["dance-grpo"][0] == ("clip never acted: clipfrac 0 on all 8 updates — every ratio within 1±clip")
    assert "ratios never left 1" in said["dance-grpo"][1]
    assert said["flow-grpo"] == ["clip acted on 50% of 8 updates (clipfrac mean 12.5%, max 40.0%)"]
    names = diagnostics.diagnostics_figure(r, tmp_path, formats=("png",))
    assert names == ["diagnostics.png"] and (tmp_path / "diagnostics.png").stat().st_size > 1000
    text = "\n".join(diagnostics.markdown(r, names))
    assert "| flow-grpo | clipfrac | 8 (2 seeds) |" in text and "| 50% |" in text and "![diagnostics.png]" in text


def test_eval_metrics_wrap_into_rows_and_resources_give_per_query_costs(tmp_path):
    folder = write_results(tmp_path / "sa", "shape-aesthetic", failed=False, stand_in="")
    add_eval_metrics(folder, {**FIDELITY, "true_size": 0.2, "true_centring": 0.3, "diversity": 0.6})
    edit(folder, lambda t: t.assign(cpu_s=t["wall_s"] / 2))
    out = tmp_path / "rep"
    report.build_report([folder], out, n_boot=20, formats=("png",))
    wide = Image.open(out / "eval_metrics.png")
    assert wide.width < 2000 and wide.height > wide.width / 3  # 7 panels in rows of 3, not one 7-panel row
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary["kind"] == "method") & (summary["label"] == "ddpo")].iloc[0]
    assert row["cpu_per_query"] == pytest.approx(1.0 / 8)  # wall 2 s/step / 2, 8 queries a step
    assert row["sec_per_query"] == pytest.approx(2.0 / 8)
    text = (out / "report.md").read_text()
    assert "| CPU s/query |" in text and "| diversity |" in text.split("## Summary", 1)[1].split("##", 1)[0]


def test_the_effect_figure_draws_a_base_row_per_evaluation_setting(tmp_path):
    from bench.analysis import effect
    from test_effect import add_scores

    folder = write_results(tmp_path / "sa", "shape-aesthetic", methods=("alignprop", "diffusion-nft"), failed=False,
                           stand_in="")
    add_scores(folder, "shape-aesthetic")
    heights = []
    for cfg in (7.5, 1.0):  # the same runs, diffusion-nft evaluated alike, then CFG-free
        edit(folder, lambda t: t.assign(eval_guidance=[cfg if m == "diffusion-nft" else 7.5 for m in t["method"]]))
        results = loading.load_results([folder])
        add_labels(results.runs, results.metrics)
        out = tmp_path / f"cfg{cfg}"
        out.mkdir()
        assert effect.effect_figures(results, out, formats=("png",)) == ["effect_shape-aesthetic.png"]
        heights.append(Image.open(out / "effect_shape-aesthetic.png").height)
    assert heights[1] > heights[0] * 1.2  # a second base row: base (guidance 7.5), alignprop, base (guidance 1), nft
