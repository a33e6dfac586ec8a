"""``train_embedding``, ``pretrain`` and their commands end to end on tiny image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from safetensors import safe_open
from typer.testing import CliRunner

from osma_cli.cli import train as train_cli
from osma_cli.cli.app import command
from osma_cli.errors import EXIT_OK, EXIT_USAGE, DataError, UsageError
from osma_cli.references import ReferenceStore
from osma_cli.training.checkpoint import CheckpointError
from osma_cli.training.config import TrainConfig
from osma_cli.training.metric import train_embedding
from osma_cli.weights import load_weights, read_meta
from tests.conftest import write_images

CROP = 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Two generators told apart by texture, 8 images each (48x48)."""
    root = tmp_path_factory.mktemp("data") / "train"
    write_images(root / "checkergan", "checker", 8, seed=2)
    write_images(root / "smoothgan", "smooth", 8, seed=1)
    return root


def config(tree: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        data=tree, out=out, crop=CROP, batch_size=8, epochs=2, workers=0, val_fraction=0.25, device="cpu", seed=3
    )
    base.update(overrides)
    return TrainConfig(**base)


def test_train_embedding_writes_weights_recipe_and_references(tree: Path, tmp_path: Path) -> None:
    epochs = []
    result = train_embedding(
        config(tree, tmp_path / "w.safetensors", refs_out=tmp_path / "refs.h5", epochs=3), on_epoch=epochs.append
    )
    assert [e.epoch for e in epochs] == [0, 1, 2]
    assert result.best_accuracy == 1.0
    assert epochs[-1].loss < epochs[0].loss
    _, meta = load_weights(tmp_path / "w.safetensors")
    assert meta.l2_normalize and meta.crop_size == CROP and meta.architecture == "mislnet"
    assert meta.metrics["val_accuracy"] == 1.0 and meta.metrics["best_epoch"] == result.best_epoch + 1
    recipe = meta.recipe
    assert recipe["loss"]["name"] == "ProxyNCA++" and recipe["loss"]["temperature"] == pytest.approx(1 / 9)
    assert recipe["schedule"] == {"type": "step", "lr": 7e-4, "factor": 0.6, "every": 2}
    assert recipe["optimizer"]["proxy_lr_factor"] == 100.0
    assert recipe["data"]["classes"] == ["checkergan", "smoothgan"]
    assert (recipe["seed"], recipe["batch_size"], recipe["crop"], recipe["init"]) == (3, 8, CROP, None)
    assert recipe["osma_version"]
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as handle:
        assert not any("proxies" in k for k in handle.keys())
    store = ReferenceStore.load(tmp_path / "refs.h5")
    assert store.names == ["checkergan", "smoothgan"] and store.weights_sha256 == meta.sha256
    assert [g.count for g in store.generators.values()] == [6, 6] and store.threshold is not None


def test_resumed_run_writes_the_same_weights(tree: Path, tmp_path: Path) -> None:
    straight = train_embedding(config(tree, tmp_path / "a.safetensors"))
    train_embedding(config(tree, tmp_path / "b.safetensors", epochs=1))
    resumed = train_embedding(config(tree, tmp_path / "b.safetensors", resume=tmp_path / "b.checkpoints"))
    assert resumed.resumed_from == 1
    assert straight.meta.sha256 == resumed.meta.sha256
    again = train_embedding(config(tree, tmp_path / "c.safetensors"))
    assert again.meta.sha256 == straight.meta.sha256  # same seed, same bits
    with pytest.raises(CheckpointError, match="differ"):
        train_embedding(config(tree, tmp_path / "b.safetensors", resume=tmp_path / "b.checkpoints", seed=4))


def test_augment_perturbs_training_images_and_is_recorded(tree: Path, tmp_path: Path) -> None:
    """--augment changes what the network is trained on (other weights, same seed), is in the
    recipe, and a checkpoint of a run without it cannot be resumed with it."""
    from osma_cli.data.perturb import parse_perturbations

    plain = train_embedding(config(tree, tmp_path / "plain.safetensors"))
    assert "perturbations" not in plain.meta.recipe["augmentation"]
    assert plain.meta.recipe["augmentation"]["jpeg_qualities"] == [75, 80, 85, 90, 95, None]
    augment = parse_perturbations(["resize:0.5", "blur:1"])
    augmented = train_embedding(config(tree, tmp_path / "aug.safetensors", augment=augment))
    assert augmented.meta.recipe["augmentation"]["perturbations"] == ["resize:0.5", "blur:1"]
    assert augmented.meta.sha256 != plain.meta.sha256
    again = train_embedding(config(tree, tmp_path / "aug2.safetensors", augment=augment))
    assert again.meta.sha256 == augmented.meta.sha256  # seeded draws
    with pytest.raises(CheckpointError, match="differ"):
        train_embedding(
            config(tree, tmp_path / "plain.safetensors", resume=tmp_path / "plain.checkpoints", augment=augment)
        )


