"""Bayar & Stamm's constrained convolution: a learnable bank of prediction-error filters.

Each filter predicts its centre pixel from the neighbours and outputs the prediction
error: centre weight fixed to -1, the other weights summing to 1. The filter therefore
sums to 0, so flat image content is cancelled and what passes are the local pixel
relations left by an acquisition or generation pipeline (Bayar & Stamm, "Constrained
Convolutional Neural Networks: A New Approach Towards General Purpose Image Manipulation
Detection", IEEE TIFS 2018).

Granularity: the constraint holds for every 2-D kernel slice, i.e. per output filter *and*
per input channel, so each colour channel on its own is a prediction-error filter. Bayar &
Stamm work on one (grey) channel, where the two readings coincide; MISL's RGB code (PyTorch
``view(-1, k*k)`` over (out, in) slices, and the Keras ``Constrained3DKernel`` that normalises
every xy-plane) constrains per slice, and so do we.

Projection: Bayar & Stamm divide the off-centre weights by their sum, then set the centre
to -1. Dividing by a sum near zero would blow a filter up, so where that sum is small next
to the weights' L1 norm the off-centre weights are instead shifted equally to sum to 1 (the
additive projection MISL's PyTorch code uses). Near the constraint both rules agree to first
order, and on a filter that already satisfies it both are the identity.

When: the constraint is imposed at construction, and ``constrain()`` re-imposes it in place.
Training calls ``model.constrain()`` after every optimiser step (as Bayar & Stamm do after
each update), so every forward pass sees constrained weights and the forward pass itself
stays a plain convolution.

Numerics: the layer always computes in float32, even under autocast, because bfloat16's
8-bit mantissa rounds pixel values near 1 more coarsely than the 1/255 steps the residuals
are made of; its outputs are small numbers that keep their relative precision in any dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from osma_cli.errors import UsageError

_MIN_SUM_RATIO = 0.1
"""Divide by the off-centre sum only when |sum| >= this x L1 norm (the scale grows <= 10x)."""


class ConstrainedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose every (out, in) kernel slice is a prediction-error filter."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, **kwargs: Any) -> None:
        if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise UsageError(f"a constrained convolution needs an odd square kernel >= 3, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)

    def reset_parameters(self) -> None:
        """Positive random weights (sums well away from zero), zero bias, then the constraint."""
        nn.init.uniform_(self.weight, 0.0, 1.0)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.constrain()

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))

    @torch.no_grad()
    def constrain(self) -> None:
        """Re-impose centre -1 and off-centre sum 1 on every kernel slice, in place."""
        out_ch, in_ch, kh, kw = self.weight.shape
        flat = self.weight.view(out_ch * in_ch, kh * kw)
        centre = (kh * kw) // 2
        off_mask = torch.ones(kh * kw, dtype=flat.dtype, device=flat.device)
        off_mask[centre] = 0.0
        off = flat * off_mask
        total = off.sum(dim=1, keepdim=True)
        magnitude = off.abs().sum(dim=1, keepdim=True)
        divisible = total.abs() >= _MIN_SUM_RATIO * magnitude
        divisible &= total.abs() > 0
        scaled = off / torch.where(divisible, total, torch.ones_like(total))
        shifted = off + off_mask * (1.0 - total) / (kh * kw - 1)
        constrained = torch.where(divisible, scaled, shifted)
        constrained[:, centre] = -1.0
        flat.copy_(constrained)
