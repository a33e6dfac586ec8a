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

The epochs are the shared loop's (``loop.fit``): steps 1 and 2 are ``PoseStep``, the
training step it drives, and step 3's validation is ``validation.ClosedSetValidator``. The
schedule is ``schedule.pose_schedule`` (a ``StepDecay``, constant by default).

Data handling is the metric learning's (``data.load_data``): folders or POSE annotation
files, the same balanced under-sampling, random grid-aligned crops with JPEG re-compression,
never a resampled pixel. What POSE's released code does differently, and which of its
behaviours stay available (``config.PoseOptions.variant``), is in ``docs/pose.md``.

Single process, float32; no ``--resume`` (the augmentation models would have to be
checkpointed too): a POSE run is short next to metric learning.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import cast

import torch
from torch import Tensor
from torch.nn import functional as F

from osma_cli.attribution import score_probabilities
from osma_cli.calibration import threshold_for_acceptance
from osma_cli.data import default_workers
from osma_cli.data.training_sets import balanced_indices
from osma_cli.defaults import POSE_EMBEDDING_DIM
from osma_cli.errors import UsageError
from osma_cli.nets import ClassifierNet, get_model
from osma_cli.references import Threshold, now_iso
from osma_cli.runtime import resolve_device, seed_everything
from osma_cli.training.checkpoint import TrainingState
from osma_cli.training.config import PoseOptions, TrainConfig, TrainResult, check_output_paths
from osma_cli.training.data import TrainingData, files_digest, load_data
from osma_cli.training.distributed import DistContext
from osma_cli.training.loop import EpochCallback, EpochStartCallback, StepCallback, epoch_rng, fit
from osma_cli.training.losses import BatchHardTripletLoss, MeanReducer
from osma_cli.training.pose_aug import ProgressiveAugmenter, expanded_labels
from osma_cli.training.provenance import environment
from osma_cli.training.schedule import StepDecay, pose_schedule
from osma_cli.training.validation import ClosedSetValidator, validation_probabilities
from osma_cli.weights import WeightsMeta, save_weights

POSE_ARCH = "pose_dct_cnn"
CODE_SOFTMAX_TEMPERATURE = 0.1
"""The released code's ``temp``: its loss is cross-entropy of softmax(logits) / 0.1."""


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, variant: str) -> torch.Tensor:
    """Per-item cross-entropy: on the logits (paper), or on softmax(logits) / 0.1 (released code)."""
    logits = logits.float()
    if variant == "released-code":
        logits = torch.softmax(logits, dim=1) / CODE_SOFTMAX_TEMPERATURE
    return F.cross_entropy(logits, labels.long(), reduction="none")


