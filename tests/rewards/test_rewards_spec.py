"""Reward specs: names, weighted combinations, plug-ins (module:Name and path.py:Name)."""

import pytest
import torch

from bench.core.errors import UsageError
from rewards import build_reward, check_reward_spec, reward_names
from rewards.base import RewardNotDifferentiable
from rewards.combine import parse_terms

PLUGIN = """
import torch
from rewards.base import Reward

class Redness(Reward):
    name = "redness"
    differentiable = True

    def __init__(self, scale=1.0):
        self.scale = scale

    def score(self, images, prompts):
        return self.scale * images[:, 0].mean(dim=(1, 2))

class Weighted(Redness):
    def __init__(self, weights=None, allow_stand_in=False):
        super().__init__()
        self.weights, self.allow = weights, allow_stand_in

def make():
    return Redness(scale=2.0)

ready = Redness(scale=3.0)

def not_a_reward():
    return 3

def needs_argument(size):
    return Redness()
"""


@pytest.fixture
def plugin_file(tmp_path, monkeypatch):
    path = tmp_path / "my_reward.py"
    path.write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_names_include_the_new_rewards():
    names = reward_names()
    for name in ["aesthetic", "pickscore", "clip-score", "hpsv2", "jpeg-compressibility", "jpeg-incompressibility",
                 "mean-brightness", "shape-aesthetic"]:
        assert name in names
    from rewards import REWARDS

    assert "compressibility" in REWARDS and "incompressibility" in REWARDS  # aliases


def test_parse_terms():
    assert parse_terms("0.7*aesthetic+0.3*clip-score") == [(0.7, "aesthetic"), (0.3, "clip-score")]
    assert parse_terms(" aesthetic + -0.5 * compressibility ") == [(1.0, "aesthetic"), (-0.5, "compressibility")]
    assert parse_terms("2*my.mod:Name") == [(2.0, "my.mod:Name")]


def test_weighted_combination_scores_and_trains():
    combo = build_reward("0.25*mean-brightness+-2*mean-brightness")
    images = torch.rand(3, 3, 8, 8)
    assert torch.allclose(combo(images, ["a"] * 3), -1.75 * images.mean(dim=(1, 2, 3)))
    assert combo.differentiable
    mixed = build_reward("mean-brightness+0.5*compressibility")  # lower JPEG size is better: sign handled
    assert not mixed.differentiable
    mixed.check_trainable()  # trains on the surrogate
    from rewards.jpeg import jpeg_kb

    assert torch.allclose(mixed(images, ["a"] * 3), images.mean(dim=(1, 2, 3)) - 0.5 * jpeg_kb(images))
    x = images.clone().requires_grad_(True)
    mixed.objective(x, ["a"] * 3).sum().backward()
    assert x.grad.abs().sum() > 0
    assert mixed.trained_on() == "jpeg-compressibility: jpeg-rate surrogate (rewards.compress.jpeg_rate_kb)"
    with pytest.raises(RewardNotDifferentiable, match="jpeg-compressibility"):  # the bare score, as a plug-in
        build_reward("mean-brightness+rewards.jpeg:JpegCompressibility").check_trainable()
    with pytest.raises(UsageError, match="combination"):
        build_reward("mean-brightness+compressibility", weights="x.pth")


@pytest.mark.parametrize("spec, message", [
    ("0.5*", "empty term"), ("x*mean-brightness", "not a number"), ("nan*mean-brightness", "finite"),
    ("mean-brightness+aesthtic", "unknown reward 'aesthtic'.*mean-brightness"), ("", "empty"),
    ("brightness", "valid: .*aesthetic"), ("nowhere.py:Thing", "does not exist"),
    ("no_such_module_xyz:Thing", "cannot import"), ("rewards.toy:Nope", "no attribute"),
])
def test_bad_reward_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        check_reward_spec(spec)


def test_plugin_by_file_and_by_module(plugin_file):
    images = torch.rand(2, 3, 8, 8)
    red = images[:, 0].mean(dim=(1, 2))
    assert torch.allclose(build_reward(f"{plugin_file}:Redness")(images, ["a", "b"]), red)  # class
    assert torch.allclose(build_reward("my_reward:make")(images, ["a", "b"]), 2 * red)  # factory
    assert torch.allclose(build_reward("my_reward:ready")(images, ["a", "b"]), 3 * red)  # instance
    weighted = build_reward("my_reward:Weighted", weights="w.bin", allow_stand_in=True)  # options it accepts
    assert weighted.weights == "w.bin" and weighted.allow
    combo = build_reward(f"0.5*{plugin_file}:Redness+my_reward:make")
    assert torch.allclose(combo(images, ["a", "b"]), 2.5 * red)


def test_bad_plugins(plugin_file):
    with pytest.raises(UsageError, match="not a rewards.base.Reward"):
        build_reward("my_reward:not_a_reward")
    with pytest.raises(UsageError, match="cannot be built"):
        build_reward("my_reward:needs_argument")
    with pytest.raises(UsageError, match="no weights file"):
        build_reward("my_reward:Redness", weights="w.bin")
    with pytest.raises(UsageError, match="no weights file"):
        build_reward("mean-brightness", weights="w.bin")
