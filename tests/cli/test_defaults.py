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
from osma_cli.embed import EmbedOptions
from osma_cli.evaluation.protocol import run_benchmark
from osma_cli.training.fsd_detector import DetectorConfig
from osma_cli.training.config import PoseOptions, PretrainConfig, TrainConfig
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
    **same_name(TrainConfig, {"data", "data_root", "val_fraction", "refs_out", "arch", "init", "embedding_dim",
                              "epochs", "lr", "lr_decay", "decay_every", "proxy_lr_factor", "weight_decay",
                              "temperature", "batch_size", "crop", "seed", "steps_per_epoch", "checkpoint_dir",
                              "resume", "force", "cache_decoded", "device", "workers"}),
    "pose_variant": (PoseOptions, "variant"), "triplet_margin": (PoseOptions, "triplet_margin"),
    "aug_lr": (AugOptions, "lr"), "aug_warmup": (AugOptions, "warmup_steps"),
    "diversity_alpha": (AugOptions, "alpha"), "diversity_beta": (AugOptions, "beta"),
    "diversity_margin": (AugOptions, "margin"),
    **same_name(DetectorConfig, {"held_out", "acceptance", "pca_dim", "components", "covariance"}),
}
TRAIN_CLI_ONLY = {
    "annotations": "None: no files (TrainConfig's empty tuple)",
    "val_annotations": "None: no files (TrainConfig's empty tuple)",
    "out": "None: the method's own file (DEFAULT_OUT, else TrainConfig's)",
    "json_out": "rendering", "method": "which trainer", "open_space_aug": "AugOptions or None",
    "photos": "fsd", "descriptor": "fsd", "jpeg_regimes": "fsd", "augment": "fsd", "rule": "fsd",
    "model": "fsd-detector: the shipped descriptor", "copies": "fsd-detector: DEFAULT_COPIES",
}
PRETRAIN = same_name(PretrainConfig, {"simulate_cameras", "samples_per_epoch", "val_fraction", "balanced", "out",
                                      "arch", "embedding_dim", "epochs", "lr", "lr_decay", "decay_every",
                                      "weight_decay", "batch_size", "crop", "seed", "steps_per_epoch",
                                      "checkpoint_dir", "resume", "force", "cache_decoded", "device", "workers"})
PRETRAIN_CLI_ONLY = {"root": "the data (camera_root or photos)", "json_out": "rendering"}
EMBEDDING = {"batch_size": (EmbedOptions, "batch_size"), "crops": (EmbedOptions, "n_crops"),
             "small": (EmbedOptions, "small"), "workers": (EmbedOptions, "workers"),
             "max_pixels": (EmbedOptions, "max_pixels")}


@pytest.mark.parametrize("command, mapping, cli_only", [
    ("train", TRAIN, TRAIN_CLI_ONLY), ("pretrain", PRETRAIN, PRETRAIN_CLI_ONLY)])
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
