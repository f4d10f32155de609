"""The suite report on synthetic suite folders: normalisation (both directions), absent methods, the aggregate's
cells, honest labels (quick, one seed, one task), section order, the command."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.analysis import aggregate, suite as suite_report, suite_scores
from bench.analysis.suite_markdown import SECTIONS, board_cell, report_markdown
from bench.core.errors import UsageError
from bench.suite import report as cli
from suite_fixture import STANDARD, write_suite

QUICK = "QUICK: numbers meaningless at this budget"


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    """The standard synthetic suite (2 tasks x 2 families, refl absent on prompt-match/sd3) and its full report."""
    root = write_suite(tmp_path_factory.mktemp("s") / "suite", STANDARD)
    out = suite_report.write_report(root, n_boot=200)
    return root, out, (out / "report.md").read_text()


def numbers(root, **kw):
    suite = suite_scores.read_suite(root)
    runs, board, cells = suite_scores.scoreboard(suite, rng=np.random.default_rng(0), n_boot=200, **kw)
    return suite, runs, board, cells


def test_normalised_scores_run_both_ways_round(standard):
    _, runs, board, cells = numbers(standard[0])
    runs = runs.set_index(["task", "family", "run_id"])
    # jpeg-compressibility: true_jpeg_kb, lower is better. Base 1.20; the best method is the smallest file,
    # alignprop (mean 0.82), not refl's 1.10 nearer the base: ddpo's 1.00 is (1.00 - 1.20) / (0.82 - 1.20)
    jpeg = cells.set_index(["task", "family"]).loc[("jpeg-compressibility", "sd")]
    assert jpeg["best"] == "alignprop" and jpeg["base"] == pytest.approx(1.20) and not jpeg["higher"]
    assert runs.loc[("jpeg-compressibility", "sd", "ddpo__jpeg-compressibility__s0"), "normalised"] == \
        pytest.approx((1.00 - 1.20) / (0.82 - 1.20))
    # prompt-match: true_match, higher is better: (0.60 - 0.40) / (0.70 - 0.40)
    assert runs.loc[("prompt-match", "sd", "ddpo__prompt-match__s0"), "normalised"] == pytest.approx(0.2 / 0.3)
    # 0 is the base, 1 the best method's mean, in every cell
    best = board[board["method"] == "alignprop"]
    assert best["normalised"].to_numpy() == pytest.approx(np.ones(4))
    assert suite_scores.normalise([1.2, 0.8, 1.0], 1.2, 0.8) == pytest.approx([0.0, 1.0, 0.5])
    # the learned reward instead (--score reward): jpeg-compressibility's reward is the negated size, higher is better
    _, runs_r, _, cells_r = numbers(standard[0], score="reward")
    assert cells_r.set_index(["task", "family"]).loc[("jpeg-compressibility", "sd"), "higher"]
    ddpo = runs_r.set_index("run_id").loc["ddpo__jpeg-compressibility__s0"]
    assert ddpo[ddpo["family"] == "sd"]["normalised"].iloc[0] == pytest.approx((-1.00 + 1.20) / (-0.82 + 1.20))


def test_an_absent_method_is_absent_not_zero_and_left_out_of_the_common_aggregate(standard):
    root, _, text = standard
    _, runs, board, cells = numbers(root)
    row = board.set_index(["task", "family", "method"]).loc[("prompt-match", "sd3", "refl")]
    assert row["status"] == "absent" and np.isnan(row["normalised"])
    assert re.search(r"^\| refl \|[^\n]*\| \*absent\* \|$", text, re.M)
    agg = suite_report.aggregates(runs, cells, ["ddpo", "alignprop", "refl"], seed=0, n_boot=200)
    assert agg["together"] == ["ddpo", "alignprop"]
    est = agg["estimates"].set_index("method")
    # refl over its own 3 cells x 3 seeds (9 runs), never a 0 for the fourth
    refl = runs[(runs["method"] == "refl")]["normalised"].to_numpy()
    assert est.loc["refl", "runs"] == 9 and est.loc["refl", "cells"] == 3
    assert est.loc["refl", "iqm"] == pytest.approx(aggregate.iqm(refl[:, None]))
    assert est.loc["refl", "iqm"] != pytest.approx(aggregate.iqm(np.append(refl, [0, 0, 0])[:, None]))
    ddpo = runs[runs["method"] == "ddpo"]["normalised"].to_numpy()
    assert est.loc["ddpo", "runs"] == 12 and est.loc["ddpo", "iqm"] == pytest.approx(aggregate.iqm(ddpo[:, None]))
    assert "its own cells only: jpeg-compressibility/sd, jpeg-compressibility/sd3, prompt-match/sd" in text
    assert "**Computed over 4 cells: jpeg-compressibility / sd, jpeg-compressibility / sd3, prompt-match / sd, " \
           "prompt-match / sd3.**" in text
    # P(ddpo > refl) over the 3 cells both have, counted by hand: ddpo's files are smaller than refl's in 9 of 9
    # pairs on jpeg/sd and 8 of 9 on jpeg/sd3 (1.22 kB vs refl's 1.21 loses), its matches higher in 9 of 9 on
    # prompt-match/sd; prompt-match/sd3, where refl is absent, does not count
    pairs = agg["improvements"].set_index(["x", "y"])
    assert pairs.loc[("ddpo", "refl"), "p"] == pytest.approx((1 + 8 / 9 + 1) / 3)
    assert pairs.loc[("ddpo", "refl"), "cells"] == 3 and pairs.loc[("ddpo", "alignprop"), "cells"] == 4


def test_sections_are_in_order_and_the_figures_exist_and_read(standard):
    _, out, text = standard
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(SECTIONS)
    assert not text.startswith(f"# Suite report — {QUICK}") and QUICK not in text
    for name in ("aggregate", "performance_profile", "curves_jpeg-compressibility", "curves_prompt-match",
                 "score_vs_diversity", "score_vs_fidelity", "effect_jpeg-compressibility_sd",
                 "effect_prompt-match_sd3"):
        assert f"![{name}.png]({name}.png)" in text
        image = Image.open(out / f"{name}.png")
        assert image.width >= 600 and image.height >= 300, name  # readable, not a thumbnail
    for table in ("scoreboard", "scores", "aggregate", "improvement", "speedups", "cells"):
        assert len(pd.read_csv(out / f"{table}.csv")) > 0
    # speed-ups name their reference per family: ddpo on sd (present), flow-grpo on sd3 (no run: said)
    assert "Reference per family: sd: `ddpo`, sd3: `flow-grpo` (the default" in text
    assert "**jpeg-compressibility / sd3:** no run of `flow-grpo`" in text
    # cost: every fixture run spends 64 CPU s on 64 queries; refl has 3 runs in each of 2 sd cells and 1 sd3 cell
    cost = text.split("### Cost", 1)[1].split("##", 1)[0]
    assert f"| refl | 1.000 ({6 * 64 / 3600:.2f} h, 6 runs) | 1.000 ({3 * 64 / 3600:.2f} h, 3 runs) |" in cost


def markdown_of(root) -> str:
    """report.md's text without drawing a figure (the numbers and the text only)."""
    suite, runs, board, cells = numbers(root)
    agg = suite_report.aggregates(runs, cells, suite.methods, seed=0, n_boot=50)
    refs = suite_report.resolve_references(None, suite.families, suite.methods)
    reach = suite_report.speedups(suite, refs, seed=0, n_boot=50)
    return report_markdown(suite, board, cells, agg, reach, refs, {}, score="true", what="normalised true score",
                           seed=0, n_boot=50, command=None, explicit_reference=False)


