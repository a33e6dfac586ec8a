"""POSE's augmentation models and losses, against direct computations."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from osma_cli.errors import UsageError
from osma_cli.training.losses import BatchHardTripletLoss
from osma_cli.training.pose_aug import (
    AugmentationModel,
    AugOptions,
    ProgressiveAugmenter,
    diversity_loss,
    expanded_labels,
    reconstruction_loss,
)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.parametrize("known_scale", [0.05, 3.0])
def test_diversity_loss_matches_a_direct_computation(known_scale: float) -> None:
    torch.manual_seed(0)
    aug, prev = torch.randn(5, 7), torch.randn(5, 7)
    known = aug + known_scale * torch.randn(5, 7)  # near the augmented features, or far from them
    alpha, beta, margin = 1e-4, 1e-2, 0.95
    loss, parts = diversity_loss(aug, prev, known, alpha=alpha, beta=beta, margin=margin)

    a, p, k = aug.tolist(), prev.tolist(), known.tolist()
    away = sum(cosine(a[i], p[i]) for i in range(5)) / 5
    near = max(1 - sum(cosine(k[i], a[i]) for i in range(5)) / 5, 1 - margin)
    assert float(loss) == pytest.approx(alpha * away + beta * near, rel=1e-5)
    assert parts["similarity_to_earlier"] == pytest.approx(away, rel=1e-5)
    assert parts["distance_to_known"] == pytest.approx(near, rel=1e-5)
    if known_scale < 1:
        assert near == pytest.approx(1 - margin)  # within the margin: clamped, no pull


def test_diversity_loss_pushes_away_from_earlier_and_towards_known() -> None:
    torch.manual_seed(1)
    aug = torch.randn(4, 6, requires_grad=True)
    prev, known = torch.randn(4, 6), torch.randn(4, 6)
    loss, _ = diversity_loss(aug, prev, known, alpha=1.0, beta=0.0)
    loss.backward()
    with torch.no_grad():
        moved = aug - 0.1 * aug.grad
        assert torch.cosine_similarity(moved, prev).mean() < torch.cosine_similarity(aug, prev).mean()


def test_augmentation_model_keeps_size_and_changes_the_image() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 56)
    for activation in ("relu", None):
        model = AugmentationModel(activation=activation)
        assert [m.kernel_size for m in (model.conv1, model.conv2)] == [(3, 3), (3, 3)]
        assert (model.conv1.in_channels, model.conv1.out_channels, model.conv2.out_channels) == (3, 32, 3)
        y = model(x)
        assert y.shape == x.shape
        assert (y - x).abs().mean() > 0.01
    linear = AugmentationModel(activation=None)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # the released code's model is linear (affine): A(a + b) = A(a) + A(b) - A(0)
        torch.testing.assert_close(
            linear(a + b), linear(a) + linear(b) - linear(torch.zeros_like(a)), atol=1e-5, rtol=1e-5
        )


def test_reconstruction_loss_is_the_mean_squared_error() -> None:
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert float(reconstruction_loss(a, b)) == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-6)
    assert torch.equal(expanded_labels(torch.tensor([0, 2, 1]), 3), torch.tensor([3, 5, 4]))


class TinyTask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_augmenter_trains_only_its_model_and_learns_to_reconstruct() -> None:
    torch.manual_seed(0)
    task = TinyTask()
    before = {k: v.clone() for k, v in task.state_dict().items()}
    augmenter = ProgressiveAugmenter(AugOptions(warmup_steps=0), torch.device("cpu"), rng=random.Random(0))
    x = torch.rand(4, 3, 16, 16)
    augmenter.start_epoch()
    first = augmenter.train_step(task, task, x)
    assert "warmup_reconstruction" not in first
    for _ in range(30):
        last = augmenter.train_step(task, task, x)
    assert last["reconstruction"] < first["reconstruction"] / 2
    assert "diversity" not in last  # no earlier model in the first epoch
    augmenter.end_epoch()
    augmenter.start_epoch()
    second = augmenter.train_step(task, task, x)
    assert {"diversity", "similarity_to_earlier", "distance_to_known"} <= set(second)
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())
    assert all(p.requires_grad for p in task.parameters())
    assert len(augmenter.frozen) == 1 and not any(p.requires_grad for p in augmenter.frozen[0].parameters())


def test_warm_up_makes_a_new_model_a_faithful_re_rendering_before_its_first_step() -> None:
    """Without it, a new model's first images are far from the originals (about 17 dB on zoo crops)."""
    x = torch.rand(8, 3, 16, 16)
    first = {}
    for steps in (0, 100):
        torch.manual_seed(0)
        task = TinyTask()
        augmenter = ProgressiveAugmenter(AugOptions(warmup_steps=steps), torch.device("cpu"), rng=random.Random(0))
        augmenter.start_epoch()
        first[steps] = augmenter.train_step(task, task, x)
        assert "warmup_reconstruction" not in augmenter.train_step(task, task, x)  # once per model
    assert first[100]["reconstruction"] < first[0]["reconstruction"] / 10
    assert first[100]["warmup_reconstruction"] == pytest.approx(first[100]["reconstruction"], rel=0.5)
    with pytest.raises(UsageError):
        AugOptions(warmup_steps=-1)


def test_aug_options_are_checked() -> None:
    with pytest.raises(UsageError):
        AugOptions(lr=0)
    with pytest.raises(UsageError):
        AugOptions(margin=2.0)
    assert AugOptions().to_dict()["alpha"] == 1e-4


def test_batch_hard_triplet_loss_against_a_loop() -> None:
    torch.manual_seed(2)
    x = torch.randn(6, 4)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    got = BatchHardTripletLoss(margin=0.3)(x, y)
    expected = []
    for i in range(6):
        d = [float((x[i] - x[j]).norm()) for j in range(6)]
        pos = max(d[j] for j in range(6) if y[j] == y[i])
        neg = min(d[j] for j in range(6) if y[j] != y[i])
        expected.append(max(0.0, pos - neg + 0.3))
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert BatchHardTripletLoss()(x, torch.zeros(6, dtype=torch.long)).numel() == 0
