"""``osma train --open-space-aug``: POSE's augmented images as extra negative ProxyNCA++ classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.errors import EXIT_OK, EXIT_USAGE
from osma_cli.training.config import TrainConfig
from osma_cli.training.losses import ProxyNCAPlusPlus
from osma_cli.training.metric import train_embedding
from osma_cli.training.pose_aug import AugOptions
from osma_cli.weights import read_meta


@pytest.fixture(scope="module")
def tree(two_class_tree: Path) -> Path:
    return two_class_tree


def test_augmented_images_are_extra_classes_with_their_own_proxies(tree: Path, tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[int, torch.Tensor]] = []
    original = ProxyNCAPlusPlus.forward

    def recording(self, embeddings, labels):
        seen.append((self.n_classes, labels.detach().clone()))
        return original(self, embeddings, labels)

    monkeypatch.setattr(ProxyNCAPlusPlus, "forward", recording)
    config = TrainConfig(
        data=tree,
        out=tmp_path / "w.safetensors",
        arch="dct_cnn",
        arch_kwargs={"width": 8},
        crop=32,
        batch_size=4,
        epochs=2,
        steps_per_epoch=1,
        workers=0,
        val_fraction=0.34,
        device="cpu",
        seed=1,
        open_space_aug=AugOptions(),
        refs_out=tmp_path / "refs.h5",
    )
    train_embedding(config)
    assert all(n == 4 for n, _ in seen)  # 2 known classes + 2 augmented ones
    first, second = seen[0][1], seen[1][1]
    assert len(first) == 8 and torch.equal(first[4:], first[:4] + 2)  # [y; y + K]
    assert len(second) == 12 and torch.equal(second[8:], second[:4] + 2)  # and an earlier model's images
    meta = read_meta(tmp_path / "w.safetensors")
    assert meta.recipe["open_space_augmentation"]["alpha"] == 1e-4
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as handle:
        assert not any("proxies" in k for k in handle.keys())
    from osma_cli.references import ReferenceStore

    assert ReferenceStore.load(tmp_path / "refs.h5").names == ["checkergan", "smoothgan"]  # never references


def test_open_space_aug_cli(tree: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        str(tree),
        "--arch",
        "dct_cnn",
        "--crop",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--json",
    ]
    ok = runner.invoke(app, ["train", *args, "--open-space-aug", "--out", str(tmp_path / "a.safetensors")])
    assert ok.exit_code == EXIT_OK, ok.output
    bad = runner.invoke(
        app, ["train", *args, "--open-space-aug", "--method", "pose", "--out", str(tmp_path / "b.safetensors")]
    )
    assert bad.exit_code == EXIT_USAGE and "--open-space-aug is for metric learning" in bad.stderr


def test_open_space_aug_cannot_resume(tree: Path, tmp_path: Path) -> None:
    from osma_cli.errors import UsageError

    base = dict(
        data=tree,
        arch="dct_cnn",
        arch_kwargs={"width": 8},
        crop=32,
        batch_size=4,
        epochs=1,
        steps_per_epoch=1,
        workers=0,
        val_fraction=0.0,
        device="cpu",
        seed=1,
    )
    train_embedding(TrainConfig(out=tmp_path / "w.safetensors", **base))
    with pytest.raises(UsageError, match="cannot --resume"):
        train_embedding(
            TrainConfig(
                out=tmp_path / "w.safetensors",
                resume=tmp_path / "w.checkpoints",
                open_space_aug=AugOptions(),
                **{**base, "epochs": 2},
            )
        )
