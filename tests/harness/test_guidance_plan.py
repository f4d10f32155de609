"""Guidance in the plan (issue 39): on a family whose guidance is an embedding (flux, ``Family.embedded_guidance``)
every method and the evaluation get the family's value above presets, method defaults, published settings and pinned
inference values, under the user's ``--set``; true classifier-free guidance (``true_cfg_scale``) reaches the
evaluation from a global ``--set`` only; sd and sd3 plan as before. Planner calls (one tiny-flux-random build for the
evaluation's sampler); a folder planned before ``true_cfg_scale`` resumes; a flux card's snippet passes true CFG."""

from __future__ import annotations

import pytest

from bench.harness.plan import plan
from bench.run import build_parser
from test_run import bench_run_inprocess

BASE = ["--reward", "mean-brightness", "--methods", "alignprop,diffusion-nft"]


def planned(*args, preset="smoke", model="tiny-flux-random", methods="alignprop,diffusion-nft"):
    """{method: (training guidance, evaluation guidance, training true CFG, evaluation true CFG)} and the plan info."""
    runs, info = plan(build_parser().parse_args(["--preset", preset, "--model", model, "--reward", "mean-brightness",
                                                 "--methods", methods, *args]))
    return {r.method: (r.method_config["guidance_scale"], r.eval.config.guidance_scale,
                       r.method_config["true_cfg_scale"], r.eval.config.true_cfg_scale) for r in runs}, info


@pytest.mark.parametrize("preset, protocol", [("smoke", "matched"), ("default", "matched"), ("paper", "published")])
def test_flux_plans_its_guidance_embedding_for_every_method_and_the_evaluation(preset, protocol):
    # alignprop's default 7.5 (also published), diffusion-nft's CFG-free pin 1.0 and the default preset's shape-world
    # 2.0 would each become the embedding's value: FLUX.1-dev's 3.5 replaces them all, and no true CFG runs.
    guidance, info = planned("--protocol", protocol, preset=preset)
    assert guidance == {"alignprop": (3.5, 3.5, 1.0, 1.0), "diffusion-nft": (3.5, 3.5, 1.0, 1.0)}
    assert info["eval"]["config"]["guidance_scale"] == 3.5 and info["eval"]["config"]["true_cfg_scale"] == 1.0
    assert not any("guidance" in note for note in info["notes"])  # the family's value is no --set to announce


def test_an_explicit_set_wins_over_the_familys_embedding():
    guidance, info = planned("--set", "guidance_scale=2")
    assert guidance == {"alignprop": (2.0, 2.0, 1.0, 1.0), "diffusion-nft": (2.0, 2.0, 1.0, 1.0)}
    assert any("--set guidance_scale=2 changes diffusion-nft's guidance_scale from the flux family's 3.5" in note
               for note in info["notes"])
    # A per-method value is that method's training (and, where pinned, its evaluation), as on sd.
    guidance, _ = planned("--set", "alignprop.guidance_scale=2", "--set", "diffusion-nft.guidance_scale=5")
    assert guidance == {"alignprop": (2.0, 3.5, 1.0, 1.0), "diffusion-nft": (5.0, 5.0, 1.0, 1.0)}


def test_a_global_true_cfg_reaches_the_evaluation_and_a_per_method_one_only_training():
    from bench.core.evaluate import eval_sampler
    from bench.core.models import load_model

    guidance, info = planned("--set", "true_cfg_scale=2")
    assert guidance == {"alignprop": (3.5, 3.5, 2.0, 2.0), "diffusion-nft": (3.5, 3.5, 2.0, 2.0)}
    assert info["eval"]["config"]["true_cfg_scale"] == 2.0  # the evaluation block records it
    assert any("gives diffusion-nft true classifier-free guidance 2" in note for note in info["notes"])
    runs, _ = plan(build_parser().parse_args(["--preset", "smoke", "--model", "tiny-flux-random", *BASE,
                                              "--set", "true_cfg_scale=2"]))
    sampler = eval_sampler(load_model("tiny-flux-random").pipe, runs[0].eval.config)
    assert sampler.guided and sampler.chain.cfg_scale == 2.0  # the evaluation samples with true CFG
    guidance, _ = planned("--set", "alignprop.true_cfg_scale=2")
    assert guidance["alignprop"] == (3.5, 3.5, 2.0, 1.0) and guidance["diffusion-nft"] == (3.5, 3.5, 1.0, 1.0)


