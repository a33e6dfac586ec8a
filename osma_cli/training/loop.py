"""The epoch loop shared by pre-training and metric learning.

``fit`` trains a network and a loss (which owns its parameters: proxies or a classifier
head) with AdamW on a step-decay schedule, validates after every epoch, keeps the best
network, and writes a checkpoint after every epoch for ``--resume``. It prints nothing:
progress goes to the callbacks the caller passes (the CLI draws bars from them).

Determinism. Every random choice of an epoch is drawn from generators seeded by
``(seed, epoch)``: the epoch's sample order (``epoch_indices(epoch)``), the data
augmentation (the dataset's ``set_epoch``), the DataLoader's worker seeds (an explicit
``torch.Generator``). Validation runs under ``torch.random.fork_rng`` so it consumes nothing.
The global generators (model and proxy initialisation) are saved in every checkpoint.
So on the CPU, with the same seed and settings, a run gives the same weights bit for bit,
and a run interrupted and resumed gives the same weights as one that never stopped
(the interrupted epoch restarts from its beginning, with the same draws).

Devices. On CUDA: pinned host memory and non-blocking copies, ``channels_last``, mixed
precision through ``runtime.autocast_context`` (bfloat16 where supported; float16 with a
gradient scaler otherwise). Crops travel as uint8 and become floats in [0, 1] on the device.
After every optimiser step ``model.constrain()`` re-imposes the network's weight
constraints (MISLNet's constrained convolution).

Several GPUs or machines: launch the same command with ``torchrun``. When ``WORLD_SIZE`` >
1, ``distributed`` initialises the process group (NCCL on CUDA, Gloo on the CPU) from
torchrun's environment, each process takes the GPU ``LOCAL_RANK`` (``--device cuda:N`` is
ignored there), the network and the loss are wrapped together in DistributedDataParallel
(so the proxies' gradients are all-reduced too), and each epoch's sample order is shared
out: process ``r`` of ``w`` takes positions ``r, r + w, ...``, truncated to the same length
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

import contextlib
import dataclasses
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from osma_cli.errors import OsmaError, UsageError
from osma_cli.nets import EmbeddingNet
from osma_cli.runtime import autocast_context, configure_numerics, resolve_device
from osma_cli.training.checkpoint import (TrainingState, capture_rng, check_fingerprint, checkpoint_path,
                                          has_checkpoint,
                                          load_checkpoint, restore_rng, save_checkpoint)
from osma_cli.training.losses import ClassLoss, MeanReducer
from osma_cli.training.schedule import DEFAULT_WEIGHT_DECAY, PROXY_LR_FACTOR, StepDecay, make_optimizer
from osma_cli.training.sync_bn import synchronised_batch_norm


class TrainingError(OsmaError):
    """Training cannot go on (the loss diverged, the data gives no batch, ...)."""


# --------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its device, and its rank among ``world_size`` processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over all processes (identity in a single process)."""
        if not self.is_distributed:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()


@contextlib.contextmanager
def distributed(device_spec: str = "auto") -> Iterator[DistContext]:
    """The process's context: one process unless launched by torchrun with ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield DistContext(device=resolve_device(device_spec))
        return
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    configure_numerics()
    if device_spec.strip().lower() != "cpu" and torch.cuda.is_available():
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend)
    try:
        yield DistContext(device=device, rank=rank, world_size=world, local_rank=local)
    finally:
        if created:
            dist.destroy_process_group()


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
    """How ``fit`` runs (what it trains is passed separately)."""

    epochs: int
    batch_size: int
    seed: int = 0
    workers: int = 0
    mixed_precision: bool = True
    steps_per_epoch: int | None = None
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    loss_lr_factor: float = PROXY_LR_FACTOR
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


class BatchExpander(Protocol):
    """Something that adds images (and their labels) to each training batch."""

    def start_epoch(self) -> None: ...

    def expand(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...

    def end_epoch(self) -> None: ...


StepCallback = Callable[[StepInfo], None]
EpochCallback = Callable[[EpochStats], None]
EpochStartCallback = Callable[[int, int, int], None]
"""Called with (epoch, epochs, steps) before an epoch's first step."""


# --------------------------------------------------------------------------- pieces