def test_pretrained_backbone_initialises_metric_learning(tree: Path, tmp_path: Path) -> None:
    from osma_cli.training.config import PretrainConfig
    from osma_cli.training.pretrain import pretrain

    cameras = tmp_path / "cameras"
    write_images(cameras / "cam_a", "stripes", 6, seed=5)
    write_images(cameras / "cam_b", "smooth", 6, seed=6)
    write_images(cameras / "cam_c", "checker", 6, seed=7)
    pre = pretrain(
        PretrainConfig(
            camera_root=cameras,
            out=tmp_path / "pre.safetensors",
            crop=CROP,
            batch_size=8,
            epochs=1,
            workers=0,
            device="cpu",
            val_fraction=0.34,
        )
    )
    meta = read_meta(tmp_path / "pre.safetensors")
    assert meta.kind == "embedding" and meta.recipe["stage"] == "pretrain"
    assert meta.recipe["schedule"] == {"type": "step", "lr": 1e-3, "factor": 0.65, "every": 3}
    assert pre.class_names == ("cam_a", "cam_b", "cam_c") and pre.best_accuracy is not None
    with safe_open(str(tmp_path / "pre.safetensors"), framework="pt") as handle:
        assert not any(k.startswith("head") for k in handle.keys())  # the classifier is dropped

    result = train_embedding(config(tree, tmp_path / "w.safetensors", init=tmp_path / "pre.safetensors", epochs=1))
    recipe = result.meta.recipe
    assert recipe["init"]["sha256"] == meta.sha256 and recipe["init"]["stage"] == "pretrain"
    assert recipe["schedule"]["lr"] == 1e-4
    with pytest.raises(UsageError, match="does not match"):
        train_embedding(config(tree, tmp_path / "x.safetensors", init=tmp_path / "pre.safetensors", arch="resnet50"))


def test_simulated_camera_pretraining(tmp_path: Path) -> None:
    from osma_cli.training.config import PretrainConfig
    from osma_cli.training.pretrain import pretrain

    photos = tmp_path / "photos"
    write_images(photos, "smooth", 4, seed=8, size=64)
    result = pretrain(
        PretrainConfig(
            photos=photos,
            simulate_cameras=3,
            samples_per_epoch=12,
            val_samples_per_pipeline=2,
            out=tmp_path / "sim.safetensors",
            crop=CROP,
            batch_size=6,
            epochs=1,
            workers=0,
            device="cpu",
        )
    )
    assert len(result.class_names) == 3 and result.n_val == 6
    assert read_meta(tmp_path / "sim.safetensors").recipe["data"]["source"] == "simulated-camera-pipelines"


