"""Real reward models offline: state-dict compatibility, gradients, stand-ins, preprocessing, specs, plug-ins."""

import numpy as np
import pytest
import torch

from bench.errors import UsageError
from rewards import build_reward, check_reward_spec
from rewards.preprocess import clip_preprocess

STAND_INS = ["aesthetic", "clip-score", "pickscore", "hpsv2"]


def test_aesthetic_head_loads_the_released_state_dict_layout():
    from rewards.aesthetic import AestheticMLP

    # keys and shapes of sac+logos+ava1-l14-linearMSE.pth (trl-lib/ddpo-aesthetic-predictor/aesthetic-model.pth)
    shapes = {"layers.0": (1024, 768), "layers.2": (128, 1024), "layers.4": (64, 128), "layers.6": (16, 64),
              "layers.7": (1, 16)}
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, (out, inp) in shapes.items():
        state[f"{key}.weight"] = torch.randn(out, inp, generator=g)
        state[f"{key}.bias"] = torch.randn(out, generator=g)
    mlp = AestheticMLP()
    mlp.load_state_dict(state, strict=True)
    assert mlp(torch.randn(2, 768)).shape == (2, 1)


def test_missing_weights_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="aesthetic.*not found.*reward-weights") as info:
        build_reward("aesthetic")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="not found"):
        build_reward("clip-score", allow_stand_in=True, strict=True)


@pytest.mark.parametrize("name", STAND_INS)
def test_stand_ins_are_labelled_and_differentiable(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="STAND-IN"):
        reward = build_reward(name, allow_stand_in=True)
    assert reward.stand_in and "random-weight stand-in" in reward.stand_in and name in reward.stand_in
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    scores = reward(images, ["a cat", "a dog"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (300, 200), (231, 400), (512, 512), (224, 224)])
def test_preprocessing_matches_the_transformers_processor(size):
    # Tolerance: on smooth images the only difference is PIL's rounding to uint8 after resizing, one grey level
    # (1/255/0.26 = 0.015 after normalisation); we allow 0.02 max and 0.006 mean.
    from transformers import CLIPImageProcessor

    h, w = size
    coarse = torch.rand(2, 3, max(h // 8, 2), max(w // 8, 2), generator=torch.Generator().manual_seed(h * w))
    images = (torch.nn.functional.interpolate(coarse, size=size, mode="bilinear") * 255).round() / 255
    arrays = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in images]
    ref = CLIPImageProcessor()(arrays, return_tensors="pt").pixel_values
    ours = clip_preprocess(images)
    assert ours.shape == ref.shape == (2, 3, 224, 224)
    diff = (ours - ref).abs()
    assert diff.max() < 0.02 and diff.mean() < 0.006, (float(diff.max()), float(diff.mean()))


def test_compressibility_surrogate_ranks_like_jpeg():
    from rewards.compress import held_out_images, jpeg_rate_kb, spearman
    from rewards.jpeg import jpeg_kb

    images = held_out_images(48, seed=5)
    assert spearman(jpeg_rate_kb(images), jpeg_kb(images)) >= 0.9
    reward = build_reward("compressibility")
    x = images[:2].clone().requires_grad_(True)
    reward.objective(x, ["a", "b"]).sum().backward()
    assert x.grad.abs().sum() > 0
    assert torch.allclose(reward(x, ["a", "b"]), -jpeg_kb(x))  # the true score stays JPEG


def test_weighted_combination(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    combo = build_reward("0.25*mean-brightness+-2*mean-brightness")
    images = torch.rand(3, 3, 8, 8)
    assert torch.allclose(combo(images, ["a"] * 3), -1.75 * images.mean(dim=(1, 2, 3)))
    assert combo.differentiable
    mixed = build_reward("mean-brightness+0.5*compressibility")
    assert not mixed.differentiable
    mixed.check_trainable()  # trains on the surrogate
    x = images.clone().requires_grad_(True)
    mixed.objective(x, ["a"] * 3).sum().backward()
    assert x.grad.abs().sum() > 0
    from rewards.base import RewardNotDifferentiable

    with pytest.raises(RewardNotDifferentiable, match="jpeg-compressibility"):
        build_reward("mean-brightness+jpeg-compressibility").check_trainable()


@pytest.mark.parametrize("spec, message", [("0.5*", "empty term"), ("x*mean-brightness", "not a number"),
                                           ("mean-brightness+aesthtic", "unknown reward 'aesthtic'"),
                                           ("", "empty"), ("nowhere.py:Thing", "does not exist")])
def test_bad_reward_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        check_reward_spec(spec)


def test_plugin_from_a_file_and_a_module(tmp_path, monkeypatch):
    plugin = tmp_path / "my_reward.py"
    plugin.write_text(
        "import torch\nfrom rewards.base import Reward\n"
        "class Redness(Reward):\n    name = 'redness'\n    differentiable = True\n"
        "    def score(self, images, prompts):\n        return images[:, 0].mean(dim=(1, 2))\n"
        "def make():\n    return Redness()\n"
        "def not_a_reward():\n    return 3\n"
    )
    images = torch.rand(2, 3, 8, 8)
    by_file = build_reward(f"{plugin}:Redness")
    assert torch.allclose(by_file(images, ["a", "b"]), images[:, 0].mean(dim=(1, 2)))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert build_reward("my_reward:make").name == "redness"
    with pytest.raises(UsageError, match="not a rewards.base.Reward"):
        build_reward("my_reward:not_a_reward")
