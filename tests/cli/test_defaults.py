"""Every option's default is the core's: the CLI restates none (``osma_cli/defaults.py``).

Each option of ``train``, ``pretrain``, ``calibrate`` and ``benchmark`` is compared with the
field of the configuration it fills, so that a default changed in one place and not the
other fails here; an option that fills no field must be named as such below.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
import typer.main

from osma_cli.cli.app import app
from osma_cli.cli.train import number
from osma_cli.embed import EmbedOptions
from osma_cli.evaluation.protocol import run_benchmark
from osma_cli.training import schedule
from osma_cli.training.config import PoseOptions, PretrainConfig, TrainConfig
from osma_cli.training.fsd_detector import DetectorConfig
from osma_cli.training.pose_aug import AugOptions

COMMANDS = typer.main.get_command(app).commands


def field_defaults(config: type) -> dict[str, Any]:
    """A dataclass's fields and their defaults (factories called)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def cli_defaults(command: str) -> dict[str, Any]:
    return {p.name: p.default for p in COMMANDS[command].params}


def same_name(config: type, names: set[str]) -> dict[str, tuple[type, str]]:
    return {name: (config, name) for name in names}


TRAIN = {
    **same_name(
        TrainConfig,
        {
            "data",
            "data_root",
            "val_fraction",
            "refs_out",
            "arch",
            "init",
            "embedding_dim",
            "epochs",
            "lr",
            "lr_decay",
            "decay_every",
            "proxy_lr_factor",
            "weight_decay",
            "temperature",
            "batch_size",
            "crop",
            "seed",
            "steps_per_epoch",
            "checkpoint_dir",
            "resume",
            "force",
            "cache_decoded",
            "device",
            "workers",
        },
    ),
    "pose_variant": (PoseOptions, "variant"),
    "triplet_margin": (PoseOptions, "triplet_margin"),
    "aug_lr": (AugOptions, "lr"),
    "aug_warmup": (AugOptions, "warmup_steps"),
    "diversity_alpha": (AugOptions, "alpha"),
    "diversity_beta": (AugOptions, "beta"),
    "diversity_margin": (AugOptions, "margin"),
    **same_name(DetectorConfig, {"held_out", "acceptance", "pca_dim", "components", "covariance", "restarts"}),
}
TRAIN_CLI_ONLY = {
    "annotations": "None: no files (TrainConfig's empty tuple)",
    "val_annotations": "None: no files (TrainConfig's empty tuple)",
    "out": "None: the method's own file (DEFAULT_OUT, else TrainConfig's)",
    "json_out": "rendering",
    "method": "which trainer",
    "open_space_aug": "AugOptions or None",
    "photos": "fsd",
    "descriptor": "fsd",
    "jpeg_regimes": "fsd",
    "augment": "fsd",
    "rule": "fsd",
    "model": "fsd-detector: the shipped descriptor",
    "copies": "fsd-detector: DEFAULT_COPIES",
}
PRETRAIN = same_name(
    PretrainConfig,
    {
        "simulate_cameras",
        "samples_per_epoch",
        "val_fraction",
        "balanced",
        "out",
        "arch",
        "embedding_dim",
        "epochs",
        "lr",
        "lr_decay",
        "decay_every",
        "weight_decay",
        "batch_size",
        "crop",
        "seed",
        "steps_per_epoch",
        "checkpoint_dir",
        "resume",
        "force",
        "cache_decoded",
        "device",
        "workers",
    },
)
PRETRAIN_CLI_ONLY = {"root": "the data (camera_root or photos)", "json_out": "rendering"}
EMBEDDING = {
    "batch_size": (EmbedOptions, "batch_size"),
    "crops": (EmbedOptions, "n_crops"),
    "small": (EmbedOptions, "small"),
    "workers": (EmbedOptions, "workers"),
    "max_pixels": (EmbedOptions, "max_pixels"),
}


@pytest.mark.parametrize(
    "command, mapping, cli_only", [("train", TRAIN, TRAIN_CLI_ONLY), ("pretrain", PRETRAIN, PRETRAIN_CLI_ONLY)]
)
def test_every_training_option_defaults_to_its_field(command: str, mapping: dict, cli_only: dict) -> None:
    shown = cli_defaults(command)
    assert set(shown) == set(mapping) | set(cli_only), "an option is neither compared nor named CLI-only"
    for option, (config, field) in mapping.items():
        assert shown[option] == field_defaults(config)[field], f"{command} --{option} vs {config.__name__}.{field}"


@pytest.mark.parametrize("command", ["calibrate", "benchmark"])
def test_embedding_options_default_to_embed_options(command: str) -> None:
    shown = cli_defaults(command)
    for option, (config, field) in EMBEDDING.items():
        assert shown[option] == field_defaults(config)[field], f"{command} --{option} vs {config.__name__}.{field}"
    assert shown["device"] == field_defaults(TrainConfig)["device"]


def test_benchmark_acceptance_is_the_protocols() -> None:
    assert cli_defaults("benchmark")["acceptance"] == inspect.signature(run_benchmark).parameters["acceptance"].default


def option_help(command: str, name: str) -> str:
    return next(p.help for p in COMMANDS[command].params if p.name == name)


def test_help_texts_state_the_core_schedules() -> None:
    """The learning rates, decays and lengths ``--help`` states are the core's schedules, not copies."""
    init, scratch, pose, pre = (
        schedule.METRIC_FROM_INIT,
        schedule.METRIC_FROM_SCRATCH,
        schedule.POSE,
        schedule.PRETRAIN,
    )
    aug_lr = AugOptions().lr
    for value in (init.lr, scratch.lr, pose.lr, pre.lr, aug_lr, init.factor, pre.factor):
        assert float(number(value)) == value
    train_lr = option_help("train", "lr")
    for value in (init.lr, scratch.lr, pose.lr):
        assert number(value) in train_lr
    assert f"{number(init.lr)} with --init" in train_lr and f"{number(scratch.lr)} from scratch" in train_lr
    assert f"Default: {number(pre.lr)}." in option_help("pretrain", "lr")
    train_doc = " ".join(COMMANDS["train"].help.split())
    assert (init.factor, init.every) == (scratch.factor, scratch.every)
    assert (
        f"{field_defaults(TrainConfig)['epochs']} epochs, AdamW, lr {number(init.lr)} "
        f"({number(scratch.lr)} from scratch) x{number(init.factor)} every {init.every} epochs"
    ) in train_doc
    assert f"Adam, lr {number(pose.lr)} ({number(aug_lr)} for augmentation models)" in train_doc
    pretrain_doc = " ".join(COMMANDS["pretrain"].help.split())
    assert f"AdamW, lr {number(pre.lr)}, x{number(pre.factor)} every {pre.every} epochs" in pretrain_doc
    assert f"the paper's {field_defaults(TrainConfig)['crop']}" in option_help("train", "crop")