def check_pose_config(config: TrainConfig) -> None:
    """What metric learning accepts but POSE training does not."""
    refused = [
        (config.init is not None, "--init"),
        (config.refs_out is not None, "--refs-out"),
        (config.resume is not None, "--resume"),
        (config.arch not in (None, POSE_ARCH), f"--arch {config.arch}"),
    ]
    named = [name for bad, name in refused if bad]
    if named:
        raise UsageError(
            f"--method pose does not take {', '.join(named)}",
            hint=f"POSE trains its own classifier ({POSE_ARCH}) from scratch; its class names and "
            "threshold are in the weights, so no reference store is needed",
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--method pose runs in a single process", hint="launch it without torchrun")


class PoseStep:
    """One POSE batch (steps 2a and 2b above), as ``loop.fit`` drives it (``step.Step``).

    Each epoch starts a new augmentation model and ends by freezing it. The loss terms of
    every batch are averaged over the batches that have them (a term can be missing from
    some steps: the warm-up's, the first epoch's earlier-model terms) into ``terms``, one
    dict per epoch. Single process, float32, no checkpoint (the augmentation models would
    have to be saved too).
    """

    def __init__(
        self,
        model: ClassifierNet,
        schedule: StepDecay,
        augmenter: ProgressiveAugmenter,
        *,
        n_classes: int,
        variant: str,
        triplet_margin: float,
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.augmenter = augmenter
        self.n_classes = n_classes
        self.variant = variant
        self.optimizer = torch.optim.Adam(model.parameters(), lr=schedule.lr)
        self.triplet = BatchHardTripletLoss(margin=triplet_margin)
        self.reducer = MeanReducer()
        self.terms: list[dict] = []
        self._epoch = 0
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def setup(self, ctx: DistContext, *, resume: bool) -> None:
        if resume or ctx.is_distributed:
            raise UsageError("--method pose runs in a single process and cannot --resume")

    def running(self, ctx: DistContext) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def start_epoch(self, epoch: int) -> float:
        lr = self.schedule.apply(self.optimizer, epoch)
        self._epoch, self._sums, self._counts = epoch, {}, {}
        self.augmenter.start_epoch()
        self.model.train()
        return lr

    def __call__(self, x: Tensor, y: Tensor) -> float:
        parts = self.augmenter.train_step(self.model, self.model.features, x)
        value, task_parts = task_step(
            self.model, self.optimizer, self.augmenter, self.triplet, self.reducer, x, y, self.n_classes, self.variant
        )
        parts.update(task_parts)
        for key, v in parts.items():
            self._sums[key] = self._sums.get(key, 0.0) + v * len(y)
            self._counts[key] = self._counts.get(key, 0) + len(y)
        return value

    def end_epoch(self) -> None:
        self.augmenter.end_epoch()
        means = {k: v / self._counts[k] for k, v in self._sums.items()}
        self.terms.append({"epoch": self._epoch + 1, **{k: round(v, 6) for k, v in means.items()}})

    def train(self) -> None:
        self.model.train()

    def checkpoint_state(self) -> dict:
        raise UsageError("a POSE run is not checkpointed")

    def restore(self, state: TrainingState) -> None:
        raise UsageError("a POSE run cannot be resumed")


DEFAULT_OPTIONS = PoseOptions()


def train_pose(
    config: TrainConfig,
    options: PoseOptions = DEFAULT_OPTIONS,
    *,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    on_epoch_start: EpochStartCallback | None = None,
) -> TrainResult:
    """Train POSE's task model with progressive augmentation models; write the best classifier."""
    check_pose_config(config)
    check_output_paths(config.out, force=config.force)
    if config.batch_size < 2:
        raise UsageError("batch size must be at least 2 (batch normalisation needs two samples)")
    schedule = pose_schedule(lr=config.lr, factor=config.lr_decay, every=config.decay_every)
    workers = default_workers() if config.workers is None else config.workers
    device = resolve_device(config.device)
    seed_everything(config.seed)
    data = load_data(config)
    train, val = data.train, data.val
    n_classes = len(train.class_names)
    if n_classes < 2:
        raise UsageError("POSE needs at least 2 training classes")
    embedding_dim = POSE_EMBEDDING_DIM if config.embedding_dim is None else config.embedding_dim
    arch_kwargs = {"width": options.width, "dropout": options.dropout}
    model = cast(
        ClassifierNet, get_model(POSE_ARCH, n_classes=n_classes, embedding_dim=embedding_dim, **arch_kwargs).to(device)
    )
    meta = WeightsMeta(
        architecture=POSE_ARCH,
        embedding_dim=embedding_dim,
        crop_size=config.crop,
        l2_normalize=False,
        arch_kwargs=arch_kwargs,
        kind="classifier",
        class_names=list(train.class_names),
    )
    step = PoseStep(
        model,
        schedule,
        ProgressiveAugmenter(options.resolved_aug(), device, rng=random.Random(config.seed)),
        n_classes=n_classes,
        variant=options.variant,
        triplet_margin=options.triplet_margin,
    )
    notes = list(data.notes)
    validator = None
    if val is not None:
        validator = ClosedSetValidator(val, meta, device, batch_size=config.batch_size, workers=workers)
    else:
        notes.append("no validation images: the last epoch's network is kept")
    settings = config.loop_settings(workers, checkpoints=False)
    labels = train.labels
    result = fit(
        step,
        data.dataset,
        epoch_indices=lambda epoch: balanced_indices(labels, epoch_rng(config.seed, epoch)),
        settings=settings,
        ctx=DistContext(device=device),
        validate=validator,
        on_step=on_step,
        on_epoch=on_epoch,
        on_epoch_start=on_epoch_start,
    )
    history, best_accuracy, best_epoch = result.history, result.best_accuracy, result.best_epoch

    model.load_state_dict(result.best_state)
    model.eval()
    threshold_files = val if val is not None else train
    probs, _ = validation_probabilities(
        model, meta, threshold_files, device, batch_size=config.batch_size, workers=workers
    )
    threshold = Threshold(
        value=threshold_for_acceptance(score_probabilities(probs).scores, options.acceptance),
        method=(
            "acceptance rate on the validation images"
            if val is not None
            else "acceptance rate on the training images (no validation images): optimistic"
        ),
        target=options.acceptance,
        n_images=len(probs),
        chosen=now_iso(),
    )
    last = history[-1] if history else None
    metrics = {
        "val_accuracy": best_accuracy,
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "epochs_trained": len(history),
        "final_train_loss": None if last is None else last.loss,
        "loss_terms_per_epoch": step.terms,
        "threshold": threshold.to_dict(),
        "validation": "closed-set accuracy of the arg-max class (centre crops)",
    }
    recipe = pose_recipe(config, options, data, schedule, workers, device)
    saved = save_weights(config.out, model, replace(meta, recipe=recipe, metrics=metrics))
    return TrainResult(
        weights=Path(config.out),
        meta=saved,
        best_accuracy=best_accuracy,
        best_epoch=best_epoch,
        history=history,
        class_names=tuple(train.class_names),
        n_train=len(train.paths),
        n_val=0 if val is None else len(val.paths),
        skipped=data.skipped,
        notes=notes,
    )


def task_step(
    model: ClassifierNet,
    optimizer: torch.optim.Optimizer,
    augmenter: ProgressiveAugmenter,
    triplet: BatchHardTripletLoss,
    reducer: MeanReducer,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    variant: str,
) -> tuple[float, dict]:
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


def pose_recipe(
    config: TrainConfig,
    options: PoseOptions,
    data: TrainingData,
    schedule: StepDecay,
    workers: int,
    device: torch.device,
) -> dict:
    train, val = data.train, data.val
    return {
        "stage": "pose",
        "method": "POSE, Yang et al., CVPR 2023: closed-set classifier with progressive open-space "
        "augmentation; rejection score 1 - max softmax",
        "loss": {
            "classification": "cross-entropy on the logits"
            if options.variant == "paper"
            else "cross-entropy of softmax(logits) / 0.1 (released code)",
            "metric": {"name": "batch-hard triplet", "margin": options.triplet_margin, "distance": "l2"},
        },
        "pose": options.to_dict(),
        "optimizer": {"name": "Adam", "weight_decay": 0.0},
        "schedule": schedule.to_dict(),
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size,
        "crop": config.crop,
        "augmentation": config.train_transform().describe(),
        "sampling": "classes balanced by under-sampling to the smallest, every epoch",
        "seed": config.seed,
        "data": {
            **data.description,
            "classes": list(train.class_names),
            "n_train": len(train.paths),
            "n_val": 0 if val is None else len(val.paths),
            "n_skipped": len(data.skipped),
            "train_files_sha256": files_digest(train),
            "val_files_sha256": files_digest(val),
            "label_folders": train.label_folders(),
        },
        **environment(device, workers),
    }
