"""What one training step is: the protocol ``loop.fit`` drives, and ``LossStep`` (a network and a loss).

``fit`` owns the epochs (sample order, batches, loaders, validation, the best network,
checkpoints, the figures it reports); a step owns what happens to one batch: the forward
pass, the loss, the optimiser and its schedule. Three trainings share ``fit`` this way:

- metric learning (``metric.py``) and pre-training (``pretrain.py``): ``LossStep``, a network
  and a loss that owns its parameters (ProxyNCA++'s proxies, the pre-training classifier
  head), AdamW on a step-decay schedule, mixed precision on CUDA, DDP under torchrun;
- POSE (``pose.py``): ``PoseStep``, which also trains an augmentation model per epoch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor, nn

from osma_cli.defaults import DEFAULT_WEIGHT_DECAY, PROXY_LR_FACTOR
from osma_cli.errors import UsageError
from osma_cli.nets import EmbeddingNet
from osma_cli.runtime import autocast_context
from osma_cli.training.checkpoint import TrainingState
from osma_cli.training.distributed import DistContext
from osma_cli.training.losses import ClassLoss, MeanReducer
from osma_cli.training.schedule import StepDecay, make_optimizer
from osma_cli.training.sync_bn import synchronised_batch_norm


class Step(Protocol):
    """One batch's training, as ``loop.fit`` drives it.

    ``model`` is the network ``fit`` validates and keeps the best state of. ``fit`` calls
    ``setup`` once (before any resume), ``running`` around all the epochs, ``start_epoch``
    before each epoch's first batch (it sets the learning rate, which it returns, and the
    train mode), the step itself on every batch (float crops in [0, 1] on the device and
    their labels; it returns the batch's mean loss after the optimiser step), ``end_epoch``
    after the last batch, and ``train`` after validation. ``checkpoint_state`` and
    ``restore`` carry what ``--resume`` needs; a step that cannot be resumed refuses in
    ``setup``.
    """

    @property
    def model(self) -> nn.Module: ...

    def setup(self, ctx: DistContext, *, resume: bool) -> None: ...

    def running(self, ctx: DistContext) -> contextlib.AbstractContextManager: ...

    def start_epoch(self, epoch: int) -> float: ...

    def __call__(self, x: Tensor, y: Tensor) -> float: ...

    def end_epoch(self) -> None: ...

    def train(self) -> None: ...

    def checkpoint_state(self) -> dict: ...

    def restore(self, state: TrainingState) -> None: ...


class BatchExpander(Protocol):
    """Something that adds images (and their labels) to each training batch."""

    def start_epoch(self) -> None: ...

    def expand(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]: ...

    def end_epoch(self) -> None: ...


class TrainStep(nn.Module):
    """Network and loss as one module: what DistributedDataParallel wraps, so proxies sync too."""

    def __init__(self, model: EmbeddingNet, loss: ClassLoss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.loss(self.model(x), labels)


def uses_grad_scaler(device: torch.device, mixed_precision: bool) -> bool:
    """float16 autocast needs loss scaling; bfloat16 (and the CPU) do not."""
    return device.type == "cuda" and mixed_precision and not torch.cuda.is_bf16_supported()


class LossStep:
    """``loss(model(x), y)``, one AdamW step, then ``model.constrain()``: metric learning and pre-training.

    The loss owns its parameters (proxies, a classifier head); they get ``loss_lr_factor``
    times the network's learning rate and no weight decay (``schedule.param_groups``). On
    CUDA: ``channels_last``, mixed precision through ``runtime.autocast_context`` (bfloat16
    where supported; float16 with a gradient scaler otherwise). Under torchrun the network and
    the loss are wrapped together in DistributedDataParallel (so the proxies' gradients are
    all-reduced too) with batch normalisation pooled over the processes (``sync_bn``).

    ``expander`` (optional) adds images to every batch before the forward pass (POSE's
    augmentation models as extra classes, ``osma train --open-space-aug``); it keeps state
    the checkpoint does not hold, so a step with one runs in a single process and cannot be
    resumed.
    """

    def __init__(
        self,
        model: EmbeddingNet,
        loss: ClassLoss,
        schedule: StepDecay,
        *,
        weight_decay: float = DEFAULT_WEIGHT_DECAY,
        loss_lr_factor: float = PROXY_LR_FACTOR,
        mixed_precision: bool = True,
        expander: BatchExpander | None = None,
    ) -> None:
        self.model = model
        self.loss = loss
        self.schedule = schedule
        self.weight_decay = weight_decay
        self.loss_lr_factor = loss_lr_factor
        self.mixed_precision = mixed_precision
        self.expander = expander
        self.reducer = MeanReducer()

    def setup(self, ctx: DistContext, *, resume: bool) -> None:
        if self.expander is not None and (resume or ctx.is_distributed):
            raise UsageError("a batch expander (--open-space-aug) works in a single process and without --resume")
        self.device = ctx.device
        self.module = TrainStep(self.model, self.loss).to(self.device)
        if self.device.type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(
            self.model, self.loss, self.schedule, weight_decay=self.weight_decay, loss_lr_factor=self.loss_lr_factor
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=uses_grad_scaler(self.device, self.mixed_precision))
        self.runner: nn.Module = self.module

    @contextlib.contextmanager
    def running(self, ctx: DistContext) -> Iterator[None]:
        with synchronised_batch_norm(self.module, enabled=ctx.is_distributed):
            if ctx.is_distributed:
                from torch.nn.parallel import DistributedDataParallel

                device = self.device
                self.runner = DistributedDataParallel(
                    self.module, device_ids=[device.index] if device.type == "cuda" else None
                )
            try:
                yield
            finally:
                self.runner = self.module

    def start_epoch(self, epoch: int) -> float:
        lr = self.schedule.apply(self.optimizer, epoch)
        self.module.train()
        if self.expander is not None:
            self.expander.start_epoch()
        return lr

    def __call__(self, x: Tensor, y: Tensor) -> float:
        if self.expander is not None:
            x, y = self.expander.expand(self.model, x, y)
        with autocast_context(self.device, self.mixed_precision):
            per_item = self.runner(x, y)
        value_t = self.reducer(per_item)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(value_t).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.model.constrain()
        return float(value_t.detach())

    def end_epoch(self) -> None:
        if self.expander is not None:
            self.expander.end_epoch()

    def train(self) -> None:
        self.module.train()

    def checkpoint_state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }

    def restore(self, state: TrainingState) -> None:
        self.model.load_state_dict(state.model)
        self.loss.load_state_dict(state.loss)
        self.optimizer.load_state_dict(state.optimizer)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)
