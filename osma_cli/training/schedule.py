"""Learning-rate schedules (step decay, per epoch) and the optimiser's parameter groups.

Paper defaults (Fang, Nguyen & Stamm, BMVC 2023; docs/training.md), all with AdamW:

- camera-model pre-training: lr 1e-3, x0.65 every 3 epochs (``PRETRAIN``);
- metric learning from pre-trained weights: lr 1e-4, x0.6 every 2 epochs, 30 epochs
  (``METRIC_FROM_INIT``); from scratch: lr 7e-4, same decay (``METRIC_FROM_SCRATCH``);
- POSE's task model (Yang et al., CVPR 2023; Adam): lr 1e-4, constant (``POSE``).

The numbers are names in ``osma_cli/defaults.py``, which the CLI's help texts read too.

The schedule has no state of its own: the learning rate of epoch ``e`` (0-based) is
``lr * factor ** (e // every)``, times the group's ``lr_scale``. ``StepDecay.apply`` sets it at
the start of every epoch, so a resumed run needs nothing but the epoch number to be on
the same schedule as one that never stopped.

Proxies on a faster learning rate ("fast moving proxies", Teh et al., ECCV 2020). The
official ProxyNCA++ configs (github euwern/proxynca_pp, ``config/*.json``) give the proxies
a learning rate 1e4 to 1e5 times the network's (CUB, In-Shop: 4e2 vs 4e-3; SOP: 4e1 x 6 vs
4e-3 x 6), but with ``torch.optim.Adam(eps=1.0)``: with an epsilon of 1 and gradients far
below 1, Adam's step is about ``lr x gradient`` (momentum SGD), and proxy gradients are tiny,
which is the "small gradient issue" the factor compensates. osma uses AdamW with the usual
epsilon (1e-8), whose steps are about ``lr`` per coordinate whatever the gradient's size, so
that factor does not carry over (1e5 x 1e-4 would move every proxy coordinate by ~10 a
step). We use the factor that proxy losses use with AdamW at the usual epsilon: **100**
(Kim et al.'s official Proxy Anchor code, CVPR 2020: proxies at ``lr x 100``, AdamW, lr 1e-4),
and no weight decay on proxies (as in both codes: decay would shrink them and raise their
effective rate). ``PROXY_LR_FACTOR`` is overridable (``osma train --proxy-lr-factor``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from osma_cli.defaults import (
    DEFAULT_WEIGHT_DECAY,
    METRIC_DECAY_EVERY,
    METRIC_LR_DECAY,
    METRIC_LR_FROM_INIT,
    METRIC_LR_FROM_SCRATCH,
    POSE_DECAY_EVERY,
    POSE_LR,
    POSE_LR_DECAY,
    PRETRAIN_DECAY_EVERY,
    PRETRAIN_LR,
    PRETRAIN_LR_DECAY,
    PROXY_LR_FACTOR,
)
from osma_cli.errors import UsageError

__all__ = [
    "METRIC_FROM_INIT",
    "METRIC_FROM_SCRATCH",
    "POSE",
    "PRETRAIN",
    "PROXY_LR_FACTOR",
    "StepDecay",
    "make_optimizer",
    "metric_schedule",
    "param_groups",
    "pose_schedule",
    "pretrain_schedule",
]


@dataclass(frozen=True)
class StepDecay:
    """``lr * factor ** (epoch // every)``: the paper's schedules."""

    lr: float
    factor: float
    every: int

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.lr < float("inf")):
            raise UsageError(f"learning rate must be a positive number, got {self.lr}")
        if not (0 < self.factor <= 1):
            raise UsageError(f"learning-rate decay factor must be in (0, 1], got {self.factor}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise UsageError(f"decay interval must be a positive number of epochs, got {self.every!r}")

    def lr_at(self, epoch: int) -> float:
        """Base learning rate during epoch ``epoch`` (0-based)."""
        return self.lr * self.factor ** (epoch // self.every)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Set every group's lr for ``epoch`` (``lr_at(epoch) x group['lr_scale']``); returns the base lr."""
        base = self.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = base * group.get("lr_scale", 1.0)
        return base

    def to_dict(self) -> dict:
        return {"type": "step", "lr": self.lr, "factor": self.factor, "every": self.every}

    def overridden(
        self, *, lr: float | None = None, factor: float | None = None, every: int | None = None
    ) -> StepDecay:
        """This schedule with any part given replaced (``None``: this schedule's)."""
        return StepDecay(
            lr=self.lr if lr is None else lr,
            factor=self.factor if factor is None else factor,
            every=self.every if every is None else every,
        )


PRETRAIN = StepDecay(lr=PRETRAIN_LR, factor=PRETRAIN_LR_DECAY, every=PRETRAIN_DECAY_EVERY)
METRIC_FROM_INIT = StepDecay(lr=METRIC_LR_FROM_INIT, factor=METRIC_LR_DECAY, every=METRIC_DECAY_EVERY)
METRIC_FROM_SCRATCH = StepDecay(lr=METRIC_LR_FROM_SCRATCH, factor=METRIC_LR_DECAY, every=METRIC_DECAY_EVERY)
POSE = StepDecay(lr=POSE_LR, factor=POSE_LR_DECAY, every=POSE_DECAY_EVERY)


def metric_schedule(
    *, from_init: bool, lr: float | None = None, factor: float | None = None, every: int | None = None
) -> StepDecay:
    """The paper's metric-learning schedule for the case, with any part overridden."""
    return (METRIC_FROM_INIT if from_init else METRIC_FROM_SCRATCH).overridden(lr=lr, factor=factor, every=every)


def pretrain_schedule(*, lr: float | None = None, factor: float | None = None, every: int | None = None) -> StepDecay:
    """The paper's pre-training schedule, with any part overridden."""
    return PRETRAIN.overridden(lr=lr, factor=factor, every=every)


def pose_schedule(*, lr: float | None = None, factor: float | None = None, every: int | None = None) -> StepDecay:
    """POSE's task-model schedule (constant lr 1e-4), with any part overridden."""
    return POSE.overridden(lr=lr, factor=factor, every=every)


def param_groups(
    model: nn.Module,
    loss: nn.Module,
    *,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    loss_lr_factor: float = PROXY_LR_FACTOR,
) -> list[dict]:
    """Two groups: the network (with weight decay) and the loss's own parameters (faster, no decay).

    Each group carries ``lr_scale`` (read by ``StepDecay.apply``) and a ``name``. A
    parameter in both modules is refused: it would be stepped twice.
    """
    if not (loss_lr_factor > 0):
        raise UsageError(f"the loss learning-rate factor must be positive, got {loss_lr_factor}")
    if weight_decay < 0:
        raise UsageError(f"weight decay must be 0 or more, got {weight_decay}")
    net = [p for p in model.parameters() if p.requires_grad]
    own = [p for p in loss.parameters() if p.requires_grad]
    if {id(p) for p in net} & {id(p) for p in own}:
        raise UsageError("the loss and the network share parameters")
    groups = [{"name": "network", "params": net, "weight_decay": weight_decay, "lr_scale": 1.0}]
    if own:
        groups.append({"name": "loss", "params": own, "weight_decay": 0.0, "lr_scale": float(loss_lr_factor)})
    return groups


def make_optimizer(
    model: nn.Module,
    loss: nn.Module,
    schedule: StepDecay,
    *,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    loss_lr_factor: float = PROXY_LR_FACTOR,
) -> torch.optim.AdamW:
    """AdamW over the network and the loss's parameters, at the schedule's epoch-0 rates."""
    groups = param_groups(model, loss, weight_decay=weight_decay, loss_lr_factor=loss_lr_factor)
    optimizer = torch.optim.AdamW(groups, lr=schedule.lr)
    schedule.apply(optimizer, 0)
    return optimizer
