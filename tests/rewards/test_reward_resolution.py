"""What a reward name means on the chosen model (``rewards.resolve``), and reward weights that are not here failing at
once when the hub must not or cannot be asked (``rewards.weights``)."""

from __future__ import annotations

import argparse
import time

import pytest

from bench.core.errors import UsageError
from rewards import REWARDS
from rewards import weights as reward_weights
from bench.harness.plan import resolve_reward
from rewards.resolve import reward_for_model


@pytest.mark.parametrize("spec, model, expected", [
    ("aesthetic", "tiny-shapes", "shape-aesthetic"),
    ("aesthetic", "tiny-shapes-flow", "shape-aesthetic"),
    ("aesthetic", "tiny-random", "aesthetic"),
    ("aesthetic", "sd15", "aesthetic"),
    ("0.5*aesthetic+0.5*count", "tiny-shapes", "0.5*shape-aesthetic+0.5*count"),
    ("laion-aesthetic", "tiny-shapes", "laion-aesthetic"),  # LAION's predictor, asked for by name
    ("shape-aesthetic", "tiny-shapes", "shape-aesthetic"),
    ("count", "tiny-shapes", "count"),
])
def test_aesthetic_means_the_worlds_aesthetic_on_a_shape_world_model(spec, model, expected):
    assert reward_for_model(spec, model) == expected


def test_an_explicit_weights_file_keeps_laions_predictor_and_the_alias_is_laions():
    assert reward_for_model("aesthetic", "tiny-shapes", weights="aesthetic-model.pth") == "aesthetic"
    assert REWARDS.target("laion-aesthetic") == REWARDS.target("aesthetic")


def test_resolution_of_the_command_line_is_once_and_keeps_what_was_asked():
    args = argparse.Namespace(reward="aesthetic", model=None, preset="default", reward_weights=None)
    resolve_reward(args)
    from bench.harness.presets import get_preset

    if get_preset("default").model != "tiny-shapes":
        pytest.skip("tiny-shapes' weights are not in this checkout")
    assert (args.reward, args.reward_requested) == ("shape-aesthetic", "aesthetic")
    assert args.reward_note.startswith("reward aesthetic on tiny-shapes (a shape-world model): the world's aesthetic, "
                                       "shape-aesthetic")
    resolve_reward(args)  # a second plan of the same arguments (bench.tune plans each candidate) changes nothing
    assert (args.reward, args.reward_requested) == ("shape-aesthetic", "aesthetic")
    smoke = resolve_reward(argparse.Namespace(reward="aesthetic", model=None, preset="smoke", reward_weights=None))
    assert smoke.reward == "aesthetic" and smoke.reward_note is None  # tiny-random: LAION's predictor


def test_missing_weights_fail_at_once_when_the_hub_is_unreachable(monkeypatch):
    """Online by the environment but without a route to the hub: one probe (a refused local port here), then the
    one-line error, not huggingface_hub's ~30 s of retries per file."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(reward_weights, "_REACHABLE", {})
    asked = []
    import huggingface_hub

    real = huggingface_hub.hf_hub_download

    def download(*args, **kwargs):
        asked.append(kwargs.get("local_files_only", False))
        return real(*args, **{**kwargs, "local_files_only": True})  # never the network in a test

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    from rewards import build_reward

    start = time.perf_counter()
    with pytest.raises(UsageError) as info:
        build_reward("aesthetic")
    took = time.perf_counter() - start
    assert "weights for aesthetic (CLIP ViT-L/14 + LAION predictor v2) not found" in str(info.value)
    assert "hub unreachable" in str(info.value) and len(str(info.value).splitlines()) == 1
    assert asked == [True] and took < reward_weights.PROBE_TIMEOUT_S + 2  # the cache only, then the error


def test_missing_weights_fail_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(reward_weights, "hub_reachable", lambda: pytest.fail("offline: the hub is not probed"))
    start = time.perf_counter()
    with pytest.raises(reward_weights.WeightsMissing):
        reward_weights.hub_file("trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth")
    assert time.perf_counter() - start < 1.0