class TrainStep(nn.Module):
    """Network and loss as one module: what DistributedDataParallel wraps, so proxies sync too."""

    def __init__(self, model: EmbeddingNet, loss: ClassLoss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.loss(self.model(x), labels)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The numpy generator of an epoch's sample order."""
    return np.random.default_rng([seed, epoch])


def epoch_batches(indices: np.ndarray, batch_size: int, *, rank: int = 0, world_size: int = 1,
                  max_steps: int | None = None) -> list[list[int]]:
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
    batches = [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]
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


def uses_grad_scaler(device: torch.device, mixed_precision: bool) -> bool:
    """float16 autocast needs loss scaling; bfloat16 (and the CPU) do not."""
    return device.type == "cuda" and mixed_precision and not torch.cuda.is_bf16_supported()


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of a module's state (for the best-so-far network)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class Network:
    """A network to train and where it came from."""

    model: EmbeddingNet
    architecture: str
    arch_kwargs: dict
    embedding_dim: int
    init_sha256: str | None = None
    init_record: dict | None = None


def build_network(*, arch: str | None, arch_kwargs: dict | None = None, embedding_dim: int | None = None,
                  init: Path | None = None, crop: int | None = None) -> Network:
    """The registry's ``arch`` freshly initialised, or the network of ``init`` weights (in train mode).

    With ``init``, the architecture, its keywords and the embedding size are the file's; any
    of them also given must agree. ``crop`` is checked against the network's minimum input.
    """
    from osma_cli.nets import get_model
    from osma_cli.weights import load_weights

    arch_kwargs = dict(arch_kwargs or {})
    if "embedding_dim" in arch_kwargs:
        raise UsageError("give the embedding size as embedding_dim, not inside arch_kwargs")
    if init is not None:
        model, meta = load_weights(init)
        if meta.is_classifier:
            raise UsageError(f"--init {init} is a closed-set classifier ({meta.architecture})",
                             hint="start from embedding weights (e.g. from `osma pretrain`), or from scratch")
        clashes = [f"{name} {given!r} (the file has {found!r})" for name, given, found in
                   (("--arch", arch, meta.architecture), ("--embedding-dim", embedding_dim, meta.embedding_dim))
                   if given is not None and given != found]
        if arch_kwargs and arch_kwargs != meta.arch_kwargs:
            clashes.append(f"architecture options {arch_kwargs!r} (the file has {meta.arch_kwargs!r})")
        if clashes:
            raise UsageError(f"--init {init} does not match: {'; '.join(clashes)}",
                             hint="leave these options out: they come from the --init weights")
        record = {"path": str(init), "sha256": meta.sha256, "architecture": meta.architecture,
                  "stage": meta.recipe.get("stage"), "created": meta.created}
        network = Network(model=model, architecture=meta.architecture, arch_kwargs=dict(meta.arch_kwargs),
                          embedding_dim=meta.embedding_dim, init_sha256=meta.sha256, init_record=record)
    else:
        name = arch or "mislnet"
        kwargs = dict(arch_kwargs)
        if embedding_dim is not None:
            kwargs["embedding_dim"] = embedding_dim
        model = get_model(name, **kwargs)
        network = Network(model=model, architecture=name, arch_kwargs=arch_kwargs,
                          embedding_dim=model.embedding_dim)
    if crop is not None and crop < network.model.min_input_size:
        raise UsageError(f"--crop {crop} is below {network.architecture}'s minimum input "
                         f"({network.model.min_input_size} pixels)", hint="use a larger --crop")
    network.model.train()
    return network


def source_commit() -> dict:
    """The git commit of the osma source in use, when it runs from a checkout."""
    import osma_cli

    root = Path(osma_cli.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {}
    return {"osma_commit": head.stdout.strip(), "osma_tree_dirty": bool(status.stdout.strip())}


# --------------------------------------------------------------------------- the loop

def fit(model: EmbeddingNet, loss: ClassLoss, dataset: Dataset, *,
        epoch_indices: Callable[[int], np.ndarray], schedule: StepDecay, settings: LoopSettings,
        ctx: DistContext, validate: Callable[[EmbeddingNet], float] | None = None,
        fingerprint: dict | None = None, expander: "BatchExpander | None" = None,
        on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
        on_epoch_start: EpochStartCallback | None = None) -> FitResult:
    """Train ``model`` with ``loss`` for ``settings.epochs`` epochs; returns the best network's state.

    ``dataset`` yields ``(uint8 (3, c, c) tensor, label)``; if it has ``set_epoch`` it is
    called before each epoch. ``epoch_indices(epoch)`` gives the epoch's sample order (the
    same on every process). ``validate(model)`` returns an accuracy (higher is better); the
    network with the best one is kept (the first, on ties); without it the last epoch's is.
    With ``settings.resume`` the state is read from ``settings.checkpoint_dir`` first, after
    checking that ``fingerprint`` matches the checkpoint's.

    ``expander`` (optional) adds images to every batch before the forward pass (POSE's
    augmentation models as extra classes, ``osma train --open-space-aug``); it is told when
    each epoch starts and ends. It keeps state the checkpoint does not hold, so runs that
    use it cannot be resumed, and it runs in a single process.
    """
    if expander is not None and (settings.resume or ctx.is_distributed):
        raise UsageError("a batch expander (--open-space-aug) works in a single process and without --resume")
    device = ctx.device
    fingerprint = dict(fingerprint or {})
    step_module = TrainStep(model, loss).to(device)
    if device.type == "cuda":
        step_module = step_module.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, loss, schedule, weight_decay=settings.weight_decay,
                               loss_lr_factor=settings.loss_lr_factor)
    scaler = torch.amp.GradScaler("cuda", enabled=uses_grad_scaler(device, settings.mixed_precision))
    reducer = MeanReducer()

    start_epoch, history, resumed_from = 0, [], None
    best_accuracy: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None
    if settings.resume:
        state = load_checkpoint(settings.checkpoint_dir)
        check_fingerprint(settings.checkpoint_dir, state.fingerprint, fingerprint)
        model.load_state_dict(state.model)
        loss.load_state_dict(state.loss)
        optimizer.load_state_dict(state.optimizer)
        if state.scaler and scaler.is_enabled():
            scaler.load_state_dict(state.scaler)
        best_accuracy, best_epoch, best_state = state.best_accuracy, state.best_epoch, state.best_model
        history = [EpochStats(**h) for h in state.history]
        restore_rng(state.rng)
        start_epoch = resumed_from = state.epoch
    elif (settings.checkpoint_dir is not None and not settings.replace_checkpoint
          and has_checkpoint(settings.checkpoint_dir)):
        raise UsageError(f"{settings.checkpoint_dir} already holds a training checkpoint",
                         hint=f"continue it with --resume {settings.checkpoint_dir}, start afresh over it "
                              "with --force, or choose another --checkpoint-dir")
    if best_state is None:
        best_state = cpu_state(model)

    checkpoint = (checkpoint_path(settings.checkpoint_dir) if settings.resume else None)
    with synchronised_batch_norm(step_module, enabled=ctx.is_distributed):
        runner: nn.Module = step_module
        if ctx.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(step_module,
                                             device_ids=[device.index] if device.type == "cuda" else None)
        for epoch in range(start_epoch, settings.epochs):
            lr = schedule.apply(optimizer, epoch)
            batches = epoch_batches(epoch_indices(epoch), settings.batch_size, rank=ctx.rank,
                                    world_size=ctx.world_size, max_steps=settings.steps_per_epoch)
            if not batches:
                raise TrainingError(f"epoch {epoch + 1} has no batch: too few training images "
                                    f"for {ctx.world_size} process(es)",
                                    hint="add images, or lower --batch-size")
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_sampler=batches, num_workers=settings.workers,
                                pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(epoch_seed(settings.seed, epoch)),
                                prefetch_factor=4 if settings.workers > 0 else None)
            if on_epoch_start is not None and ctx.is_main:
                on_epoch_start(epoch, settings.epochs, len(batches))
            step_module.train()
            if expander is not None:
                expander.start_epoch()
            started = time.perf_counter()
            loss_sum, images = 0.0, 0
            for step, (crops, labels) in enumerate(loader):
                x = to_device_batch(crops, device)
                y = labels.to(device, non_blocking=True)
                if expander is not None:
                    x, y = expander.expand(model, x, y)
                with autocast_context(device, settings.mixed_precision):
                    per_item = runner(x, y)
                value_t = reducer(per_item)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(value_t).backward()
                scaler.step(optimizer)
                scaler.update()
                model.constrain()
                value = float(value_t.detach())
                if not math.isfinite(value):
                    raise TrainingError(f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}",
                                        hint="lower --lr, or check the training images")
                loss_sum += value * len(labels)
                images += len(labels)
                if on_step is not None and ctx.is_main:
                    on_step(StepInfo(epoch, settings.epochs, step + 1, len(batches), value))
            seconds = time.perf_counter() - started
            if expander is not None:
                expander.end_epoch()
            total_loss, total_images = ctx.sum([loss_sum, float(images)])

            val_accuracy = None
            if validate is not None and ctx.is_main:
                devices = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    val_accuracy = float(validate(model))
                step_module.train()
            is_best = False
            if validate is None:
                is_best, best_epoch, best_state = True, epoch, cpu_state(model)
            elif val_accuracy is not None and (best_accuracy is None or val_accuracy > best_accuracy):
                is_best, best_accuracy, best_epoch, best_state = True, val_accuracy, epoch, cpu_state(model)
            stats = EpochStats(epoch=epoch, epochs=settings.epochs, loss=total_loss / max(total_images, 1.0),
                               steps=len(batches), images=int(total_images), seconds=seconds,
                               images_per_second=total_images / seconds if seconds > 0 else 0.0, lr=lr,
                               val_accuracy=val_accuracy, best_accuracy=best_accuracy, best_epoch=best_epoch,
                               is_best=is_best)
            history.append(stats)
            if ctx.is_main and settings.checkpoint_dir is not None:
                checkpoint = save_checkpoint(settings.checkpoint_dir, TrainingState(
                    epoch=epoch + 1, model=model.state_dict(), loss=loss.state_dict(),
                    optimizer=optimizer.state_dict(), fingerprint=fingerprint, best_model=best_state,
                    best_accuracy=best_accuracy, best_epoch=best_epoch, history=[h.to_dict() for h in history],
                    scaler=scaler.state_dict() if scaler.is_enabled() else None, rng=capture_rng()))
            if on_epoch is not None and ctx.is_main:
                on_epoch(stats)
            ctx.barrier()

    return FitResult(best_state=best_state, best_accuracy=best_accuracy, best_epoch=best_epoch,
                     history=history, resumed_from=resumed_from, checkpoint=checkpoint)
