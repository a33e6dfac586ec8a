"""``osma train`` and ``osma pretrain``: learning the embedding, and pre-training its backbone.

Thin: options become a ``TrainConfig`` / ``PretrainConfig``, the core trains
(``osma_cli.training``), and this module draws a progress bar per epoch and one line of
figures after each (stderr), then a summary table (stdout) or ``--json``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from osma_cli.cli import output
from osma_cli.cli.options import BatchOpt, DeviceOpt, JsonOpt, RuleOpt, WorkersOpt
from osma_cli.cli.paths import check_output_file
from osma_cli.defaults import (
    ALPHA,
    AUG_LR,
    BATCH_SIZE,
    BETA,
    CROP,
    DEFAULT_COPIES,
    DEFAULT_MIXTURE,
    DEFAULT_TEMPERATURE,
    DEFAULT_TRIPLET_MARGIN,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WEIGHT_DECAY,
    DETECTOR_ACCEPTANCE,
    DETECTOR_HELD_OUT,
    DETECTOR_OUT,
    DEVICE,
    EMBEDDING_OUT,
    MARGIN,
    METRIC_DECAY_EVERY,
    METRIC_EPOCHS,
    METRIC_LR_DECAY,
    METRIC_LR_FROM_INIT,
    METRIC_LR_FROM_SCRATCH,
    POSE_LR,
    POSE_VARIANT,
    PRETRAIN_DECAY_EVERY,
    PRETRAIN_EPOCHS,
    PRETRAIN_LR,
    PRETRAIN_LR_DECAY,
    PRETRAINED_OUT,
    PROXY_LR_FACTOR,
    SEED,
    WARMUP_STEPS,
)
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED


def number(value: float) -> str:
    """A learning rate or factor as the help texts write it: 1e-4, 7e-4, 0.6, 100."""
    if value != 0 and abs(value) < 1e-2 + 1e-12:
        mantissa, exponent = f"{value:.0e}".split("e")
        if float(f"{mantissa}e{exponent}") == value:
            return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def metric_lr_text() -> str:
    """``osma train --lr``'s default, per case, from the core's schedules."""
    init, scratch, pose = number(METRIC_LR_FROM_INIT), number(METRIC_LR_FROM_SCRATCH), number(POSE_LR)
    if init == pose:
        return f"{init} with --init or --method pose, {scratch} from scratch"
    return f"{init} with --init, {scratch} from scratch, {pose} with --method pose"


HELP_NUMBERS = {
    "metric_epochs": METRIC_EPOCHS,
    "metric_lr": metric_lr_text(),
    "metric_init_lr": number(METRIC_LR_FROM_INIT),
    "metric_scratch_lr": number(METRIC_LR_FROM_SCRATCH),
    "metric_decay": number(METRIC_LR_DECAY),
    "metric_every": METRIC_DECAY_EVERY,
    "pose_lr": number(POSE_LR),
    "aug_lr": number(AUG_LR),
    "pretrain_lr": number(PRETRAIN_LR),
    "pretrain_decay": number(PRETRAIN_LR_DECAY),
    "pretrain_every": PRETRAIN_DECAY_EVERY,
}
"""The numbers the commands' help texts state, all the core's (``osma_cli/defaults.py``)."""

ArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Network from the registry (mislnet, resnet50, dct_cnn, ...). Default: mislnet, or the --init file's.",
        show_default=False,
    ),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Epochs to train.")]
LrDecayOpt = Annotated[
    float | None,
    typer.Option(
        "--lr-decay", help="Multiply the learning rate by this every --decay-every epochs.", show_default=False
    ),
]
DecayEveryOpt = Annotated[
    int | None, typer.Option("--decay-every", min=1, help="Epochs between learning-rate decays.", show_default=False)
]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", min=0.0, help="AdamW weight decay of the network.")]
CropOpt = Annotated[
    int,
    typer.Option(
        "--crop",
        min=8,
        help=f"Training crop size in pixels (the paper's {CROP}). On a CPU use about {CROP // 2} "
        "(4x fewer pixels, about 5x faster); the weights then expect crops of that size.",
    ),
]
EmbeddingDimOpt = Annotated[
    int | None,
    typer.Option("--embedding-dim", min=1, help="Embedding size (default: the architecture's).", show_default=False),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice (CPU runs repeat exactly).")]
ValFractionOpt = Annotated[
    float,
    typer.Option(
        "--val-fraction",
        min=0.0,
        max=0.9,
        help="Share of each class held out for validation (0: none, the last epoch is kept).",
    ),
]
CheckpointDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint-dir",
        file_okay=False,
        help="Where the per-epoch checkpoint goes. Default: `<out>.checkpoints` beside --out.",
        show_default=False,
    ),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        metavar="CHECKPOINT_DIR",
        file_okay=False,
        help="Continue the run whose checkpoint folder this is (same data and options; --epochs may grow).",
        show_default=False,
    ),
]
StepsOpt = Annotated[
    int | None,
    typer.Option(
        "--steps-per-epoch", min=1, help="At most this many batches per epoch (for a time budget).", show_default=False
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace existing outputs and start afresh over an existing checkpoint.")
]
CacheOpt = Annotated[
    bool,
    typer.Option("--cache-decoded", help="Keep decoded training images in memory (decode once; for data that fits)."),
]


METHODS = ("metric", "pose", "fsd", "fsd-detector")
DEFAULT_OUT = {"fsd-detector": DETECTOR_OUT}
"""Where --out goes when not given, per method (the rest: ``EMBEDDING_OUT``)."""


def train(
    data: Annotated[
        Path | None,
        typer.Argument(
            help="Folder with one sub-folder of images per generator.", exists=True, file_okay=False, show_default=False
        ),
    ] = None,
    annotations: Annotated[
        list[Path] | None,
        typer.Option(
            "--annotations",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="POSE annotation file (lines `relative/path<TAB>label`) instead of DATA; repeat for several.",
            show_default=False,
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            exists=True,
            file_okay=False,
            help="Folder the annotation paths are relative to.",
            show_default=False,
        ),
    ] = None,
    val_annotations: Annotated[
        list[Path] | None,
        typer.Option(
            "--val-annotations",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="Validation images of the training generators (annotation files); replaces --val-fraction.",
            show_default=False,
        ),
    ] = None,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            dir_okay=False,
            help=f"Weights file to write. Default: {EMBEDDING_OUT} (fsd-detector: {DETECTOR_OUT}).",
            show_default=False,
        ),
    ] = None,
    refs_out: Annotated[
        Path | None,
        typer.Option(
            "--refs-out",
            dir_okay=False,
            help="Also build a reference store of the training generators with the new weights.",
            show_default=False,
        ),
    ] = None,
    arch: ArchOpt = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            exists=True,
            dir_okay=False,
            help="Start from these weights (e.g. from `osma pretrain`). Default: from scratch.",
            show_default=False,
        ),
    ] = None,
    embedding_dim: EmbeddingDimOpt = None,
    epochs: EpochsOpt = METRIC_EPOCHS,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help=f"Learning rate. Default: {HELP_NUMBERS['metric_lr']}.", show_default=False),
    ] = None,
    lr_decay: LrDecayOpt = None,
    decay_every: DecayEveryOpt = None,
    proxy_lr_factor: Annotated[
        float, typer.Option("--proxy-lr-factor", min=0.0, help="Proxies learn this many times faster than the network.")
    ] = PROXY_LR_FACTOR,
    weight_decay: WeightDecayOpt = DEFAULT_WEIGHT_DECAY,
    temperature: Annotated[
        float, typer.Option("--temperature", min=0.0, help="ProxyNCA++ softmax temperature.", show_default="1/9")
    ] = DEFAULT_TEMPERATURE,
    batch_size: BatchOpt = BATCH_SIZE,
    crop: CropOpt = CROP,
    seed: SeedOpt = SEED,
    steps_per_epoch: StepsOpt = None,
    checkpoint_dir: CheckpointDirOpt = None,
    resume: ResumeOpt = None,
    force: ForceOpt = False,
    cache_decoded: CacheOpt = False,
    device: DeviceOpt = DEVICE,
    workers: WorkersOpt = None,
    json_out: JsonOpt = False,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="metric: the embedding (Fang et al.), extended by enrolling references. "
            "pose: POSE's closed-set classifier (Yang et al.), which cannot enroll new "
            "generators.",
        ),
    ] = "metric",
    open_space_aug: Annotated[
        bool,
        typer.Option(
            "--open-space-aug",
            help="Metric learning: add POSE's augmentation models (one per epoch); their "
            "images of class i become an extra negative class with its own proxy.",
        ),
    ] = False,
    pose_variant: Annotated[
        str,
        typer.Option(
            "--pose-variant",
            help="With --method pose: 'paper' (cross-entropy on logits, ReLU in the augmentation "
            "models) or 'released-code' (its double softmax and linear augmentation "
            "models).",
        ),
    ] = POSE_VARIANT,
    aug_lr: Annotated[
        float, typer.Option("--aug-lr", min=0.0, help="Adam learning rate of each augmentation model.")
    ] = AUG_LR,
    aug_warmup: Annotated[
        int,
        typer.Option(
            "--aug-warmup",
            min=0,
            help="Reconstruction-only steps of each new augmentation model before it "
            "joins training (osma's; 0 is POSE's schedule).",
        ),
    ] = WARMUP_STEPS,
    diversity_alpha: Annotated[
        float,
        typer.Option(
            "--diversity-alpha", min=0.0, help="Weight of an augmentation model's similarity to an earlier one."
        ),
    ] = ALPHA,
    diversity_beta: Annotated[
        float, typer.Option("--diversity-beta", min=0.0, help="Weight of its pull towards the known images' features.")
    ] = BETA,
    diversity_margin: Annotated[
        float,
        typer.Option(
            "--diversity-margin",
            min=-1.0,
            max=1.0,
            help="Cosine similarity to the known features beyond which the pull stops.",
        ),
    ] = MARGIN,
    triplet_margin: Annotated[
        float, typer.Option("--triplet-margin", min=0.0, help="With --method pose: margin of the triplet loss.")
    ] = DEFAULT_TRIPLET_MARGIN,
    photos: Annotated[
        Path | None,
        typer.Option(
            "--photos",
            file_okay=False,
            help="With --method fsd: camera photographs (no generated images) to learn "
            "the residual filters from. Default: fixed filters.",
            show_default=False,
        ),
    ] = None,
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor",
            help="With --method fsd: descriptor settings, key=value,... (filters, colour, block, "
            "scales, mode, scale_mode, constrained, window).",
            show_default=False,
        ),
    ] = None,
    jpeg_regimes: Annotated[
        str | None,
        typer.Option(
            "--jpeg-regimes",
            help="With --method fsd: JPEG qualities (e.g. 95,90,75) to fit a projection of "
            "their own for; each image is then scored in the regime of its compression "
            "(docs/descriptors.md). Default: lossless only.",
            show_default=False,
        ),
    ] = None,
    augment: Annotated[
        list[str] | None,
        typer.Option(
            "--augment",
            help="Robustness to re-shared images (repeatable): jpeg:Q, resize:S, blur:SIGMA, "
            "noise:SIGMA, crop:F, or standard (docs/robustness.md). Metric learning and POSE: "
            "each training image is perturbed by one of them or left as it is, drawn "
            "uniformly, before the crop. --method fsd: the projection is also fitted on "
            "perturbed copies of DATA's images. References and tau stay clean. Default: none.",
            show_default=False,
        ),
    ] = None,
    rule: RuleOpt = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            exists=True,
            dir_okay=False,
            help="With --method fsd-detector: the descriptor whose raw self-descriptions are modelled. "
            "Default: the shipped weights/osma-fsd.safetensors.",
            show_default=False,
        ),
    ] = None,
    copies: Annotated[
        str | None,
        typer.Option(
            "--copies",
            help="With --method fsd-detector: re-saved copies of each real photo fitted too, comma-"
            f"separated: resize:F, offgrid:N, jpeg:Q. Default: {','.join(DEFAULT_COPIES)} "
            "('original' alone: none).",
            show_default=False,
        ),
    ] = None,
    held_out: Annotated[
        float,
        typer.Option(
            "--held-out",
            min=0.01,
            max=0.9,
            help="With --method fsd-detector: share of the real photos (whole sub-folders, e.g. camera models) "
            "held out to calibrate.",
        ),
    ] = DETECTOR_HELD_OUT,
    acceptance: Annotated[
        float,
        typer.Option(
            "--acceptance",
            min=0.5,
            max=1.0,
            help="With --method fsd-detector: share of the held-out real photos "
            "(and copies) the threshold passes as real.",
        ),
    ] = DETECTOR_ACCEPTANCE,
    pca_dim: Annotated[
        int,
        typer.Option("--pca-dim", min=1, help="With --method fsd-detector: PCA dimensions the mixture is fitted in."),
    ] = DEFAULT_MIXTURE["pca_dim"],
    components: Annotated[
        int, typer.Option("--components", min=1, help="With --method fsd-detector: Gaussian mixture components.")
    ] = DEFAULT_MIXTURE["components"],
    covariance: Annotated[
        str, typer.Option("--covariance", help="With --method fsd-detector: full, diag, tied or spherical.")
    ] = DEFAULT_MIXTURE["covariance"],
    restarts: Annotated[
        int,
        typer.Option(
            "--restarts",
            min=1,
            help="With --method fsd-detector: mixture fits from seeds SEED.. SEED+N-1; "
            "the one the held-out photos are likeliest under is kept.",
        ),
    ] = DEFAULT_MIXTURE["restarts"],
) -> None:
    """Learn the attribution model: the metric-learning embedding (default) or POSE (--method pose).

    Metric learning (ProxyNCA++, Fang et al.), the paper's defaults: {metric_epochs} epochs, AdamW,
    lr {metric_init_lr} ({metric_scratch_lr} from scratch) x{metric_decay} every {metric_every} epochs, classes
    balanced by under-sampling, random crops with JPEG re-compression. The network with the
    best nearest-centroid accuracy on the validation images is written. Several GPUs: launch
    the same command with torchrun.

    POSE (--method pose, Yang et al.): a block-DCT CNN classifier over the known classes,
    trained with a new augmentation model each epoch; Adam, lr {pose_lr} ({aug_lr} for augmentation
    models). Same data options; the weights carry the class names and a threshold, so
    `osma attribute`, `calibrate` and `benchmark` take them with no reference store.

    Forensic self-descriptions (--method fsd, Nguyen et al.): no gradient training. Residual
    filters are learned in closed form on --photos (camera photographs only), and a linear
    projection (standardise, PCA, shrunk LDA) is fitted on DATA's generators; seconds to
    minutes on a CPU. --rule names the rule its reference stores use by default.

    Zero-shot detector (--method fsd-detector REAL_DIR, Nguyen et al.): a Gaussian mixture of
    the raw self-descriptions of real photographs only (and of their re-saved copies, so that
    JPEG compression alone does not decide), calibrated on held-out photos; for `osma detect`
    (docs/detection.md).
    """
    from osma_cli.data.perturb import parse_perturbations
    from osma_cli.errors import UsageError
    from osma_cli.training.config import TrainConfig
    from osma_cli.training.metric import train_embedding
    from osma_cli.training.pose_aug import AugOptions

    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    out = out if out is not None else DEFAULT_OUT.get(method, EMBEDDING_OUT)
    check_output_file(out, "--out")
    if method == "fsd-detector":
        from osma_cli.cli.train_detector import train_detector_command

        train_detector_command(
            data,
            out,
            model=model,
            copies=copies,
            held_out=held_out,
            acceptance=acceptance,
            pca_dim=pca_dim,
            components=components,
            covariance=covariance,
            restarts=restarts,
            seed=seed,
            device=device,
            json_out=json_out,
        )
        return
    if model is not None or copies is not None:
        raise UsageError(
            "--model and --copies are for --method fsd-detector", hint="start other methods from weights with --init"
        )
    check_output_file(refs_out, "--refs-out")
    if open_space_aug and method == "pose":
        raise UsageError("--open-space-aug is for metric learning; POSE always uses its augmentation models")
    if method == "fsd":
        train_descriptor(
            data,
            out,
            photos,
            descriptor,
            rule,
            device,
            batch_size,
            workers,
            json_out,
            jpeg_regimes=jpeg_regimes,
            augment=augment or (),
        )
        return
    if photos is not None or descriptor is not None or jpeg_regimes is not None:
        raise UsageError("--photos, --descriptor and --jpeg-regimes are for --method fsd")
    aug = AugOptions(
        lr=aug_lr, alpha=diversity_alpha, beta=diversity_beta, margin=diversity_margin, warmup_steps=aug_warmup
    )

    config = TrainConfig(
        data=data,
        annotations=tuple(annotations or ()),
        data_root=data_root,
        val_annotations=tuple(val_annotations or ()),
        val_fraction=val_fraction,
        out=out,
        arch=arch,
        embedding_dim=embedding_dim,
        init=init,
        epochs=epochs,
        lr=lr,
        lr_decay=lr_decay,
        decay_every=decay_every,
        proxy_lr_factor=proxy_lr_factor,
        weight_decay=weight_decay,
        batch_size=batch_size,
        crop=crop,
        temperature=temperature,
        seed=seed,
        workers=workers,
        device=device,
        steps_per_epoch=steps_per_epoch,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        force=force,
        refs_out=refs_out,
        cache_decoded=cache_decoded,
        open_space_aug=aug if open_space_aug else None,
        augment=parse_perturbations(augment) if augment else (),
    )
    if method == "pose":
        from functools import partial

        from osma_cli.training.config import PoseOptions
        from osma_cli.training.pose import train_pose

        options = PoseOptions(variant=pose_variant, triplet_margin=triplet_margin, aug=aug)
        result = run_with_progress(partial(train_pose, options=options), config, resumable=False)
        threshold = result.meta.metrics.get("threshold") if result.meta is not None else None
        finish(
            result,
            json_out,
            extra={"kind": "classifier", "threshold": None if threshold is None else threshold["value"]},
        )
        return
    result = run_with_progress(train_embedding, config, resumable=not open_space_aug)
    finish(result, json_out, extra={"refs": None if result.refs is None else str(result.refs)})


def train_descriptor(
    data: Path | None,
    out: Path,
    photos: Path | None,
    descriptor: str | None,
    rule: str | None,
    device: str,
    batch_size: int,
    workers: int | None,
    json_out: bool,
    jpeg_regimes: str | None = None,
    augment: Sequence[str] = (),
) -> None:
    """``osma train --method fsd``: fit filters and projection, write the weights, report."""
    from osma_cli.cli.session import parse_rule, parse_settings
    from osma_cli.errors import UsageError
    from osma_cli.projection_augment import parse_augment
    from osma_cli.regimes import parse_regimes
    from osma_cli.training.fsd import DescriptorConfig, fit_fsd

    if data is None:
        raise UsageError("--method fsd needs DATA: one folder of images per known generator")
    chosen = parse_rule(rule)
    config = DescriptorConfig(
        data=data,
        out=out,
        photos=photos,
        settings=parse_settings(descriptor, "--descriptor"),
        rule=chosen.spec() if chosen is not None else {"name": "fang", "params": {}},
        device=device,
        batch_size=batch_size,
        workers=workers,
        jpeg_regimes=parse_regimes(jpeg_regimes or ""),
        augment=parse_augment(augment),
    )
    with output.progress_bar("describing", None) as advance:
        result = fit_fsd(config, on_progress=advance)
    for item in result.failures:
        output.warn(f"skipped {output.escape(item.error or '')}")  # a failure: never None
    steps = result.projection.steps
    summary_record = {
        "out": str(out),
        "kind": "descriptor",
        "sha256": result.meta.sha256,
        "filters": result.meta.recipe["filters"],
        "n_photos": result.n_photos,
        "classes": result.classes,
        "embedding_dim": result.meta.embedding_dim,
        "raw_dim": steps.get("input_dim"),
        "projection": steps,
        "rule": result.meta.rule,
        "regimes": [r.name for r in result.meta.regimes],
        "augment": [p.spec for p in config.augment],
    }
    if json_out:
        output.write_json(summary_record, command="train")
    else:
        output.stdout.print(
            f"wrote {out}: fsd descriptor, {result.meta.recipe['filters']} filters"
            f"{f' (from {result.n_photos} photos)' if result.n_photos else ''}, "
            f"{steps.get('input_dim')} -> {result.meta.embedding_dim} dims "
            f"({steps.get('method')}) on {len(result.classes)} classes"
            + (f", regimes {', '.join(r.name for r in result.meta.regimes)}" if len(result.meta.regimes) > 1 else "")
            + (
                f", projection also fitted on copies {', '.join(p.spec for p in config.augment)}"
                if config.augment
                else ""
            )
        )
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if result.failures else EXIT_OK)


def pretrain(
    root: Annotated[
        Path,
        typer.Argument(
            metavar="CAMERA_ROOT|PHOTOS_DIR",
            exists=True,
            file_okay=False,
            help="Camera-model database (one sub-folder per camera model), or with --simulate-cameras "
            "a folder of real photos.",
            show_default=False,
        ),
    ],
    simulate_cameras: Annotated[
        int | None,
        typer.Option(
            "--simulate-cameras",
            metavar="N",
            min=2,
            help="No camera database? Re-render the photos through N simulated camera pipelines "
            "(demosaicing, denoising, tone curves, JPEG tables), one class each.",
            show_default=False,
        ),
    ] = None,
    samples_per_epoch: Annotated[
        int | None,
        typer.Option(
            "--samples-per-epoch", min=1, help="With --simulate-cameras: rendered crops per epoch.", show_default=False
        ),
    ] = None,
    val_fraction: ValFractionOpt = DEFAULT_VAL_FRACTION,
    balanced: Annotated[
        bool,
        typer.Option("--balanced", help="Under-sample camera models to the smallest each epoch (default: all images)."),
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Weights file to write (the backbone).")
    ] = PRETRAINED_OUT,
    arch: ArchOpt = None,
    embedding_dim: EmbeddingDimOpt = None,
    epochs: EpochsOpt = PRETRAIN_EPOCHS,
    lr: Annotated[
        float | None, typer.Option("--lr", help=f"Learning rate. Default: {number(PRETRAIN_LR)}.", show_default=False)
    ] = None,
    lr_decay: LrDecayOpt = None,
    decay_every: DecayEveryOpt = None,
    weight_decay: WeightDecayOpt = DEFAULT_WEIGHT_DECAY,
    batch_size: BatchOpt = BATCH_SIZE,
    crop: CropOpt = CROP,
    seed: SeedOpt = SEED,
    steps_per_epoch: StepsOpt = None,
    checkpoint_dir: CheckpointDirOpt = None,
    resume: ResumeOpt = None,
    force: ForceOpt = False,
    cache_decoded: CacheOpt = False,
    device: DeviceOpt = DEVICE,
    workers: WorkersOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Pre-train a network as a camera-model classifier, for `osma train --init`.

    Paper schedule by default: AdamW, lr {pretrain_lr}, x{pretrain_decay} every {pretrain_every} epochs.
    The classifier layer is dropped: the file holds the backbone only.
    """
    from osma_cli.training.config import PretrainConfig
    from osma_cli.training.pretrain import pretrain as run_pretrain

    check_output_file(out, "--out")
    simulated = simulate_cameras is not None
    config = PretrainConfig(
        camera_root=None if simulated else root,
        photos=root if simulated else None,
        simulate_cameras=simulate_cameras,
        samples_per_epoch=samples_per_epoch,
        val_fraction=val_fraction,
        balanced=balanced,
        out=out,
        arch=arch,
        embedding_dim=embedding_dim,
        epochs=epochs,
        lr=lr,
        lr_decay=lr_decay,
        decay_every=decay_every,
        weight_decay=weight_decay,
        batch_size=batch_size,
        crop=crop,
        seed=seed,
        workers=workers,
        device=device,
        steps_per_epoch=steps_per_epoch,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        force=force,
        cache_decoded=cache_decoded,
    )
    result = run_with_progress(run_pretrain, config)
    finish(result, json_out, command="pretrain")


