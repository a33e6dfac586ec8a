"""Step-decay schedules (paper defaults) and parameter groups (proxies faster, no decay)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from osma_cli.errors import UsageError
from osma_cli.nets import get_model
from osma_cli.training.losses import ProxyNCAPlusPlus
from osma_cli.training.schedule import (
    METRIC_FROM_INIT,
    METRIC_FROM_SCRATCH,
    PRETRAIN,
    PROXY_LR_FACTOR,
    StepDecay,
    make_optimizer,
    metric_schedule,
    param_groups,
    pretrain_schedule,
)


def test_paper_defaults() -> None:
    assert (PRETRAIN.lr, PRETRAIN.factor, PRETRAIN.every) == (1e-3, 0.65, 3)
    assert (METRIC_FROM_INIT.lr, METRIC_FROM_INIT.factor, METRIC_FROM_INIT.every) == (1e-4, 0.6, 2)
    assert METRIC_FROM_SCRATCH.lr == 7e-4
    assert metric_schedule(from_init=True) == METRIC_FROM_INIT
    assert metric_schedule(from_init=False) == METRIC_FROM_SCRATCH
    assert metric_schedule(from_init=True, lr=3e-4, every=5) == StepDecay(3e-4, 0.6, 5)
    assert pretrain_schedule(factor=0.5) == StepDecay(1e-3, 0.5, 3)


def test_step_decay_values() -> None:
    lrs = [METRIC_FROM_INIT.lr_at(e) for e in range(6)]
    assert lrs == pytest.approx([1e-4, 1e-4, 6e-5, 6e-5, 3.6e-5, 3.6e-5])
    assert [PRETRAIN.lr_at(e) for e in (0, 2, 3, 5, 6)] == pytest.approx([1e-3, 1e-3, 6.5e-4, 6.5e-4, 4.225e-4])


def test_groups_put_proxies_on_a_faster_rate_without_decay() -> None:
    model, loss = get_model("mislnet"), ProxyNCAPlusPlus(3, 200)
    optimizer = make_optimizer(model, loss, METRIC_FROM_INIT, weight_decay=0.05)
    assert isinstance(optimizer, torch.optim.AdamW)
    network, proxies = optimizer.param_groups
    assert network["name"] == "network" and proxies["name"] == "loss"
    assert len(proxies["params"]) == 1 and proxies["params"][0] is loss.proxies
    assert {id(p) for p in network["params"]} == {id(p) for p in model.parameters()}
    assert network["lr"] == pytest.approx(1e-4) and network["weight_decay"] == 0.05
    assert proxies["lr"] == pytest.approx(1e-4 * PROXY_LR_FACTOR) and proxies["weight_decay"] == 0.0
    METRIC_FROM_INIT.apply(optimizer, 2)
    assert network["lr"] == pytest.approx(6e-5)
    assert proxies["lr"] == pytest.approx(6e-5 * PROXY_LR_FACTOR)


def test_shared_parameters_and_bad_values_are_refused() -> None:
    shared = nn.Linear(2, 2)
    with pytest.raises(UsageError, match="share parameters"):
        param_groups(shared, shared)
    with pytest.raises(UsageError, match="positive"):
        param_groups(nn.Linear(2, 2), nn.Linear(2, 2), loss_lr_factor=0)
    for bad in (
        dict(lr=0.0, factor=0.5, every=1),
        dict(lr=1e-3, factor=1.5, every=1),
        dict(lr=1e-3, factor=0.5, every=0),
    ):
        with pytest.raises(UsageError):
            StepDecay(**bad)
