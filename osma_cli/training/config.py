"""What a training run is told, and what it gives back: the configuration and result types, in one place.

``RunConfig`` holds the settings metric learning (``TrainConfig``, ``osma train``) and
camera-model pre-training (``PretrainConfig``, ``osma pretrain``) share; each adds its own
data, output and length. ``PoseOptions`` is POSE's own settings beside a ``TrainConfig``
(``osma train --method pose``). ``RunResult`` is what every run returns. Every default is a
name in ``osma_cli/defaults.py`` (the CLI shows the same names); ``None`` means the paper's
value for the case (``schedule.metric_schedule``, ``pretrain_schedule``, ``pose_schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from osma_cli.data.augment import TrainTransform
from osma_cli.data.perturb import Perturbation
from osma_cli.defaults import (
    BATCH_SIZE,
    CROP,
    DEFAULT_ACCEPTANCE,
    DEFAULT_TEMPERATURE,
    DEFAULT_TRIPLET_MARGIN,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WEIGHT_DECAY,
    DEVICE,
    EMBEDDING_OUT,
    METRIC_EPOCHS,
    POSE_DROPOUT,
    POSE_VARIANT,
    POSE_WIDTH,
    PRETRAIN_EPOCHS,
    PRETRAINED_OUT,
    PROXY_LR_FACTOR,
    SEED,
    VAL_REFS_PER_CLASS,
    VAL_SAMPLES_PER_PIPELINE,
)
from osma_cli.errors import UsageError
from osma_cli.training.checkpoint import has_checkpoint
from osma_cli.training.loop import EpochStats, LoopSettings
from osma_cli.training.pose_aug import AugOptions
from osma_cli.training.schedule import StepDecay, metric_schedule, pretrain_schedule
from osma_cli.weights import WeightsMeta

DEFAULT_VAL_REFS_PER_CLASS = VAL_REFS_PER_CLASS
DEFAULT_VAL_SAMPLES_PER_PIPELINE = VAL_SAMPLES_PER_PIPELINE
POSE_VARIANTS = ("paper", "released-code")


@dataclass(frozen=True)
class RunConfig:
    """The settings every gradient training shares: network, schedule overrides, batches, devices, checkpoints.

    ``out`` (the weights file) is every run's; each kind of run gives it its own default.
    """

    out: Path
    val_fraction: float = DEFAULT_VAL_FRACTION
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    embedding_dim: int | None = None
    lr: float | None = None
    lr_decay: float | None = None
    decay_every: int | None = None
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    epochs: int = METRIC_EPOCHS
    """Each run's own default (``TrainConfig``, ``PretrainConfig``)."""
    batch_size: int = BATCH_SIZE
    crop: int = CROP
    seed: int = SEED
    workers: int | None = None
    device: str = DEVICE
    mixed_precision: bool = True
    steps_per_epoch: int | None = None
    checkpoint_dir: Path | None = None
    resume: Path | None = None
    force: bool = False
    cache_decoded: bool = False

    def checkpoint_folder(self) -> Path:
        """``--resume`` if given, else ``--checkpoint-dir``, else ``<out>.checkpoints`` beside the weights."""
        if self.resume is not None:
            return Path(self.resume)
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        return default_checkpoint_folder(self.out)

    def loop_settings(self, workers: int, *, checkpoints: bool = True) -> LoopSettings:
        """How ``fit`` runs this configuration's epochs; ``checkpoints=False`` for a run that
        cannot be resumed (POSE: its augmentation models are not checkpointed)."""
        return LoopSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            workers=workers,
            steps_per_epoch=self.steps_per_epoch,
            checkpoint_dir=self.checkpoint_folder() if checkpoints else None,
            resume=checkpoints and self.resume is not None,
            replace_checkpoint=checkpoints and self.force,
        )


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything ``osma train`` can be told; ``None`` means the paper's default for the case."""

    data: Path | None = None
    annotations: tuple[Path, ...] = ()
    data_root: Path | None = None
    val_annotations: tuple[Path, ...] = ()
    out: Path = EMBEDDING_OUT
    init: Path | None = None
    epochs: int = METRIC_EPOCHS
    proxy_lr_factor: float = PROXY_LR_FACTOR
    temperature: float = DEFAULT_TEMPERATURE
    distance: str = "squared_l2"
    refs_out: Path | None = None
    val_refs_per_class: int | None = DEFAULT_VAL_REFS_PER_CLASS
    open_space_aug: AugOptions | None = None
    """POSE's augmentation models as extra negative classes (``osma train --open-space-aug``)."""
    augment: tuple[Perturbation, ...] = ()
    """Perturbations drawn on training images (``osma train --augment``; docs/robustness.md)."""

    def train_transform(self) -> TrainTransform:
        """The training images' augmentation: Fang et al.'s, plus ``augment`` when given."""
        return TrainTransform(crop=self.crop, perturbations=self.augment)

    def schedule(self) -> StepDecay:
        return metric_schedule(
            from_init=self.init is not None, lr=self.lr, factor=self.lr_decay, every=self.decay_every
        )


