"""POSE training: a few steps on tiny data reduce the loss; the run writes a classifier."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from osma_cli.errors import UsageError
from osma_cli.nets import get_model
from osma_cli.training.config import PoseOptions, TrainConfig
from osma_cli.training.losses import BatchHardTripletLoss, MeanReducer
from osma_cli.training.pose import classification_loss, task_step, train_pose
from osma_cli.training.pose_aug import AugOptions, ProgressiveAugmenter
from osma_cli.weights import load_weights, read_meta
from tests.conftest import pattern_image

CROP = 32


@pytest.fixture(scope="module")
def tree(two_class_tree: Path) -> Path:
    return two_class_tree


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    rng = np.random.default_rng(0)
    kinds = ["checker", "smooth"] * 4
    x = torch.stack([torch.from_numpy(pattern_image(k, rng, CROP)).permute(2, 0, 1) for k in kinds]).float() / 255
    return x, torch.tensor([0, 1] * 4)


def test_a_few_pose_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = get_model("pose_dct_cnn", n_classes=2, embedding_dim=16, width=8).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    augmenter = ProgressiveAugmenter(AugOptions(), torch.device("cpu"), rng=random.Random(0))
    triplet, reducer = BatchHardTripletLoss(), MeanReducer()
    x, y = tiny_batch()
    losses = []
    for _epoch in range(2):  # the second epoch has an earlier model: both triplet terms and the diversity loss
        augmenter.start_epoch()
        for _ in range(6):
            aug_parts = augmenter.train_step(model, model.features, x)
            value, parts = task_step(model, optimizer, augmenter, triplet, reducer, x, y, 2, "paper")
            losses.append(parts["cross_entropy"] + parts["triplet_current"])
        augmenter.end_epoch()
    assert "triplet_earlier" in parts and "diversity" in aug_parts
    assert losses[-1] < 0.7 * losses[0]


def test_released_code_loss_applies_softmax_twice() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([0])
    paper = classification_loss(logits, labels, "paper")
    code = classification_loss(logits, labels, "released-code")
    torch.testing.assert_close(paper, torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(code, -torch.log_softmax(probs / 0.1, 1)[:, 0])


def config(tree: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        data=tree,
        out=out,
        crop=CROP,
        batch_size=6,
        epochs=2,
        workers=0,
        val_fraction=0.34,
        device="cpu",
        seed=3,
        steps_per_epoch=2,
    )
    base.update(overrides)
    return TrainConfig(**base)


def test_train_pose_writes_a_classifier(tree: Path, tmp_path: Path) -> None:
    epochs = []
    result = train_pose(config(tree, tmp_path / "pose.safetensors"), PoseOptions(width=8), on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [0, 1]
    model, meta = load_weights(tmp_path / "pose.safetensors")
    assert meta.kind == "classifier" and meta.class_names == ["checkergan", "smoothgan"]
    assert meta.architecture == "pose_dct_cnn" and meta.crop_size == CROP and not meta.l2_normalize
    threshold = meta.metrics["threshold"]
    assert 0.0 < threshold["value"] <= 0.5 + 1e-6 and threshold["target"] == 0.95
    assert meta.recipe["pose"]["augmentation"]["alpha"] == 1e-4
    assert meta.recipe["pose"]["augmentation"]["activation"] == "relu"
    assert meta.recipe["optimizer"]["name"] == "Adam" and meta.recipe["schedule"]["lr"] == 1e-4
    terms = meta.metrics["loss_terms_per_epoch"]
    assert "diversity" not in terms[0] and "diversity" in terms[1] and "triplet_earlier" in terms[1]
    assert meta.recipe["pose"]["augmentation"]["warmup_steps"] == 100
    assert result.meta.sha256 == read_meta(tmp_path / "pose.safetensors").sha256
    assert result.n_val > 0 and result.best_accuracy is not None


def test_loss_terms_are_averaged_over_the_steps_that_have_them(tree: Path, tmp_path: Path) -> None:
    """The warm-up's term comes once per epoch: averaging it over every step would shrink it."""
    train_pose(
        config(tree, tmp_path / "pose.safetensors", batch_size=2, steps_per_epoch=4, epochs=1), PoseOptions(width=8)
    )
    (terms,) = read_meta(tmp_path / "pose.safetensors").metrics["loss_terms_per_epoch"]
    assert 0.5 < terms["warmup_reconstruction"] / terms["reconstruction"] < 2.0


def test_pose_refuses_metric_learning_only_options(tree: Path, tmp_path: Path) -> None:
    for bad in ({"refs_out": tmp_path / "r.h5"}, {"init": tmp_path / "x.safetensors"}, {"arch": "mislnet"}):
        with pytest.raises(UsageError, match="--method pose does not take"):
            train_pose(config(tree, tmp_path / "p.safetensors", **bad))
    with pytest.raises(UsageError, match="unknown POSE variant"):
        PoseOptions(variant="mine")


def test_released_code_variant_trains_linear_augmentation_models(tree: Path, tmp_path: Path) -> None:
    train_pose(
        config(tree, tmp_path / "code.safetensors", epochs=1, steps_per_epoch=1),
        PoseOptions(width=8, variant="released-code"),
    )
    recipe = read_meta(tmp_path / "code.safetensors").recipe
    assert recipe["pose"]["variant"] == "released-code"
    assert recipe["pose"]["augmentation"]["activation"] == "none"
    assert "softmax(logits) / 0.1" in recipe["loss"]["classification"]
