"""Real reward models offline: state-dict layouts, weight resolution, stand-ins (labelled), gradients."""

import importlib.util

import pytest
import torch

from bench.core.errors import UsageError
from rewards import build_reward

MODEL_REWARDS = ["aesthetic", "clip-score", "pickscore", "hpsv2"]
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


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
    assert mlp.eval()(torch.randn(2, 768)).shape == (2, 1)


def test_pickscore_architecture_has_the_released_head_shapes():
    # yuvalkirstain/PickScore_v1 config (CLIP ViT-H/14): built on the meta device, no memory, no download.
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                           patch_size=14, image_size=224),
        projection_dim=1024)
    with torch.device("meta"):
        state = CLIPModel(config).state_dict()
    assert state["visual_projection.weight"].shape == (1024, 1280)
    assert state["text_projection.weight"].shape == (1024, 1024)
    assert state["logit_scale"].shape == ()
    assert state["vision_model.embeddings.position_embedding.weight"].shape == (257, 1280)  # 16x16 patches + cls


def test_missing_weights_is_a_one_line_usage_error():
    with pytest.raises(UsageError, match="aesthetic.*not found.*reward-weights") as info:
        build_reward("aesthetic")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="clip-score.*not found"):
        build_reward("clip-score", allow_stand_in=True, strict=True)  # strict refuses the stand-in
    with pytest.raises(UsageError, match="does not exist"):
        build_reward("aesthetic", weights="/nonexistent/aesthetic-model.pth", allow_stand_in=True)
    with pytest.raises(UsageError, match="not a directory"):
        build_reward("pickscore", weights="/nonexistent/pickscore", allow_stand_in=True)


@pytest.mark.parametrize("name", MODEL_REWARDS)
def test_stand_ins_are_labelled_and_differentiable(name):
    with pytest.warns(UserWarning, match="STAND-IN"):
        reward = build_reward(name, allow_stand_in=True)
    assert reward.stand_in.startswith("random-weight stand-in for " + name)
    assert reward.describe()["stand_in"] == reward.stand_in
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    scores = reward(images, ["a cat", "a dog"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_stand_ins_are_seeded():
    with pytest.warns(UserWarning):
        a, b = build_reward("aesthetic", allow_stand_in=True), build_reward("aesthetic", allow_stand_in=True)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(a(images, ["x", "y"]), b(images, ["x", "y"]))


def test_combination_labels_its_stand_ins():
    with pytest.warns(UserWarning):
        combo = build_reward("0.7*aesthetic+0.3*clip-score", allow_stand_in=True)
    assert "aesthetic" in combo.stand_in and "clip-score" in combo.stand_in
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    combo.objective(images, ["a", "b"]).sum().backward()
    assert images.grad.abs().sum() > 0


def test_clip_score_loads_real_weights_from_a_local_folder(tmp_path):
    # A folder written by save_pretrained is "real" weights: no stand-in, same scores as the saved model.
    from rewards.clip import small_clip

    model, tokenizer = small_clip(seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward = build_reward("clip-score", weights=str(tmp_path))
    assert reward.stand_in is None
    images = torch.rand(2, 3, 32, 32)
    scores = reward(images, ["a cat", "a dog"])
    assert scores.shape == (2,) and (scores.abs() <= 1).all()
    pick = build_reward("pickscore", weights=str(tmp_path))
    assert torch.allclose(pick(images, ["a cat", "a dog"]), model.logit_scale.exp() * scores, atol=1e-5)


@pytest.mark.skipif(HAS_OPEN_CLIP, reason="checks the message shown when open-clip-torch is absent")
def test_hpsv2_without_open_clip_names_the_extra():
    with pytest.raises(UsageError, match=r"open-clip-torch: pip install -e '\.\[hps\]'") as info:
        build_reward("hpsv2")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match=r"\.\[hps\]"):
        build_reward("hpsv2", allow_stand_in=True, strict=True)


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open-clip-torch (optional extra .[hps]) is not installed")
def test_hpsv2_with_open_clip_names_the_missing_checkpoint():
    with pytest.raises(UsageError, match="HPS_v2.1_compressed.pt"):
        build_reward("hpsv2")
