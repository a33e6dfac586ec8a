"""Training POSE (Yang et al., CVPR 2023) as osma's closed-set baseline: ``osma train --method pose``.

``train_pose(config, options)``, per epoch ``t``:

1. a new augmentation model ``A_t`` (``pose_aug.ProgressiveAugmenter``);
2. for every training batch ``(x, y)``:

   a. one Adam step of ``A_t`` (lr 1e-2) on the reconstruction loss, plus from the second
      epoch on the diversity loss against a randomly drawn earlier model, through the task
      model's features with the task model held fixed;
   b. one Adam step of the task model (lr 1e-4) on::

          CE(logits(x), y)
        + triplet([f(x); f(A_t(x))], [y; K + y])
        + triplet([f(x); f(A_j(x))], [y; K + y])     (from the second epoch; j < t at random)

      with batch-hard triplets of margin 0.3 on the features ``f`` (Euclidean distance);

3. ``A_t`` is frozen and kept; the task model is validated (closed-set accuracy of the
   arg-max class on the validation images' centre crops, through ``Embedder``, exactly as
   ``osma attribute`` will see them) and the best epoch's network is kept.

The weights written are a classifier (``WeightsMeta.kind == "classifier"``) carrying its
class names, its recipe and a provisional threshold on the rejection score ``1 - max
softmax`` (the given acceptance of the validation images, else of the training images).

Data handling is the metric learning's (``metric.load_data``): folders or POSE annotation
files, the same balanced under-sampling, random grid-aligned crops with JPEG re-compression,
never a resampled pixel. What POSE's released code does differently, and which of its
behaviours stay available (``PoseOptions.variant``), is in ``docs/pose.md``.

Single process, float32; no ``--resume`` (the augmentation models would have to be
checkpointed too): a POSE run is short next to metric learning.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

import osma_cli
from osma_cli.attribution import score_probabilities
from osma_cli.calibration import DEFAULT_ACCEPTANCE, threshold_for_acceptance
from osma_cli.data import default_workers
from osma_cli.data.augment import JPEG_QUALITIES
from osma_cli.defaults import POSE_VARIANT
from osma_cli.data.training_sets import LabeledFiles, balanced_indices
from osma_cli.embed import Embedder
from osma_cli.errors import UsageError
from osma_cli.nets import ClassifierNet, get_model
from osma_cli.references import Threshold, now_iso
from osma_cli.runtime import resolve_device, seed_everything
from osma_cli.training.loop import (EpochCallback, EpochStartCallback, EpochStats, StepCallback, StepInfo,
                                    TrainingError, cpu_state, epoch_batches, epoch_rng, epoch_seed, source_commit,
                                    to_device_batch)
from osma_cli.training.losses import DEFAULT_TRIPLET_MARGIN, BatchHardTripletLoss, MeanReducer
from osma_cli.training.metric import TrainConfig, TrainResult, check_output_paths, files_digest, load_data
from osma_cli.training.pose_aug import AugOptions, ProgressiveAugmenter, expanded_labels
from osma_cli.training.schedule import StepDecay
from osma_cli.weights import WeightsMeta, save_weights

POSE_ARCH = "pose_dct_cnn"
POSE_LR = 1e-4
POSE_EPOCHS = 30
VARIANTS = ("paper", "released-code")
CODE_SOFTMAX_TEMPERATURE = 0.1
"""The released code's ``temp``: its loss is cross-entropy of softmax(logits) / 0.1."""


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
    dropout: float = 0.2
    width: int = 128

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(f"unknown POSE variant {self.variant!r}", hint=f"use one of {', '.join(VARIANTS)}")

    def resolved_aug(self) -> AugOptions:
        return replace(self.aug, activation=None) if self.variant == "released-code" else self.aug

    def to_dict(self) -> dict:
        return {"variant": self.variant, "triplet_margin": self.triplet_margin,
                "augmentation": self.resolved_aug().to_dict(), "acceptance": self.acceptance,
                "dropout": self.dropout, "width": self.width}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, variant: str) -> torch.Tensor:
    """Per-item cross-entropy: on the logits (paper), or on softmax(logits) / 0.1 (released code)."""
    logits = logits.float()
    if variant == "released-code":
        logits = torch.softmax(logits, dim=1) / CODE_SOFTMAX_TEMPERATURE
    return F.cross_entropy(logits, labels.long(), reduction="none")


def check_pose_config(config: TrainConfig) -> None:
    """What metric learning accepts but POSE training does not."""
    refused = [(config.init is not None, "--init"), (config.refs_out is not None, "--refs-out"),
               (config.resume is not None, "--resume"),
               (config.arch not in (None, POSE_ARCH), f"--arch {config.arch}")]
    named = [name for bad, name in refused if bad]
    if named:
        raise UsageError(f"--method pose does not take {', '.join(named)}",
                         hint=f"POSE trains its own classifier ({POSE_ARCH}) from scratch; its class names and "
                              "threshold are in the weights, so no reference store is needed")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--method pose runs in a single process", hint="launch it without torchrun")