def test_outputs_are_not_overwritten_by_accident(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(UsageError, match="exists"):
        train_embedding(config(tree, out))
    with pytest.raises(UsageError, match="no training checkpoint"):
        train_embedding(config(tree, tmp_path / "n.safetensors", resume=tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="not both"):
        train_embedding(config(tree, tmp_path / "n.safetensors", annotations=(tmp_path / "a.txt",)))


# --------------------------------------------------------------------------- commands


def cli_app() -> typer.Typer:
    app = typer.Typer()
    command(app, "train", train_cli.train)
    command(app, "pretrain", train_cli.pretrain)
    return app


def test_train_and_pretrain_commands(tree: Path, tmp_path: Path) -> None:
    runner, app = CliRunner(), cli_app()
    cameras = tmp_path / "cameras"
    write_images(cameras / "cam_a", "stripes", 4, seed=5)
    write_images(cameras / "cam_b", "checker", 4, seed=6)
    common = ["--crop", CROP, "--batch-size", 4, "--epochs", 1, "--workers", 0, "--device", "cpu"]
    result = runner.invoke(
        app,
        [str(a) for a in ["pretrain", cameras, "--out", tmp_path / "pre.safetensors", "--val-fraction", 0.25, *common]],
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "epoch 1/1" in result.output

    result = runner.invoke(
        app,
        [
            str(a)
            for a in [
                "train",
                tree,
                "--out",
                tmp_path / "w.safetensors",
                "--init",
                tmp_path / "pre.safetensors",
                "--json",
                "--refs-out",
                tmp_path / "refs.h5",
                *common,
            ]
        ],
    )
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["classes"] == ["checkergan", "smoothgan"] and summary["history"][0]["epoch"] == 1
    assert Path(summary["refs"]).exists() and summary["sha256"] == read_meta(tmp_path / "w.safetensors").sha256

    result = runner.invoke(app, [str(a) for a in ["train", tree, "--out", tmp_path / "w.safetensors", *common]])
    assert result.exit_code == EXIT_USAGE and "exists" in result.output

    result = runner.invoke(
        app,
        [
            str(a)
            for a in [
                "train",
                tree,
                "--out",
                tmp_path / "aug.safetensors",
                "--augment",
                "resize:0.75",
                "--augment",
                "jpeg:50",
                *common,
            ]
        ],
    )
    assert result.exit_code == EXIT_OK, result.output
    assert read_meta(tmp_path / "aug.safetensors").recipe["augmentation"]["perturbations"] == ["resize:0.75", "jpeg:50"]
    result = runner.invoke(
        app, [str(a) for a in ["train", tree, "--out", tmp_path / "bad.safetensors", "--augment", "resize:2", *common]]
    )
    assert result.exit_code == EXIT_USAGE and "resize:2" in " ".join(result.output.split())
    assert not (tmp_path / "bad.safetensors").exists()
    for name in ("train", "pretrain"):
        assert runner.invoke(app, [name, "--help"]).exit_code == 0


def test_annotation_files_as_training_data(tree: Path, tmp_path: Path) -> None:
    """POSE-style lists; labels with a gap (0 and 2) and a validation file of an untrained class."""
    lines = [
        f"{p.relative_to(tree)}\t{label}"
        for label, name in ((0, "checkergan"), (2, "smoothgan"))
        for p in sorted((tree / name).iterdir())
    ]
    rng = np.random.default_rng(0)
    val = set(rng.choice(len(lines), 4, replace=False).tolist())
    (tmp_path / "train.txt").write_text("\n".join(line for i, line in enumerate(lines) if i not in val) + "\n")
    (tmp_path / "val.txt").write_text(
        "\n".join(line for i, line in enumerate(lines) if i in val) + "\ncheckergan/checker_00.png\t1\n"
    )
    result = train_embedding(
        TrainConfig(
            annotations=(tmp_path / "train.txt",),
            data_root=tree,
            val_annotations=(tmp_path / "val.txt",),
            out=tmp_path / "w.safetensors",
            crop=CROP,
            batch_size=8,
            epochs=1,
            workers=0,
            device="cpu",
        )
    )
    assert result.n_train == 12 and result.n_val == 4
    assert result.class_names == ("class0", "class2")
    assert any("class1" in note for note in result.notes) and any("validation file" in n for n in result.notes)
    assert read_meta(tmp_path / "w.safetensors").recipe["data"]["source"] == "annotations"


def test_training_folders_with_validation_annotations(tree: Path, tmp_path: Path) -> None:
    """Label k of --val-annotations is the k-th training folder (regression: the validation
    files were named class0.. and all dropped as classes without training files)."""
    names = sorted(p.name for p in tree.iterdir())
    lines = [f"{p.relative_to(tree)}\t{k}" for k, name in enumerate(names) for p in sorted((tree / name).iterdir())[:2]]
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    result = train_embedding(
        TrainConfig(
            data=tree,
            data_root=tree,
            val_annotations=(tmp_path / "val.txt",),
            out=tmp_path / "w.safetensors",
            crop=CROP,
            batch_size=8,
            epochs=1,
            workers=0,
            device="cpu",
        )
    )
    assert result.n_val == 2 * len(names) and result.class_names == tuple(names)
    assert not any("left out" in note for note in result.notes)
    (tmp_path / "bad.txt").write_text(f"{lines[0].split(chr(9))[0]}\t{len(names)}\n")
    with pytest.raises(DataError, match="training classes"):
        train_embedding(
            TrainConfig(
                data=tree,
                data_root=tree,
                val_annotations=(tmp_path / "bad.txt",),
                out=tmp_path / "w2.safetensors",
                crop=CROP,
                batch_size=8,
                epochs=1,
                workers=0,
                device="cpu",
            )
        )
