"""The one epoch loop: metric learning, pre-training and POSE all train through ``fit``.

``fit(step, dataset, ...)`` runs the epochs of a training step (``step.Step``: ``LossStep``
for a network and a loss, ``pose.PoseStep`` for POSE): each epoch's sample order and
batches, the loader, the step on every batch, validation after every epoch, the best
network kept, and a checkpoint after every epoch for ``--resume``. It prints nothing:
progress goes to the callbacks the caller passes (the CLI draws bars from them).

Determinism. Every random choice of an epoch is drawn from generators seeded by
``(seed, epoch)``: the epoch's sample order (``epoch_indices(epoch)``), the data
augmentation (the dataset's ``set_epoch``), the DataLoader's worker seeds (an explicit
``torch.Generator``). Validation runs under ``torch.random.fork_rng`` so it consumes nothing.
The global generators (model and proxy initialisation) are saved in every checkpoint.
So on the CPU, with the same seed and settings, a run gives the same weights bit for bit,
and a run interrupted and resumed gives the same weights as one that never stopped
(the interrupted epoch restarts from its beginning, with the same draws).

Devices. On CUDA: pinned host memory and non-blocking copies. Crops travel as uint8 and
become floats in [0, 1] on the device. The step does the rest (``LossStep``: ``channels_last``,
mixed precision, and ``model.constrain()`` after every optimiser step, which re-imposes the
network's weight constraints, MISLNet's constrained convolution).

Several GPUs or machines: launch the same command with ``torchrun``. When ``WORLD_SIZE`` >
1, ``distributed.distributed`` initialises the process group (NCCL on CUDA, Gloo on the CPU)
from torchrun's environment, each process takes the GPU ``LOCAL_RANK`` (``--device cuda:N`` is
ignored there), ``LossStep`` wraps the network and the loss together in
DistributedDataParallel (so the proxies' gradients are all-reduced too), and each epoch's
sample order is shared out: process ``r`` of ``w`` takes positions ``r, r + w, ...``, truncated to the same length
everywhere. ``--batch-size`` is per process. Only rank 0 validates, writes checkpoints and
weights and reports; the others wait at a barrier. A single process (no torchrun) never
touches ``torch.distributed``.

What is the same as one process. Step ``j`` of ``w`` processes at batch size ``b`` uses
positions ``j w b ... (j + 1) w b - 1`` of the epoch's order, the very items of step ``j`` of
one process at batch size ``w b``; DDP averages the per-process mean losses' gradients, which
is the gradient of the whole batch's mean loss; and batch normalisation pools its statistics
over the processes while training (``sync_bn.GlobalBatchNorm``), so the layers see the whole
batch too. So ``torchrun --nproc-per-node w ... --batch-size b`` trains the model one process
trains with ``--batch-size`` ``w b``, to float32 rounding (the sums are added in another order);
tests/training/test_distributed.py measures how close.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from osma_cli.errors import OsmaError, UsageError
from osma_cli.training.checkpoint import (
    TrainingState,
    capture_rng,
    check_fingerprint,
    checkpoint_path,
    has_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from osma_cli.training.distributed import DistContext
from osma_cli.training.step import Step


class TrainingError(OsmaError):
    """Training cannot go on (the loss diverged, the data gives no batch, ...)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StepInfo:
    """Reported after every optimiser step (rank 0)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class EpochStats:
    """One finished epoch. ``epoch`` is 0-based; accuracies are None without validation."""

    epoch: int
    epochs: int
    loss: float
    steps: int
    images: int
    seconds: float
    images_per_second: float
    lr: float
    val_accuracy: float | None
    best_accuracy: float | None
    best_epoch: int | None
    is_best: bool

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LoopSettings:
    """How ``fit`` runs its epochs (what a step does is the step's)."""

    epochs: int
    batch_size: int
    seed: int = 0
    workers: int = 0
    steps_per_epoch: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    replace_checkpoint: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise UsageError("batch size must be at least 2 (batch normalisation needs two samples)")
        if self.workers < 0:
            raise UsageError(f"workers must be 0 or more, got {self.workers}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise UsageError(f"steps per epoch must be at least 1, got {self.steps_per_epoch}")
        if self.resume and self.checkpoint_dir is None:
            raise UsageError("resuming needs a checkpoint folder")


@dataclass
class FitResult:
    """What ``fit`` leaves: the best network's tensors and the run's history (rank 0)."""

    best_state: dict[str, Tensor]
    best_accuracy: float | None
    best_epoch: int | None
    history: list[EpochStats] = field(default_factory=list)
    resumed_from: int | None = None
    checkpoint: Path | None = None


StepCallback = Callable[[StepInfo], None]
EpochCallback = Callable[[EpochStats], None]
EpochStartCallback = Callable[[int, int, int], None]
"""Called with (epoch, epochs, steps) before an epoch's first step."""


# --------------------------------------------------------------------------- pieces


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The numpy generator of an epoch's sample order."""
    return np.random.default_rng([seed, epoch])


def epoch_batches(
    indices: np.ndarray, batch_size: int, *, rank: int = 0, world_size: int = 1, max_steps: int | None = None
) -> list[list[int]]:
    """This process's batches of an epoch: its share of ``indices``, full batches only.

    Process ``rank`` takes every ``world_size``-th position from ``rank``, cut to the same
    length on every process; an incomplete last batch is dropped (it would be too small for
    batch normalisation, and every process must take the same number of steps), except
    that a share smaller than one batch becomes a single batch when it holds two items or more.
    """
    indices = np.asarray(indices, dtype=np.int64)
    share = len(indices) // world_size
    mine = indices[rank::world_size][:share]
    n_full = share // batch_size
    batches = [mine[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]
    if n_full == 0 and share >= 2:
        batches = [mine]
    if max_steps is not None:
        batches = batches[:max_steps]
    return [[int(i) for i in batch] for batch in batches]


def to_device_batch(x: Tensor, device: torch.device) -> Tensor:
    """uint8 (B, 3, c, c) -> float [0, 1] on ``device`` (channels_last on CUDA)."""
    x = x.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.float().div_(255.0)


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of a module's state (for the best-so-far network)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- the loop


def fit(
    step: Step,
    dataset: Dataset,
    *,
    epoch_indices: Callable[[int], np.ndarray],
    settings: LoopSettings,
    ctx: DistContext,
    validate: Callable[[Any], float] | None = None,
    fingerprint: dict | None = None,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    on_epoch_start: EpochStartCallback | None = None,
) -> FitResult:
    """Train with ``step`` for ``settings.epochs`` epochs; returns the best network's state.

    ``dataset`` yields ``(uint8 (3, c, c) tensor, label)``; if it has ``set_epoch`` it is
    called before each epoch. ``epoch_indices(epoch)`` gives the epoch's sample order (the
    same on every process). ``validate(step.model)`` returns an accuracy (higher is better);
    the network with the best one is kept (the first, on ties); without it the last epoch's
    is. With ``settings.resume`` the state is read from ``settings.checkpoint_dir`` first,
    after checking that ``fingerprint`` matches the checkpoint's.
    """
    device = ctx.device
    model = step.model
    fingerprint = dict(fingerprint or {})
    step.setup(ctx, resume=settings.resume)

    start_epoch, history, resumed_from = 0, [], None
    best_accuracy: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None
    folder = settings.checkpoint_dir
    if settings.resume:
        assert folder is not None  # LoopSettings refuses resume without a checkpoint folder
        state = load_checkpoint(folder)
        check_fingerprint(folder, state.fingerprint, fingerprint)
        step.restore(state)
        best_accuracy, best_epoch, best_state = state.best_accuracy, state.best_epoch, state.best_model
        history = [EpochStats(**h) for h in state.history]
        restore_rng(state.rng)
        start_epoch = resumed_from = state.epoch
    elif (
        settings.checkpoint_dir is not None
        and not settings.replace_checkpoint
        and has_checkpoint(settings.checkpoint_dir)
    ):
        raise UsageError(
            f"{settings.checkpoint_dir} already holds a training checkpoint",
            hint=f"continue it with --resume {settings.checkpoint_dir}, start afresh over it "
            "with --force, or choose another --checkpoint-dir",
        )
    if best_state is None:
        best_state = cpu_state(model)

    checkpoint = checkpoint_path(folder) if settings.resume and folder is not None else None
    with step.running(ctx):
        for epoch in range(start_epoch, settings.epochs):
            batches = epoch_batches(
                epoch_indices(epoch),
                settings.batch_size,
                rank=ctx.rank,
                world_size=ctx.world_size,
                max_steps=settings.steps_per_epoch,
            )
            if not batches:
                raise TrainingError(
                    f"epoch {epoch + 1} has no batch: too few training images for {ctx.world_size} process(es)",
                    hint="add images, or lower --batch-size",
                )
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_sampler=batches,
                num_workers=settings.workers,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(epoch_seed(settings.seed, epoch)),
                prefetch_factor=4 if settings.workers > 0 else None,
            )
            if on_epoch_start is not None and ctx.is_main:
                on_epoch_start(epoch, settings.epochs, len(batches))
            lr = step.start_epoch(epoch)
            started = time.perf_counter()
            loss_sum, images = 0.0, 0
            for index, (crops, labels) in enumerate(loader):
                x = to_device_batch(crops, device)
                y = labels.to(device, non_blocking=True)
                value = step(x, y)
                if not math.isfinite(value):
                    raise TrainingError(
                        f"the training loss became {value} at epoch {epoch + 1}, step {index + 1}",
                        hint="lower --lr, or check the training images",
                    )
                loss_sum += value * len(labels)
                images += len(labels)
                if on_step is not None and ctx.is_main:
                    on_step(StepInfo(epoch, settings.epochs, index + 1, len(batches), value))
            seconds = time.perf_counter() - started
            step.end_epoch()
            total_loss, total_images = ctx.sum([loss_sum, float(images)])

            val_accuracy = None
            if validate is not None and ctx.is_main:
                devices = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    val_accuracy = float(validate(model))
                step.train()
            is_best = False
            if validate is None:
                is_best, best_epoch, best_state = True, epoch, cpu_state(model)
            elif val_accuracy is not None and (best_accuracy is None or val_accuracy > best_accuracy):
                is_best, best_accuracy, best_epoch, best_state = True, val_accuracy, epoch, cpu_state(model)
            stats = EpochStats(
                epoch=epoch,
                epochs=settings.epochs,
                loss=total_loss / max(total_images, 1.0),
                steps=len(batches),
                images=int(total_images),
                seconds=seconds,
                images_per_second=total_images / seconds if seconds > 0 else 0.0,
                lr=lr,
                val_accuracy=val_accuracy,
                best_accuracy=best_accuracy,
                best_epoch=best_epoch,
                is_best=is_best,
            )
            history.append(stats)
            if ctx.is_main and settings.checkpoint_dir is not None:
                checkpoint = save_checkpoint(
                    settings.checkpoint_dir,
                    TrainingState(
                        epoch=epoch + 1,
                        **step.checkpoint_state(),
                        fingerprint=fingerprint,
                        best_model=best_state,
                        best_accuracy=best_accuracy,
                        best_epoch=best_epoch,
                        history=[h.to_dict() for h in history],
                        rng=capture_rng(),
                    ),
                )
            if on_epoch is not None and ctx.is_main:
                on_epoch(stats)
            ctx.barrier()

    return FitResult(
        best_state=best_state,
        best_accuracy=best_accuracy,
        best_epoch=best_epoch,
        history=history,
        resumed_from=resumed_from,
        checkpoint=checkpoint,
    )