def validation_probabilities(model: ClassifierNet, meta: WeightsMeta, files: LabeledFiles, device: torch.device,
                             *, batch_size: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of the files' centre crops (as ``osma attribute`` computes them) and labels."""
    embedder = Embedder(model, meta, device, mixed_precision=False)
    probs, labels = [], []
    for item in embedder.embed_files(list(files.paths), batch_size=batch_size, workers=workers):
        if item.ok:
            probs.append(item.embedding)
            labels.append(int(files.labels[item.index]))
    matrix = np.stack(probs) if probs else np.zeros((0, meta.output_dim), dtype=np.float32)
    return matrix, np.array(labels, dtype=np.int64)


def train_pose(config: TrainConfig, options: PoseOptions = PoseOptions(), *,
               on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None,
               on_epoch_start: EpochStartCallback | None = None) -> TrainResult:
    """Train POSE's task model with progressive augmentation models; write the best classifier."""
    check_pose_config(config)
    check_output_paths(config.out, force=config.force)
    if config.batch_size < 2:
        raise UsageError("batch size must be at least 2 (batch normalisation needs two samples)")
    lr = POSE_LR if config.lr is None else config.lr
    factor = 1.0 if config.lr_decay is None else config.lr_decay
    every = 1 if config.decay_every is None else config.decay_every
    schedule = StepDecay(lr=lr, factor=factor, every=every)
    workers = default_workers() if config.workers is None else config.workers
    device = resolve_device(config.device)
    seed_everything(config.seed)
    data = load_data(config)
    train, val = data.train, data.val
    n_classes = len(train.class_names)
    if n_classes < 2:
        raise UsageError("POSE needs at least 2 training classes")
    embedding_dim = 128 if config.embedding_dim is None else config.embedding_dim
    arch_kwargs = {"width": options.width, "dropout": options.dropout}
    model = get_model(POSE_ARCH, n_classes=n_classes, embedding_dim=embedding_dim, **arch_kwargs).to(device)
    meta = WeightsMeta(architecture=POSE_ARCH, embedding_dim=embedding_dim, crop_size=config.crop,
                       l2_normalize=False, arch_kwargs=arch_kwargs, kind="classifier",
                       class_names=list(train.class_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    augmenter = ProgressiveAugmenter(options.resolved_aug(), device, rng=random.Random(config.seed))
    triplet = BatchHardTripletLoss(margin=options.triplet_margin)
    reducer = MeanReducer()
    notes = list(data.notes)
    if val is None:
        notes.append("no validation images: the last epoch's network is kept")

    history: list[EpochStats] = []
    parts_history: list[dict] = []
    best_accuracy: float | None = None
    best_epoch: int | None = None
    best_state = cpu_state(model)
    for epoch in range(config.epochs):
        epoch_lr = schedule.apply(optimizer, epoch)
        batches = epoch_batches(balanced_indices(train.labels, epoch_rng(config.seed, epoch)), config.batch_size,
                                max_steps=config.steps_per_epoch)
        if not batches:
            raise TrainingError(f"epoch {epoch + 1} has no batch: too few training images",
                                hint="add images, or lower --batch-size")
        data.dataset.set_epoch(epoch)
        loader = DataLoader(data.dataset, batch_sampler=batches, num_workers=workers,
                            pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch)))
        if on_epoch_start is not None:
            on_epoch_start(epoch, config.epochs, len(batches))
        augmenter.start_epoch()
        model.train()
        started = time.perf_counter()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}  # a term can be missing from some steps (the warm-up, the first epoch's)
        images = 0
        for step, (crops, labels) in enumerate(loader):
            x = to_device_batch(crops, device)
            y = labels.to(device)
            parts = augmenter.train_step(model, model.features, x)
            value, task_parts = task_step(model, optimizer, augmenter, triplet, reducer, x, y, n_classes,
                                          options.variant)
            parts.update(task_parts)
            if not math.isfinite(value):
                raise TrainingError(f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}",
                                    hint="lower --lr, or check the training images")
            for key, v in parts.items():
                sums[key] = sums.get(key, 0.0) + v * len(y)
                counts[key] = counts.get(key, 0) + len(y)
            images += len(y)
            if on_step is not None:
                on_step(StepInfo(epoch, config.epochs, step + 1, len(batches), value))
        augmenter.end_epoch()
        seconds = time.perf_counter() - started
        means = {k: v / counts[k] for k, v in sums.items()}
        parts_history.append({"epoch": epoch + 1, **{k: round(v, 6) for k, v in means.items()}})

        val_accuracy = None
        if val is not None:
            model.eval()
            with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
                probs, val_labels = validation_probabilities(model, meta, val, device,
                                                             batch_size=config.batch_size, workers=workers)
            val_accuracy = float((probs.argmax(1) == val_labels).mean()) if len(val_labels) else 0.0
        is_best = False
        if val is None or best_accuracy is None or (val_accuracy is not None and val_accuracy > best_accuracy):
            is_best, best_epoch, best_state = True, epoch, cpu_state(model)
            best_accuracy = val_accuracy
        stats = EpochStats(epoch=epoch, epochs=config.epochs, loss=means.get("task_loss", float("nan")),
                           steps=len(batches), images=images, seconds=seconds,
                           images_per_second=images / seconds if seconds > 0 else 0.0, lr=epoch_lr,
                           val_accuracy=val_accuracy, best_accuracy=best_accuracy, best_epoch=best_epoch,
                           is_best=is_best)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)

    model.load_state_dict(best_state)
    model.eval()
    threshold_files = val if val is not None else train
    probs, _ = validation_probabilities(model, meta, threshold_files, device,
                                        batch_size=config.batch_size, workers=workers)
    threshold = Threshold(
        value=threshold_for_acceptance(score_probabilities(probs).scores, options.acceptance),
        method=("acceptance rate on the validation images" if val is not None else
                "acceptance rate on the training images (no validation images): optimistic"),
        target=options.acceptance, n_images=len(probs), chosen=now_iso())
    last = history[-1] if history else None
    metrics = {"val_accuracy": best_accuracy,
               "best_epoch": None if best_epoch is None else best_epoch + 1,
               "epochs_trained": len(history),
               "final_train_loss": None if last is None else last.loss,
               "loss_terms_per_epoch": parts_history,
               "threshold": threshold.to_dict(),
               "validation": "closed-set accuracy of the arg-max class (centre crops)"}
    recipe = pose_recipe(config, options, data, lr, factor, every, workers, device)
    saved = save_weights(config.out, model, replace(meta, recipe=recipe, metrics=metrics))
    return TrainResult(weights=Path(config.out), meta=saved, best_accuracy=best_accuracy, best_epoch=best_epoch,
                       history=history, class_names=tuple(train.class_names), n_train=len(train.paths),
                       n_val=0 if val is None else len(val.paths), skipped=data.skipped, notes=notes)


