"""The shape world: deterministic data, captions, held-out split, in-domain rewards, the shipped model."""

import pytest
import torch

from bench.core import shapes as world
from bench.core.families.sd import ASSET


def test_dataset_is_deterministic_and_captions_parse_back():
    a, scenes_a = world.dataset(16, seed=3)
    b, scenes_b = world.dataset(16, seed=3)
    c, _ = world.dataset(16, seed=4)
    assert torch.equal(a, b) and scenes_a == scenes_b and not torch.equal(a, c)
    assert a.shape == (16, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    for scene in world.all_scenes():
        assert world.parse_caption(scene.caption) == scene
    assert world.parse_caption("a photo of a cat") is None


def test_held_out_prompts_are_unseen_combinations_of_seen_words():
    train, held = set(world.train_scenes()), set(world.eval_scenes())
    assert not train & held and len(train) + len(held) == len(world.all_scenes())
    for scene in held:  # its colour, shape and count each appear in training, never together
        assert any(s.color == scene.color and s.shape == scene.shape for s in train)
        assert any(s.count == scene.count for s in train)


def test_rewards_rank_ground_truth_images():
    from rewards.shapeworld import PromptMatch, ShapeCount

    images, scenes = world.dataset(64, seed=11, scenes=world.all_scenes())
    true = [s.caption for s in scenes]
    wrong_count = [world.Scene(s.count % 4 + 1, s.color, s.shape, s.background).caption for s in scenes]
    colors = list(world.COLORS)
    wrong_color = [world.Scene(s.count, colors[(colors.index(s.color) + 1) % len(colors)], s.shape,
                               s.background).caption for s in scenes]
    count, match = ShapeCount(), PromptMatch()
    assert (count(images, true) > count(images, wrong_count)).float().mean() > 0.95
    assert (match(images, true) > match(images, wrong_color)).float().mean() > 0.95
    assert count.eval_metrics(images, true)["exact_count"] > 0.95
    x = images.clone().requires_grad_(True)
    (count(x, true).sum() + match(x, true).sum()).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape-world prompts"):
        count(images[:1], ["a photo of a cat"])


def test_shipped_tiny_shapes_loads_offline_and_samples(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if not (ASSET / "model_index.json").is_file():
        pytest.fail("tiny-shapes weights are missing; run python -m bench.shapeworld.train")
    from bench.core.models import load_model
    from bench.core.sampler import Sampler, SamplerConfig

    model = load_model("tiny-shapes")
    assert model.stand_in is None
    out = Sampler(model.pipe, SamplerConfig(steps=4, guidance_scale=5.0)).sample(
        ["two red circles on a white background"], generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 3, 32, 32)
