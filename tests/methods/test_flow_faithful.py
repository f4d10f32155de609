"""Issue 34: the flow policy gradients run as their authors' code runs them. Each test recomputes the reference's
quantity independently (from the paper or the cited lines of the reference code), never by calling our helper that
computes it, and fails if the corresponding deviation comes back."""

from bench.harness.plan import plan
from bench.run import build_parser

FLOW_ARGS = ["--preset", "default", "--model", "tiny-flow-random", "--reward", "mean-brightness", "--out", "unused"]


def planned(*args):
    runs, info = plan(build_parser().parse_args([*FLOW_ARGS, *args]))
    return {r.method: r for r in runs}, info


def test_a_preset_never_overrides_diffusion_nfts_cfg_free_sampling():
    # DiffusionNFT config/nft.py: sample.guidance_scale = 1.0 (CFG-free), for rollouts and evaluation alike. The
    # default preset's guidance (2.0 on the shape world) applies to the methods that do not pin one.
    runs, info = planned("--methods", "diffusion-nft,flow-grpo")
    nft, grpo = runs["diffusion-nft"], runs["flow-grpo"]
    assert nft.method_config["guidance_scale"] == 1.0 and nft.eval.config.guidance_scale == 1.0
    assert grpo.eval.config.guidance_scale == grpo.method_config["guidance_scale"] != 1.0
    assert info["notes"] == []


def test_an_explicit_guidance_set_is_applied_and_announced():
    for sets in (["--set", "guidance_scale=3"], ["--set", "diffusion-nft.guidance_scale=3"]):
        runs, info = planned("--methods", "diffusion-nft", *sets)
        nft = runs["diffusion-nft"]
        assert nft.method_config["guidance_scale"] == 3.0 and nft.eval.config.guidance_scale == 3.0
        assert len(info["notes"]) == 1 and "diffusion-nft's published guidance_scale 1" in info["notes"][0]
        assert sets[1].split("=")[0] in info["notes"][0]
