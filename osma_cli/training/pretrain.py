"""Pre-training a backbone as a camera-model classifier, for ``osma train --init``.

Fang et al. (BMVC 2023) initialise the attribution network by training it to tell ~70
camera models apart (cross-entropy; AdamW, lr 1e-3, x0.65 every 3 epochs) and then drop the
classifier layer: features that separate acquisition pipelines transfer to generators.

Two sources of classes:

- a camera-model database, one sub-folder per camera model (``camera_root``): images are
  split into training and validation images per class (``val_fraction``); training crops
  are random, grid-aligned, never resampled, JPEG re-compressed as in metric learning;
  validation crops are centred;
- **simulated camera pipelines** when there is no such database (``photos`` +
  ``simulate_cameras`` N): real photos re-rendered through N distinct pipelines
  (``osma_cli.data.camera_sim``), one class per pipeline. Photos are split into training
  and validation photos, so validation images show content never seen in training and
  the classifier must recognise the pipeline, not the photo.

The classifier is a linear layer on the embedding (``CrossEntropyClassifier``), owned by the
loss; the saved file holds the network only, as an ``"embedding"`` weights file whose recipe
says it is a pre-trained backbone. Validation accuracy is the classifier's on the held-out
images; the best epoch's network is kept. Pre-training length is not given by Fang et
al.: 30 epochs by default (osma's choice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from osma_cli.data import default_workers, iter_image_files
from osma_cli.data.augment import TrainTransform
from osma_cli.data.camera_sim import SimulatedCameraDataset, make_pipelines
from osma_cli.data.training_sets import LabeledFiles, balanced_indices
from osma_cli.errors import DataError, UsageError
from osma_cli.runtime import seed_everything
from osma_cli.training.config import PretrainConfig, PretrainResult, check_output_paths
from osma_cli.training.data import CentreCrop, check_classes, files_digest, paths_digest, readable_dataset
from osma_cli.training.distributed import DistContext, distributed
from osma_cli.training.loop import EpochCallback, EpochStartCallback, StepCallback, epoch_rng, fit
from osma_cli.training.losses import CrossEntropyClassifier
from osma_cli.training.network import Network, build_network
from osma_cli.training.provenance import environment
from osma_cli.training.schedule import StepDecay
from osma_cli.training.step import LossStep
from osma_cli.training.validation import ClassifierValidator
from osma_cli.weights import WeightsMeta, save_weights


@dataclass(frozen=True)
class PretrainData:
    train: Dataset
    val: Dataset | None
    class_names: tuple[str, ...]
    n_train: int
    n_val: int
    epoch_indices: Callable[[int], np.ndarray]
    skipped: list[tuple[Path, str]]
    description: dict
    digest: dict


def camera_data(config: PretrainConfig) -> PretrainData:
    assert config.camera_root is not None  # pretrain() checks that exactly one source is given
    files = LabeledFiles.from_folders(config.camera_root)
    if config.val_fraction > 0:
        if not 0 < config.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        train, val = files.split(config.val_fraction, config.seed)
    else:
        train, val = files, None
    dataset, train, skipped = readable_dataset(
        train, TrainTransform(crop=config.crop), seed=config.seed, cache_decoded=config.cache_decoded
    )
    val_set = None
    if val is not None:
        val_set, val, more = readable_dataset(
            val, CentreCrop(config.crop), seed=config.seed, cache_decoded=config.cache_decoded
        )
        skipped += more
        if len(val.paths) == 0:
            val, val_set = None, None
    check_classes(train)
    labels, seed, n = train.labels, config.seed, len(train.paths)
    if config.balanced:

        def epoch_indices(epoch: int) -> np.ndarray:
            return balanced_indices(labels, epoch_rng(seed, epoch))
    else:

        def epoch_indices(epoch: int) -> np.ndarray:
            return epoch_rng(seed, epoch).permutation(n)

    return PretrainData(
        train=dataset,
        val=val_set,
        class_names=tuple(train.class_names),
        n_train=n,
        n_val=0 if val is None else len(val.paths),
        epoch_indices=epoch_indices,
        skipped=skipped,
        description={
            "source": "camera-models",
            "root": str(config.camera_root),
            "sampling": "balanced by under-sampling" if config.balanced else "all images, shuffled",
        },
        digest={"train_files": files_digest(train), "val_files": files_digest(val)},
    )


def simulated_data(config: PretrainConfig) -> PretrainData:
    n_pipes = config.simulate_cameras
    if n_pipes is None or n_pipes < 2:
        raise UsageError(f"--simulate-cameras needs at least 2 pipelines, got {n_pipes}")
    if config.photos is None:
        raise UsageError("--simulate-cameras needs a PHOTOS_DIR of real photos")
    pipelines = make_pipelines(n_pipes, seed=config.seed)
    listed = [Path(p) for p in iter_image_files([config.photos])]
    if not listed:
        raise DataError(f"no photos in {config.photos}", hint="give a folder of real photos (JPEG or PNG)")
    bad = SimulatedCameraDataset(listed, pipelines, config.crop, seed=config.seed).check_readable()
    bad_paths = {Path(p) for p, _ in bad}
    skipped = [(Path(p), reason) for p, reason in bad]
    photos = [p for p in listed if p not in bad_paths]
    if len(photos) < 2:
        raise DataError(
            f"{config.photos}: {len(photos)} readable photo(s); simulated pipelines need at least 2",
            hint="add real photos (camera JPEGs or PNGs) to the folder",
        )
    order = np.random.default_rng([config.seed, 0xCA3]).permutation(len(photos))
    n_val = 0 if config.val_fraction <= 0 else max(1, round(config.val_fraction * len(photos)))
    n_val = min(n_val, len(photos) - 1)
    val_photos = [photos[i] for i in sorted(order[:n_val])]
    train_photos = [photos[i] for i in sorted(order[n_val:])]
    train = SimulatedCameraDataset(
        train_photos,
        pipelines,
        config.crop,
        seed=config.seed,
        samples_per_epoch=config.samples_per_epoch,
        cache_decoded=config.cache_decoded,
    )
    if config.cache_decoded:
        train.check_readable()  # decode once here; forked loader workers share the photos
    val = None
    if val_photos:
        val = SimulatedCameraDataset(
            val_photos,
            pipelines,
            config.crop,
            seed=config.seed + 1,
            samples_per_epoch=n_pipes * config.val_samples_per_pipeline,
        )
    seed, n = config.seed, len(train)

    def epoch_indices(epoch: int) -> np.ndarray:
        return epoch_rng(seed, epoch).permutation(n)

    return PretrainData(
        train=train,
        val=val,
        class_names=tuple(train.class_names),
        n_train=n,
        n_val=0 if val is None else len(val),
        epoch_indices=epoch_indices,
        skipped=skipped,
        description={
            "source": "simulated-camera-pipelines",
            "photos": str(config.photos),
            "pipelines": n_pipes,
            "pipeline_seed": config.seed,
            "train_photos": len(train_photos),
            "val_photos": len(val_photos),
            "samples_per_epoch": config.samples_per_epoch,
            "val_samples_per_pipeline": config.val_samples_per_pipeline,
        },
        digest={"train_photos": paths_digest(train_photos), "val_photos": paths_digest(val_photos)},
    )


def pretrain(
    config: PretrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    on_epoch_start: EpochStartCallback | None = None,
) -> PretrainResult:
    """Train a registry network as a camera-model (or camera-pipeline) classifier; save the backbone."""
    if (config.camera_root is None) == (config.photos is None):
        raise UsageError(
            "give either CAMERA_ROOT (one folder per camera model), or --simulate-cameras N with PHOTOS_DIR"
        )
    if config.photos is not None and config.simulate_cameras is None:
        raise UsageError("PHOTOS_DIR needs --simulate-cameras N")
    schedule = config.schedule()
    check_output_paths(config.out, force=config.force, resume=config.resume)
    workers = default_workers() if config.workers is None else config.workers
    with distributed(config.device) as ctx:
        seed_everything(config.seed)
        data = simulated_data(config) if config.simulated else camera_data(config)
        network = build_network(
            arch=config.arch, arch_kwargs=config.arch_kwargs, embedding_dim=config.embedding_dim, crop=config.crop
        )
        model = network.model
        head = CrossEntropyClassifier(len(data.class_names), network.embedding_dim)
        validator, notes = None, []
        if data.val is not None:
            validator = ClassifierValidator(
                data.val,
                head,
                ctx.device,
                batch_size=config.batch_size,
                workers=workers,
                mixed_precision=config.mixed_precision,
            )
        else:
            notes.append("no validation images: the last epoch's network is kept")
        settings = config.loop_settings(workers)
        fingerprint = {
            "task": "pretrain",
            "architecture": network.architecture,
            "arch_kwargs": network.arch_kwargs,
            "embedding_dim": network.embedding_dim,
            "classes": list(data.class_names),
            "data": data.description,
            **data.digest,
            "schedule": schedule.to_dict(),
            "weight_decay": config.weight_decay,
            "batch_size": config.batch_size,
            "crop": config.crop,
            "seed": config.seed,
            "steps_per_epoch": config.steps_per_epoch,
            "world_size": ctx.world_size,
        }
        step = LossStep(
            model,
            head,
            schedule,
            weight_decay=config.weight_decay,
            loss_lr_factor=1.0,
            mixed_precision=config.mixed_precision,
        )
        result = fit(
            step,
            data.train,
            epoch_indices=data.epoch_indices,
            settings=settings,
            ctx=ctx,
            validate=validator,
            fingerprint=fingerprint,
            on_step=on_step,
            on_epoch=on_epoch,
            on_epoch_start=on_epoch_start,
        )
        saved_meta = None
        if ctx.is_main:
            model.load_state_dict(result.best_state)
            recipe = pretrain_recipe(config, network, schedule, data, ctx, workers)
            metrics = {
                "val_accuracy": result.best_accuracy,
                "best_epoch": None if result.best_epoch is None else result.best_epoch + 1,
                "epochs_trained": len(result.history),
                "validation": "classifier accuracy on held-out images (dropped classifier)",
            }
            saved_meta = save_weights(
                config.out,
                model,
                WeightsMeta(
                    architecture=network.architecture,
                    embedding_dim=network.embedding_dim,
                    crop_size=config.crop,
                    l2_normalize=False,
                    arch_kwargs=dict(network.arch_kwargs),
                    recipe=recipe,
                    metrics=metrics,
                ),
            )
        ctx.barrier()
    return PretrainResult(
        weights=Path(config.out),
        meta=saved_meta,
        best_accuracy=result.best_accuracy,
        best_epoch=result.best_epoch,
        history=result.history,
        class_names=data.class_names,
        n_train=data.n_train,
        n_val=data.n_val,
        skipped=data.skipped,
        checkpoint_dir=settings.checkpoint_dir,
        resumed_from=result.resumed_from,
        notes=notes,
    )


def pretrain_recipe(
    config: PretrainConfig, network: Network, schedule: StepDecay, data: PretrainData, ctx: DistContext, workers: int
) -> dict:
    return {
        "stage": "pretrain",
        "purpose": "pre-trained backbone for `osma train --init`; the classifier layer is dropped",
        "method": "camera-model identification pre-training (Fang, Nguyen & Stamm, BMVC 2023)",
        "loss": {"name": "cross-entropy", "head": "linear on the embedding (not saved)"},
        "optimizer": {"name": "AdamW", "weight_decay": config.weight_decay},
        "schedule": schedule.to_dict(),
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size,
        "world_size": ctx.world_size,
        "crop": config.crop,
        "augmentation": (
            TrainTransform(crop=config.crop).describe()
            if not config.simulated
            else {"crop": "random, 8-aligned, no resampling", "pipelines": "osma_cli.data.camera_pipeline"}
        ),
        "seed": config.seed,
        "data": {
            **data.description,
            "classes": list(data.class_names),
            "n_train": data.n_train,
            "n_val": data.n_val,
            "n_skipped": len(data.skipped),
        },
        **environment(ctx.device, workers, mixed_precision=config.mixed_precision),
    }