if train.__doc__ and pretrain.__doc__:  # (absent under python -OO)
    train.__doc__ = train.__doc__.format(**HELP_NUMBERS)
    pretrain.__doc__ = pretrain.__doc__.format(**HELP_NUMBERS)


# --------------------------------------------------------------------------- rendering


class EpochProgress:
    """One transient bar per epoch (steps), then a line of the epoch's figures."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._advance: Callable[[int], Any] | None = None

    def start(self, epoch: int, epochs: int, steps: int) -> None:
        self.close()
        self._advance = self._stack.enter_context(output.progress_bar(f"epoch {epoch + 1}/{epochs}", steps))

    def step(self, info) -> None:
        if self._advance is not None:
            self._advance(1)

    def end(self, stats) -> None:
        self.close()
        output.stderr.print(epoch_line(stats), soft_wrap=True)

    def close(self) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._advance = None


def run_with_progress(run: Callable, config, *, resumable: bool = True):
    """Run the training with bars; Ctrl-C says how to continue (exit 130)."""
    progress = EpochProgress()
    try:
        return run(config, on_epoch_start=progress.start, on_step=progress.step, on_epoch=progress.end)
    except KeyboardInterrupt:
        progress.close()
        if not resumable:
            output.stderr.print(
                "interrupted; this run cannot be resumed (its augmentation models are not "
                "checkpointed): start it again",
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
        folder = config.checkpoint_folder()
        output.stderr.print(
            f"interrupted; the last finished epoch is saved: continue with --resume {folder}", soft_wrap=True
        )
        raise typer.Exit(130) from None
    finally:
        progress.close()


def epoch_line(stats) -> str:
    parts = [f"epoch {stats.epoch + 1}/{stats.epochs}", f"loss {stats.loss:.4f}"]
    if stats.val_accuracy is not None:
        parts.append(f"val acc {stats.val_accuracy:.4f}" + (" *" if stats.is_best else ""))
        parts.append(f"best {stats.best_accuracy:.4f} (epoch {stats.best_epoch + 1})")
    parts += [f"lr {stats.lr:.3g}", f"{stats.images_per_second:.1f} img/s", f"{stats.seconds:.1f} s"]
    return "  ".join(parts)


def summary(result, extra: dict | None = None) -> dict:
    meta = result.meta
    return {
        "weights": str(result.weights),
        "sha256": None if meta is None else meta.sha256,
        "architecture": None if meta is None else meta.architecture,
        "embedding_dim": None if meta is None else meta.embedding_dim,
        "crop_size": None if meta is None else meta.crop_size,
        "classes": list(result.class_names),
        "n_train": result.n_train,
        "n_val": result.n_val,
        "best_val_accuracy": result.best_accuracy,
        "best_epoch": None if result.best_epoch is None else result.best_epoch + 1,
        "resumed_from_epoch": result.resumed_from,
        "checkpoint_dir": None if result.checkpoint_dir is None else str(result.checkpoint_dir),
        "skipped": [{"path": str(p), "error": reason} for p, reason in result.skipped],
        "history": [
            {**h.to_dict(), "epoch": h.epoch + 1, "best_epoch": None if h.best_epoch is None else h.best_epoch + 1}
            for h in result.history
        ],
        **(extra or {}),
    }


def finish(result, json_out: bool, extra: dict | None = None, command: str = "train") -> None:
    for path, reason in result.skipped:
        output.file_problem(path, f"{reason} (skipped)")
    for note in result.notes:
        output.warn(output.escape(note))
    data = summary(result, extra)
    if json_out:
        output.write_json(data, command=command)
    else:
        rows = [[k, v] for k, v in data.items() if k not in ("history", "skipped", "classes")]
        rows.insert(
            5,
            [
                "classes",
                f"{len(data['classes'])}: {', '.join(data['classes'][:8])}"
                + (", ..." if len(data["classes"]) > 8 else ""),
            ],
        )
        output.print_table(output.simple_table("training finished", ["", ""], rows))
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if result.skipped else EXIT_OK)