def test_a_quick_suite_is_headed_so(tmp_path):
    cells = {("prompt-match", "sd"): STANDARD[("prompt-match", "sd")]}
    text = markdown_of(write_suite(tmp_path / "quick", cells, quick=True, images=False))
    assert text.splitlines()[0] == f"# Suite report — {QUICK}"
    assert f"> **{QUICK}.**" in text
    # one cell: the aggregate over it has no interval, and says why
    assert "1 cell: no interval" in text


def test_one_seed_gives_no_interval_and_says_so(tmp_path):
    one = {k: (base, {m: v[:1] for m, v in finals.items()}) for k, (base, finals) in STANDARD.items()}
    text = markdown_of(write_suite(tmp_path / "one", one, seeds=(0,), images=False))
    board = text.split("## Scoreboard")[1].split("###")[0]
    assert "[" not in board.split("|---|")[1] and "(1 seed)" in board
    assert "- **1 seed** per method: no interval anywhere" in text
    aggregate_section = text.split("## Aggregate")[1].split("## Per-task")[0]
    table = aggregate_section.split("|---|")[1].split("\n\n")[0]
    assert "1 seed: no interval" in aggregate_section and "[" not in table


def test_cells_without_a_normalisation_or_results_are_said_and_not_aggregated(tmp_path):
    cells = dict(STANDARD)
    cells[("prompt-match", "sd")] = (0.40, {"ddpo": [0.30, 0.35, 0.32], "alignprop": [0.20, 0.25, 0.22],
                                            "refl": [0.38, 0.39, 0.36]})  # every method below the base
    del cells[("prompt-match", "sd3")]
    root = write_suite(tmp_path / "suite", cells, images=False)
    spec = json.loads((root / "suite.json").read_text())
    assert spec["families"] == ["sd", "sd3"]  # prompt-match/sd3 is in the suite but has no folder (not run yet)
    suite, runs, board, table = numbers(root)
    notes = table.set_index(["task", "family"])["note"]
    assert "no method moved the score the right way" in notes[("prompt-match", "sd")]
    assert "no results folder" in notes[("prompt-match", "sd3")]
    assert board[(board["task"] == "prompt-match") & (board["family"] == "sd3")]["status"].eq("absent").all()
    unscaled = board[(board["task"] == "prompt-match") & (board["family"] == "sd")]
    assert unscaled["seeds"].eq(3).all() and unscaled["normalised"].isna().all()  # finished seeds, not 0
    agg = suite_report.aggregates(runs, table, suite.methods, seed=0, n_boot=50)
    assert agg["cells"] == [("jpeg-compressibility", "sd"), ("jpeg-compressibility", "sd3")]
    assert sorted(agg["together"]) == ["alignprop", "ddpo", "refl"]


