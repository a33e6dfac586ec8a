"""Batch normalisation over the whole batch when the batch is shared out among processes.

Under DistributedDataParallel each process sees ``B / world_size`` items of a step. The
gradients are averaged, but a BatchNorm layer would normalise each share with the share's
own mean and variance, so ``w`` processes would not train the model one process trains
with the whole batch ``B`` (and each process's running statistics would drift apart).
``GlobalBatchNorm`` pools the statistics: the sums of every share are all-reduced, so each
process normalises with the whole batch's mean and (biased) variance and updates the
running statistics with the whole batch's unbiased variance, as ``nn.BatchNorm*`` in one
process does.

Why not torch's ``SyncBatchNorm``: it refuses CPU tensors, and osma trains under Gloo on
CPUs too. One module on every device also means the code GPUs run is the code the CPU tests
check. The all-reduces are autograd-aware (``_PooledSum``: its backward all-reduces the
gradient), which is what makes each process's gradient the gradient of the whole batch's
loss; they run on a process group of their own, so they
never interleave with DDP's gradient buckets on the default group.

``synchronised_batch_norm`` swaps every batch-norm layer of a module for one that shares its
parameters and buffers (state dicts, optimisers and checkpoints see the same tensors under the
same names), and puts the original layers back on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class _PooledSum(torch.autograd.Function):
    """Sum over the processes of ``group``; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _PooledSum.apply(grad, ctx.group), None


def pooled_sum(tensor: Tensor, group: Any = None) -> Tensor:
    """``tensor`` summed over every process of ``group``, differentiably."""
    return _PooledSum.apply(tensor, group)


class GlobalBatchNorm(nn.Module):
    """A batch-norm layer whose training statistics are those of every process's share together."""

    # plain's own tensors, declared so that they are typed as the layer's (not Module.__getattr__'s)
    _plain: _BatchNorm
    weight: Tensor | None
    bias: Tensor | None
    running_mean: Tensor | None
    running_var: Tensor | None
    num_batches_tracked: Tensor | None

    def __init__(self, plain: _BatchNorm, group: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_plain", plain)  # not a submodule: the state dict keeps plain's names
        self.group = group
        self.eps = plain.eps
        self.momentum = plain.momentum
        self.weight = plain.weight
        self.bias = plain.bias
        self.register_buffer("running_mean", plain.running_mean)
        self.register_buffer("running_var", plain.running_var)
        self.register_buffer("num_batches_tracked", plain.num_batches_tracked)
        self.train(plain.training)

    @property
    def plain(self) -> _BatchNorm:
        """The layer this one stands in for (same parameters and buffers)."""
        return self._plain

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            self.plain.train(self.training)
            return self.plain(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local_count = xf.new_full((1,), float(x.numel() // x.shape[1]))
        pooled = pooled_sum(torch.cat([xf.sum(dims), local_count]), self.group)
        count = pooled[-1].detach()
        mean = pooled[:-1] / count
        centred = xf - mean.reshape(shape)
        var = pooled_sum((centred * centred).sum(dims), self.group) / count
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:  # None with a weight too: BatchNorm*(..., bias=False)
            y = y + self.bias.reshape(shape)
        if self.running_mean is not None and self.running_var is not None:
            self._update_running(self.running_mean, self.running_var, mean.detach(), var.detach(), count)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(
        self, running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: Tensor
    ) -> None:
        """As ``nn.BatchNorm*`` does: exponential (or cumulative) average, unbiased variance."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (count / (count - 1).clamp_min(1))
        running_mean.mul_(1 - factor).add_(mean.to(running_mean.dtype), alpha=factor)
        running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)


def _swap(module: nn.Module, make: Callable[[_BatchNorm], nn.Module]) -> list[tuple[nn.Module, str, _BatchNorm]]:
    """Replace every batch-norm descendant of ``module``; returns (parent, name, original)."""
    swapped: list[tuple[nn.Module, str, _BatchNorm]] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm):
                setattr(parent, name, make(child))
                swapped.append((parent, name, child))
    return swapped


@contextlib.contextmanager
def synchronised_batch_norm(module: nn.Module, *, enabled: bool = True) -> Iterator[nn.Module]:
    """``module`` with batch statistics pooled over all processes while inside; restored after.

    Needs an initialised process group when ``enabled`` (every process must enter, since the
    pooling group is created collectively). A no-op for a module without batch norm.
    """
    if not enabled or not any(isinstance(m, _BatchNorm) for m in module.modules()):
        yield module
        return
    group = dist.new_group(backend=dist.get_backend())
    swapped = _swap(module, lambda plain: GlobalBatchNorm(plain, group))
    try:
        yield module
    finally:
        for parent, name, original in swapped:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)
