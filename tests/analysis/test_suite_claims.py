"""Published claims on a suite: the verdict against a claimed speed-up, the equal-reward comparison recomputed by hand
on the synthetic suite's straight-line curves, the claims file's checks and the report's section."""

import math
from pathlib import Path

import numpy as np
import pytest

from bench.analysis import suite as suite_report, suite_claims, suite_scores
from bench.core.errors import UsageError
from suite_fixture import write_suite

NAN = float("nan")


def equal_reward_claims(path: Path, *claims) -> Path:
    """A claims file of equal-reward claims, each (name, method, reference, metric); the path, for ``load_claims``."""
    path.write_text("".join(f'[claims.{name}]\nsource = "x"\nkind = "equal-reward"\nmethod = "{method}"\n'
                            f'reference = "{reference}"\nmetric = "{metric}"\n'
                            for name, method, reference, metric in claims))
    return path


DIVERSITY_CLAIM = ("div", "alignprop", "draft-lv", "diversity")


def row(speedup, lo=NAN, hi=NAN, bound="", inside=False):
    return dict(speedup=speedup, speedup_lo=lo, speedup_hi=hi, bound=bound, inside_noise=inside)


@pytest.mark.parametrize("r, verdict", [
    (row(30.0, 26.0, 40.0), "holds"),
    (row(20.0, 12.0, 30.0), "consistent"),
    (row(10.0, 5.0, 17.0), "faster, below the claim"),
    (row(1.1, 0.8, 1.5), "no difference shown"),
    (row(0.5, 0.3, 0.8), "slower"),
    (row(30.0, bound=">="), "holds (a lower bound"),
    (row(18.0, bound=">="), "faster, the claim neither shown nor ruled out"),
    (row(0.9, bound=">="), "undecided"),
    (row(0.5, bound="<="), "slower"),
    (row(5.0, bound="<="), "below the claim"),
    (row(NAN, bound="none"), "undecided: bounded both ways"),
    (row(40.0, 30.0, 50.0, inside=True), "undecided: the reference did not learn"),
    (row(float("inf"), bound=">="), "undecided: it starts at or past the target"),
])
def test_a_speed_up_is_judged_against_the_claimed_factor(r, verdict):
    assert suite_claims.speedup_verdict(r, 25.0).startswith(verdict)


def test_equal_reward_reads_each_run_where_its_reward_crosses_the_lower_final(tmp_path):
    """prompt-match: learned reward log(true), true on a straight line from base 0.2 to the final over t = queries /
    64; evaluations at t = 0, 1/8, 1/4, 1/2, 1. alignprop (finals 0.5) sets the level log(0.5), reached at its last
    evaluation; draft-lv (finals 0.9) crosses it between t = 1/4 and 1/2, read on the straight line of the reward."""
    root = write_suite(tmp_path / "s", {("prompt-match", "sd"): (0.2, {"alignprop": [0.5] * 3,
                                                                     "draft-lv": [0.9] * 3})})
    claims = equal_reward_claims(tmp_path / "claims.toml", DIVERSITY_CLAIM, ("true", "alignprop", "draft-lv", "true"),
                                 ("swap", "draft-lv", "alignprop", "diversity"))
    table = suite_claims.check_claims(suite_scores.read_suite(root), suite_claims.load_claims(claims), seed=0,
                                      n_boot=50)
    # by hand: the fixture's diversity[...] of the method with index i is 0.4 - 0.2 t (i + 1) / 3
    true_b = lambda t: 0.2 + 0.7 * t  # noqa: E731
    f = (math.log(0.5) - math.log(true_b(0.25))) / (math.log(true_b(0.5)) - math.log(true_b(0.25)))
    t_b = 0.25 + f * 0.25  # the fixture's metrics are linear in t
    expected = {"diversity[shapeworld-classifier]": (0.4 - 0.2 / 3, 0.4 - 0.2 * t_b * 2 / 3),
                "attribute_diversity": (0.5 - 0.1, 0.5 - 0.1 * t_b), "true_match": (0.5, true_b(t_b))}
    assert set(table["metric"]) == set(expected)
    for r in table.itertuples():
        a, b = expected[r.metric][::-1] if r.claim == "swap" else expected[r.metric]
        assert r.level == pytest.approx(math.log(0.5))
        assert r.method_value == pytest.approx(a) and r.reference_value == pytest.approx(b)
        assert r.difference == pytest.approx(a - b)
        assert r.method_reached == "3/3" and r.reference_reached == "3/3"
        assert r.verdict == ("holds" if a > b else "reversed")  # equal seeds: the interval is the point
    # draft-lv, past the level sooner, is less diverse there in the fixture: each direction's verdict is met once
    assert set(table.loc[table["claim"] != "swap", "verdict"]) == {"reversed"}
    assert set(table.loc[table["claim"] == "swap", "verdict"]) == {"holds"}