def test_a_method_whose_runs_all_failed_reads_failed(tmp_path):
    cells = {("prompt-match", "sd"): STANDARD[("prompt-match", "sd")]}
    root = write_suite(tmp_path / "suite", cells, images=False, failed={("prompt-match", "sd"): {"refl": "oom"}})
    _, _, board, _ = numbers(root)
    refl = board.set_index("method").loc["refl"].to_dict()
    assert board_cell(refl, "") == "*failed* (oom: 3)" and np.isnan(refl["normalised"])
    assert board_cell(dict(refl, status="unknown: 2, interrupted: 1"), "") == "*not finished* (unknown: 2, interrupted: 1)"
    assert board_cell(dict(refl, status="oom: 1, unknown: 2"), "") == "*failed* (oom: 1, unknown: 2)"


def test_references_per_family():
    families, methods = ["sd", "sd3"], ["ddpo", "flow-grpo", "alignprop"]
    assert suite_report.resolve_references(None, families, methods) == {"sd": "ddpo", "sd3": "flow-grpo"}
    assert suite_report.resolve_references("alignprop", families, methods) == {"sd": "alignprop", "sd3": "alignprop"}
    assert suite_report.resolve_references("sd3=alignprop", families, methods) == {"sd": "ddpo", "sd3": "alignprop"}
    with pytest.raises(UsageError, match="no run of 'refl'"):
        suite_report.resolve_references("refl", families, methods)
    with pytest.raises(UsageError, match="family 'xl'"):
        suite_report.resolve_references("xl=ddpo", families, methods)