def task_step(model: ClassifierNet, optimizer: torch.optim.Optimizer, augmenter: ProgressiveAugmenter,
              triplet: BatchHardTripletLoss, reducer: MeanReducer, x: torch.Tensor, y: torch.Tensor,
              n_classes: int, variant: str) -> tuple[float, dict]:
    """One optimiser step of the task model; returns the loss and its terms."""
    aug_labels = expanded_labels(y, n_classes)
    earlier = augmenter.pick_earlier()
    current = augmenter.augment(x)
    previous = augmenter.augment(x, earlier) if earlier is not None else None
    optimizer.zero_grad(set_to_none=True)
    features, logits = model.features_and_logits(x)
    ce = reducer(classification_loss(logits, y, variant))
    aug_features = model.features(current)
    metric = reducer(triplet(torch.cat([features, aug_features]), torch.cat([y, aug_labels])))
    loss = ce + metric
    parts = {"cross_entropy": float(ce.detach()), "triplet_current": float(metric.detach())}
    if previous is not None:
        metric_pre = reducer(triplet(torch.cat([features, model.features(previous)]), torch.cat([y, aug_labels])))
        loss = loss + metric_pre
        parts["triplet_earlier"] = float(metric_pre.detach())
    loss.backward()
    optimizer.step()
    value = float(loss.detach())
    parts["task_loss"] = value
    return value, parts


def pose_recipe(config: TrainConfig, options: PoseOptions, data, lr: float, factor: float, every: int,
                workers: int, device: torch.device) -> dict:
    train, val = data.train, data.val
    return {
        "stage": "pose",
        "method": "POSE, Yang et al., CVPR 2023: closed-set classifier with progressive open-space "
                  "augmentation; rejection score 1 - max softmax",
        "loss": {"classification": "cross-entropy on the logits" if options.variant == "paper" else
                 "cross-entropy of softmax(logits) / 0.1 (released code)",
                 "metric": {"name": "batch-hard triplet", "margin": options.triplet_margin, "distance": "l2"}},
        "pose": options.to_dict(),
        "optimizer": {"name": "Adam", "weight_decay": 0.0},
        "schedule": {"type": "step", "lr": lr, "factor": factor, "every": every},
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size,
        "crop": config.crop,
        "augmentation": {"crop": "random, 8-aligned, no resampling", "jpeg_qualities": list(JPEG_QUALITIES)},
        "sampling": "classes balanced by under-sampling to the smallest, every epoch",
        "seed": config.seed,
        "data": {**data.description, "classes": list(train.class_names), "n_train": len(train.paths),
                 "n_val": 0 if val is None else len(val.paths), "n_skipped": len(data.skipped),
                 "train_files_sha256": files_digest(train), "val_files_sha256": files_digest(val),
                 "label_folders": train.label_folders()},
        "device": str(device),
        "loader_workers": workers,
        "torch_version": torch.__version__,
        "osma_version": osma_cli.__version__,
        **source_commit(),
    }