def test_sd3_and_sd_plan_as_before_and_refuse_true_cfg(capsys):
    assert planned(model="tiny-flow-random")[0] == {"alignprop": (7.5, 7.5, 1.0, 1.0),
                                                     "diffusion-nft": (1.0, 1.0, 1.0, 1.0)}
    assert planned(preset="paper", model="tiny-random", methods="alignprop,ddpo")[0] == {
        "alignprop": (7.5, 7.5, 1.0, 1.0), "ddpo": (5.0, 7.5, 1.0, 1.0)}
    code, _, err = bench_run_inprocess(capsys, "--preset", "smoke", "--model", "tiny-flow-random", *BASE,
                                       "--set", "alignprop.true_cfg_scale=2", "--dry-run")
    assert code == 2 and "--set alignprop.true_cfg_scale=2: tiny-flow-random (family sd3) has no guidance embedding" \
        in err


def test_the_plans_guidance_line_says_it_is_the_embedding_on_flux(capsys):
    code, text, _ = bench_run_inprocess(capsys, "--preset", "smoke", "--model", "tiny-flux-random", *BASE,
                                        "--set", "alignprop.true_cfg_scale=3", "--dry-run")
    assert code == 0
    assert ("guidance (training / evaluation; on flux the guidance embedding's value, one pass, 3.5 unless --set; "
            "classifier-free guidance only from true_cfg_scale > 1): alignprop 3.5/3.5 true CFG 3/1, "
            "diffusion-nft 3.5/3.5\n") in text
    code, text, _ = bench_run_inprocess(capsys, "--preset", "smoke", "--model", "tiny-flow-random", *BASE, "--dry-run")
    assert "guidance (training / evaluation): alignprop 7.5/7.5, diffusion-nft 1/1 (its published setting)\n" in text


def test_a_folder_planned_before_true_cfg_existed_resumes_unless_the_flags_now_ask_for_it(tmp_path):
    import json

    from bench.core.errors import UsageError
    from bench.harness.launch import check_out, prepare_out, spec_changes
    from bench.harness.recorder import write_manifest

    out = tmp_path / "r"
    args = ["--preset", "smoke", "--reward", "mean-brightness", "--methods", "rwr", "--out", str(out)]
    runs, _ = plan(build_parser().parse_args(args))
    prepare_out(out, runs, resume=False)[1].close()
    older = json.loads(runs[0].to_json())  # as written before the field: neither config holds true_cfg_scale
    del older["method_config"]["true_cfg_scale"], older["eval"]["config"]["true_cfg_scale"]
    write_manifest(out, dict(runs={runs[0].run_id: older}))
    (out / "runs" / runs[0].run_id / "config.json").write_text(json.dumps(older))
    assert spec_changes(older, runs[0]) == []
    check_out(out, runs, resume=True)  # the older run sampled at the default: no true CFG
    flux, _ = plan(build_parser().parse_args([*args, "--model", "tiny-flux-random", "--set", "true_cfg_scale=2"]))
    assert spec_changes(older, flux[0]) == ["eval", "method_config", "model"]
    with pytest.raises(UsageError, match="eval, method_config, model differ from manifest.json"):
        check_out(out, flux, resume=True)


def test_a_flux_cards_snippet_and_table_carry_the_evaluations_true_cfg(tmp_path):
    from bench.analysis.export import model_card, usage_code

    runs, _ = plan(build_parser().parse_args(["--preset", "smoke", "--model", "tiny-flux-random", "--methods", "rwr",
                                              "--reward", "mean-brightness", "--set", "true_cfg_scale=2"]))
    code = "\n".join(usage_code(runs[0], merged=False, folder=tmp_path))
    # FluxPipeline runs true CFG only with a negative prompt: the sampler's empty one
    assert "guidance_scale=3.5, true_cfg_scale=2.0, negative_prompt='', generator=noise" in code
    card = model_card(runs[0], dict(status="max_steps", steps=1, samples=2), None, False, folder=tmp_path)
    assert "4 steps, guidance 3.5, true CFG 2, noise seed 1234" in card
