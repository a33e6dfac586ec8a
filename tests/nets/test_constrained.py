"""The constrained convolution keeps centre -1 and off-centre sum 1 on every kernel slice."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from osma_cli.errors import UsageError
from osma_cli.nets import get_model
from osma_cli.nets.constrained import ConstrainedConv2d

TOL = 1e-6


def slices(layer: ConstrainedConv2d) -> torch.Tensor:
    out_ch, in_ch, kh, kw = layer.weight.shape
    return layer.weight.detach().reshape(out_ch * in_ch, kh * kw)


def is_constrained(layer: ConstrainedConv2d) -> bool:
    flat = slices(layer)
    centre = flat.shape[1] // 2
    off_sum = flat.sum(dim=1) - flat[:, centre]
    return bool(
        torch.allclose(flat[:, centre], torch.full_like(off_sum, -1.0), atol=TOL, rtol=0)
        and torch.allclose(off_sum, torch.ones_like(off_sum), atol=TOL, rtol=0)
    )


@pytest.mark.parametrize(("in_ch", "out_ch", "kernel"), [(3, 3, 5), (3, 6, 5), (1, 2, 3), (3, 3, 7)])
def test_constrained_at_construction(in_ch: int, out_ch: int, kernel: int) -> None:
    torch.manual_seed(0)
    assert is_constrained(ConstrainedConv2d(in_ch, out_ch, kernel, bias=False))


def test_constraint_restored_after_adam_steps() -> None:
    torch.manual_seed(0)
    layer = ConstrainedConv2d(3, 3, 5, bias=False)
    optimiser = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x, target = torch.rand(4, 3, 16, 16), torch.randn(4, 3, 12, 12)
    for _ in range(5):
        optimiser.zero_grad()
        F.mse_loss(layer(x), target).backward()
        optimiser.step()
        assert not is_constrained(layer)
        layer.constrain()
        assert is_constrained(layer)


def test_constrain_is_idempotent() -> None:
    torch.manual_seed(0)
    layer = ConstrainedConv2d(3, 3, 5)
    before = layer.weight.detach().clone()
    layer.constrain()
    torch.testing.assert_close(layer.weight.detach(), before, atol=1e-7, rtol=0)


def test_zero_or_tiny_off_centre_sum_does_not_blow_up() -> None:
    layer = ConstrainedConv2d(1, 3, 5, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        alternating = torch.tensor([1.0, -1.0] * 12 + [1.0]).view(5, 5)
        alternating[2, 2], alternating[4, 4] = 3.0, 0.0
        layer.weight[1, 0] = alternating
        layer.weight[2, 0] = alternating
        layer.weight[2, 0, 0, 0] += 1e-9
    layer.constrain()
    assert is_constrained(layer)
    assert torch.isfinite(layer.weight).all()
    assert layer.weight.abs().max() <= 2.0


def test_flat_content_is_cancelled() -> None:
    torch.manual_seed(0)
    layer = ConstrainedConv2d(3, 4, 5, bias=False)
    flat = torch.full((1, 3, 12, 12), 0.7)
    assert layer(flat).abs().max() < 1e-5


def test_even_kernels_are_refused() -> None:
    with pytest.raises(UsageError, match="odd"):
        ConstrainedConv2d(3, 3, 4)


def test_mislnet_constrain_reaches_the_layer() -> None:
    torch.manual_seed(0)
    model = get_model("mislnet")
    assert is_constrained(model.constrained)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    model(torch.rand(2, 3, 48, 48)).square().mean().backward()
    optimiser.step()
    assert not is_constrained(model.constrained)
    model.constrain()
    assert is_constrained(model.constrained)


def test_default_constrain_is_a_no_op() -> None:
    model = get_model("dct_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.constrain()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
