"""compressibility / incompressibility: true JPEG score, differentiable surrogate that ranks like it."""

import torch

from rewards import build_reward
from rewards.compress import held_out_images, jpeg_rate_kb, ranks, spearman
from rewards.jpeg import jpeg_kb


def test_surrogate_ranks_images_like_jpeg_size():
    images = held_out_images(48, seed=5)  # a seed other than --check's
    assert spearman(jpeg_rate_kb(images), jpeg_kb(images)) >= 0.9


def test_true_score_is_jpeg_and_surrogate_has_gradients():
    images = held_out_images(4, seed=7)
    x = images.clone().requires_grad_(True)
    comp, incomp = build_reward("compressibility"), build_reward("incompressibility")
    assert torch.allclose(comp(x, ["a"] * 4), -jpeg_kb(x)) and torch.allclose(incomp(x, ["a"] * 4), jpeg_kb(x))
    assert not comp.differentiable and comp.has_surrogate
    comp.check_trainable()
    comp.objective(x, ["a"] * 4).sum().backward()
    assert x.grad.abs().sum() > 0
    assert torch.allclose(comp.surrogate(images, []), -incomp.surrogate(images, []))


def test_jpeg_names_train_on_the_named_surrogate_and_keep_aliases():
    for name, alias in (("jpeg-compressibility", "compressibility"), ("jpeg-incompressibility", "incompressibility")):
        reward, same = build_reward(name), build_reward(alias)
        assert type(reward) is type(same) and reward.name == name
        assert reward.has_surrogate and "jpeg_rate_kb" in reward.trained_on()
        reward.check_trainable()


def test_spearman_handles_ties():
    assert ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    assert abs(spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 40.0, 90.0])) - 1) < 1e-9
    assert abs(spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) + 1) < 1e-9