@dataclass(frozen=True)
class PretrainConfig(RunConfig):
    """Everything ``osma pretrain`` can be told; ``None`` means the paper's default."""

    camera_root: Path | None = None
    photos: Path | None = None
    simulate_cameras: int | None = None
    out: Path = PRETRAINED_OUT
    epochs: int = PRETRAIN_EPOCHS
    samples_per_epoch: int | None = None
    val_samples_per_pipeline: int = DEFAULT_VAL_SAMPLES_PER_PIPELINE
    balanced: bool = False

    def schedule(self) -> StepDecay:
        return pretrain_schedule(lr=self.lr, factor=self.lr_decay, every=self.decay_every)

    @property
    def simulated(self) -> bool:
        return self.simulate_cameras is not None


@dataclass(frozen=True)
class PoseOptions:
    """POSE's own settings; the data, schedule and output come from the ``TrainConfig``.

    ``variant="paper"``: cross-entropy on the logits and a ReLU inside each augmentation
    model. ``variant="released-code"``: the released code's loss (softmax applied, then
    cross-entropy of those probabilities divided by 0.1, i.e. a second softmax) and its
    linear augmentation models, for comparing with the published figures.
    """

    variant: str = POSE_VARIANT
    triplet_margin: float = DEFAULT_TRIPLET_MARGIN
    aug: AugOptions = field(default_factory=AugOptions)
    acceptance: float = DEFAULT_ACCEPTANCE
    dropout: float = POSE_DROPOUT
    width: int = POSE_WIDTH

    def __post_init__(self) -> None:
        if self.variant not in POSE_VARIANTS:
            raise UsageError(f"unknown POSE variant {self.variant!r}", hint=f"use one of {', '.join(POSE_VARIANTS)}")

    def resolved_aug(self) -> AugOptions:
        return replace(self.aug, activation=None) if self.variant == "released-code" else self.aug

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "triplet_margin": self.triplet_margin,
            "augmentation": self.resolved_aug().to_dict(),
            "acceptance": self.acceptance,
            "dropout": self.dropout,
            "width": self.width,
        }


@dataclass
class RunResult:
    """What a training run produced (complete on rank 0; other processes get the history only)."""

    weights: Path
    meta: WeightsMeta | None
    best_accuracy: float | None
    best_epoch: int | None
    history: list[EpochStats]
    class_names: tuple[str, ...]
    n_train: int
    n_val: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    checkpoint_dir: Path | None = None
    resumed_from: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainResult(RunResult):
    """``osma train``'s result: also the reference store written with ``refs_out``."""

    refs: Path | None = None


@dataclass
class PretrainResult(RunResult):
    """``osma pretrain``'s result."""


# --------------------------------------------------------------------------- outputs


def default_checkpoint_folder(out: Path | str) -> Path:
    """``<out>.checkpoints`` beside the weights file."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".checkpoints")


def check_output_paths(
    out: Path | str, *, refs_out: Path | str | None = None, force: bool = False, resume: Path | str | None = None
) -> None:
    """Refuse, before any training, outputs that would be overwritten or cannot be written."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"folder {out.parent} for --out does not exist", hint="create it first")
    replaceable = force or resume is not None
    if out.exists() and not replaceable:
        raise UsageError(f"{out} exists", hint="pass --force to replace it, or --out another file")
    if refs_out is not None:
        refs = Path(refs_out)
        if not refs.parent.is_dir():
            raise UsageError(f"folder {refs.parent} for --refs-out does not exist", hint="create it first")
        if refs.exists() and not replaceable:
            raise UsageError(f"{refs} exists", hint="pass --force to replace it, or --refs-out another file")
    if resume is not None and not has_checkpoint(resume):
        raise UsageError(
            f"no training checkpoint in {resume}",
            hint="give the checkpoint folder of an earlier run (default: <out>.checkpoints)",
        )