def test_no_equal_reward_verdict_where_one_method_never_left_the_start(tmp_path):
    """A method whose final learned reward is its start sets the level at the base model: both would be read at
    step 0, where any difference is the setting's, not the training's."""
    root = write_suite(tmp_path / "s", {("prompt-match", "sd"): (0.2, {"alignprop": [0.2] * 3,
                                                                     "draft-lv": [0.9, 0.8, 0.7]})})
    claims = equal_reward_claims(tmp_path / "claims.toml", DIVERSITY_CLAIM)
    table = suite_claims.check_claims(suite_scores.read_suite(root), suite_claims.load_claims(claims), seed=0,
                                      n_boot=50)
    assert len(table) and set(table["verdict"]) == {
        "undecided: alignprop did not raise its learned reward beyond the noise around the start"}


def test_a_gain_inside_the_noise_is_no_level_either(tmp_path):
    """Finals of 0.19, 0.20, 0.215 around a start of 0.2: their mean is a hair above it, inside their interval."""
    root = write_suite(tmp_path / "s", {("prompt-match", "sd"): (0.2, {"alignprop": [0.19, 0.2, 0.215],
                                                                     "draft-lv": [0.9, 0.8, 0.7]})})
    claims = equal_reward_claims(tmp_path / "claims.toml", DIVERSITY_CLAIM)
    table = suite_claims.check_claims(suite_scores.read_suite(root), suite_claims.load_claims(claims), seed=0,
                                      n_boot=200)
    assert set(table["verdict"]) == {"undecided: alignprop did not raise its learned reward beyond the noise around "
                                     "the start"}


def test_the_report_has_the_section_and_a_claim_without_both_methods_says_so(tmp_path):
    root = write_suite(tmp_path / "s", {("prompt-match", "sd"): (0.2, {"ddpo": [0.4, 0.45, 0.5],
                                                                     "alignprop": [0.6, 0.7, 0.8]})})
    out = suite_report.write_report(root, n_boot=50)
    text = (out / "report.md").read_text()
    section = text.split("## Published claims", 1)[1].split("## Definitions", 1)[0]
    assert "### `alignprop` vs `ddpo`: AlignProp (arXiv 2310.03739)" in section
    assert "| prompt-match / sd | reward queries |" in section
    assert "### `awm` vs `flow-grpo`" in section and "_No cell has runs of both methods._" in section
    assert (out / "claims.csv").is_file()


@pytest.mark.parametrize("body, problem", [
    ('kind = "speed-up"\nmethod = "a"\nreference = "b"\nfactor = 2\ncosts = ["samples"]', "missing source"),
    ('source = "s"\nkind = "faster"\nmethod = "a"\nreference = "b"', "kind 'faster'"),
    ('source = "s"\nkind = "speed-up"\nmethod = "a"\nreference = "b"\nfactor = 2\ncosts = ["hours"]', "costs"),
    ('source = "s"\nkind = "speed-up"\nmethod = "a"\nreference = "b"\nfactor = -1\ncosts = ["samples"]', "factor"),
    ('source = "s"\nkind = "equal-reward"\nmethod = "a"\nreference = "b"\nmetric = "beauty"', "metric 'beauty'"),
])
def test_a_bad_claim_is_one_line_naming_the_file_and_key(tmp_path, body, problem):
    path = tmp_path / "claims.toml"
    path.write_text(f"[claims.bad]\n{body}\n")
    with pytest.raises(UsageError, match=problem) as info:
        suite_claims.load_claims(path)
    assert "[claims.bad]" in str(info.value) and "\n" not in str(info.value)


def test_the_shipped_claims_load():
    claims = suite_claims.load_claims()
    assert {c.method for c in claims} >= {"alignprop", "diffusion-nft", "mixgrpo", "awm", "flow-grpo-guard",
                                           "adjoint-matching"}
    assert all(np.isfinite(c.factor) for c in claims if c.kind == "speed-up")