def test_command_writes_the_report_and_refuses_bad_input(tmp_path, capsys):
    cells = {k: STANDARD[k] for k in (("jpeg-compressibility", "sd"), ("prompt-match", "sd"))}
    root = write_suite(tmp_path / "suite", cells, images=False)
    out = tmp_path / "rep"
    assert cli.main([str(tmp_path), "--out", str(out)]) == 2
    assert "not a suite folder" in capsys.readouterr().err and not out.exists()
    spec = (root / "suite.json").read_text()
    (root / "suite.json").write_text(json.dumps(dict(json.loads(spec), tasks_file=3)))  # one reader: read_suite_file
    assert cli.main([str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "suite.json' (key tasks_file): expected a string or null, got 3" in err and err.count("\n") == 1
    assert not out.exists()
    (root / "suite.json").write_text(spec)
    assert cli.main([str(root), "--out", str(out), "--reference", "nope"]) == 2
    assert "no run of 'nope'" in capsys.readouterr().err and not out.exists()
    assert cli.main([str(root), "--out", str(out), "--n-boot", "50", "--reference", "alignprop",
                     "--score", "reward"]) == 0
    text = (out / "report.md").read_text()
    assert "Reference per family: sd: `alignprop` (given with --reference)" in text
    assert "Normalised learned reward" in text and "--score reward" in text


def test_suite_json_is_checked_and_tolerates_the_runners_spellings(tmp_path):
    cells = {("prompt-match", "sd"): STANDARD[("prompt-match", "sd")]}
    root = write_suite(tmp_path / "suite", cells, images=False, methods=["ddpo"])
    suite = suite_scores.read_suite(root)
    assert suite.methods == ["ddpo", "alignprop", "refl"]  # a method found in a cell is shown, not dropped
    spec = json.loads((root / "suite.json").read_text())
    (root / "suite.json").write_text(json.dumps(dict(spec, methods="ddpo, refl", seeds="0,1,2")))
    assert suite_scores.read_suite(root).methods == ["ddpo", "refl", "alignprop"]
    (root / "suite.json").write_text(json.dumps(dict(spec, families="sd")))
    with pytest.raises(UsageError, match=r"suite.json' \(key families\): expected a list, got 'sd'"):
        suite_scores.read_suite(root)


def test_nineteen_methods_get_nineteen_colours_and_none_is_the_base_models_grey():
    """The suite shows up to 19 methods in one figure: tab10's cycle gave pairs of them one colour."""
    from matplotlib.colors import to_rgba

    from bench.analysis import plots

    colors = plots.color_map([f"method-{i:02d}" for i in range(19)])
    assert len(set(colors.values())) == 19
    assert to_rgba("0.55") not in colors.values()
    assert plots.color_map(["b", "a"]) == plots.color_map(["a", "b", "a"])  # stable: by sorted label


def test_a_speed_up_to_a_target_inside_the_noise_is_said_to_claim_nothing():
    """A reference whose final reward's interval holds its start (it did not learn) gives a target that noise alone
    crosses: the section says so for that cell, and only for that cell."""
    from bench.analysis.suite_markdown import speedup_lines

    def row(task, method, inside, bound):
        return dict(cost="samples", target_name="ddpo final", target=0.203, start=0.199, level_of="ddpo",
                    inside_noise=inside, task=task, family="sd", reference="ddpo", method=method,
                    is_reference=method == "ddpo", bound=bound, speedup=float("nan") if bound == "none" else 4.0,
                    speedup_lo=float("nan"), speedup_hi=float("nan"), seeds=3, reached=3, at_first=3 * (bound != ""),
                    ref_seeds=3, ref_reached=3, ref_at_first=1 * (bound != ""))

    reach = pd.DataFrame([row("noisy", "ddpo", True, ""), row("noisy", "alignprop", True, "none"),
                          row("clear", "ddpo", False, ""), row("clear", "alignprop", False, "")])
    text = "\n".join(speedup_lines(reach, {"sd": "ddpo"}, explicit=False))
    assert "**noisy / sd: target inside the noise.**" in text
    assert "clear / sd: target inside the noise" not in text
    assert "| alignprop | — | 4.00x |" in text
    assert '"—" where it is bounded both ways' in text


def test_the_improvement_matrix_reads_each_pair_both_ways_round():
    """P(Y > X) = 1 - P(X > Y) with the interval mirrored; bold only where an interval excludes 0.5."""
    from bench.analysis.suite_markdown import improvement_matrix

    imp = pd.DataFrame([dict(x="a", y="b", p=0.9, lo=0.6, hi=1.0, no_interval=""),
                        dict(x="a", y="c", p=0.7, lo=0.4, hi=0.9, no_interval=""),
                        dict(x="b", y="c", p=0.25, lo=np.nan, hi=np.nan, no_interval="1 cell: no interval")])
    m = improvement_matrix(imp, ["a", "b", "c", "d"]).set_index("X \\ Y")
    assert m.loc["a", "b"] == "**0.90**" and m.loc["b", "a"] == "**0.10**"
    assert m.loc["a", "c"] == "0.70" and m.loc["c", "a"] == "0.30"
    assert m.loc["b", "c"] == "0.25†" and m.loc["c", "b"] == "0.75†"
    assert m.loc["a", "a"] == "—" and m.loc["a", "d"] == "·"


def test_a_family_aggregate_holds_every_method_present_in_each_of_its_cells(standard):
    """refl is absent from prompt-match/sd3, so it is not aggregated with the others over all cells; over sd's two
    cells it has a score in each and gets its row there, recomputed here as the IQM of its 6 runs (floor(6 / 4) = 1
    cut at each end)."""
    root, out, text = standard
    suite, runs, board, cells = numbers(root)
    agg = suite_report.aggregates(runs, cells, suite.methods, seed=0, n_boot=50)
    assert "refl" not in agg["together"]
    sd = agg["per_family"]["sd"].set_index("method")
    assert set(sd.index) == {"ddpo", "alignprop", "refl"}
    refl = np.sort(runs[(runs["method"] == "refl") & (runs["family"] == "sd")]["normalised"].to_numpy())
    assert sd.loc["refl", "iqm"] == pytest.approx(refl[1:-1].mean())
    assert "### Per family: sd\n" in text and "### Per family: sd3" not in text  # sd3's all aggregate together
    assert len(pd.read_csv(out / "aggregate_per_family.csv")) == 3 + 2
