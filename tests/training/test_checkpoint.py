"""Training checkpoints: exact round trips, RNG states, refusals; safetensors + JSON only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from osma_cli.nets import get_model
from osma_cli.training.checkpoint import (
    CHECKPOINT_NAME,
    METADATA_KEY,
    CheckpointError,
    TrainingState,
    capture_rng,
    check_fingerprint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from osma_cli.training.losses import ProxyNCAPlusPlus
from osma_cli.training.schedule import METRIC_FROM_SCRATCH, make_optimizer


def trained_parts(seed: int = 0, steps: int = 2):
    torch.manual_seed(seed)
    model, loss = get_model("mislnet", embedding_dim=16), ProxyNCAPlusPlus(3, 16)
    optimizer = make_optimizer(model, loss, METRIC_FROM_SCRATCH)
    x, y = torch.rand(6, 3, 40, 40), torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(x), y).mean().backward()
        optimizer.step()
        model.constrain()
    return model, loss, optimizer, (x, y)


def state_of(model, loss, optimizer, fingerprint=None) -> TrainingState:
    return TrainingState(
        epoch=3,
        model=model.state_dict(),
        loss=loss.state_dict(),
        optimizer=optimizer.state_dict(),
        fingerprint=fingerprint or {"seed": 0, "crop": [40]},
        best_model=model.state_dict(),
        best_accuracy=0.75,
        best_epoch=1,
        history=[{"epoch": 0, "loss": 1.5}],
        rng=capture_rng(),
    )


def test_round_trip_restores_model_proxies_and_optimizer(tmp_path: Path) -> None:
    model, loss, optimizer, (x, y) = trained_parts()
    save_checkpoint(tmp_path, state_of(model, loss, optimizer))
    state = load_checkpoint(tmp_path)
    assert state.epoch == 3 and state.best_accuracy == 0.75 and state.best_epoch == 1
    assert state.history == [{"epoch": 0, "loss": 1.5}]
    torch.testing.assert_close(state.loss["proxies"], loss.proxies.detach(), rtol=0, atol=0)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(state.model[name], tensor, rtol=0, atol=0)
        torch.testing.assert_close(state.best_model[name], tensor, rtol=0, atol=0)

    # a fresh model/loss/optimizer loaded from the file takes the very same next step
    model2, loss2, optimizer2, _ = trained_parts(seed=5, steps=0)
    model2.load_state_dict(state.model)
    loss2.load_state_dict(state.loss)
    optimizer2.load_state_dict(state.optimizer)
    for m, criterion, o in ((model, loss, optimizer), (model2, loss2, optimizer2)):
        o.zero_grad()
        criterion(m(x), y).mean().backward()
        o.step()
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(loss.proxies, loss2.proxies, rtol=0, atol=0)
    assert optimizer2.param_groups[1]["lr"] == optimizer.param_groups[1]["lr"]
    assert optimizer2.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]


def test_file_is_plain_safetensors_with_json_metadata(tmp_path: Path) -> None:
    model, loss, optimizer, _ = trained_parts(steps=1)
    folder = tmp_path / "ckpt"
    path = save_checkpoint(folder, state_of(model, loss, optimizer))
    assert path == folder / CHECKPOINT_NAME
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        header = json.loads(handle.metadata()[METADATA_KEY])
    assert "loss.proxies" in keys and "best.constrained.weight" in keys and "rng.torch" in keys
    assert any(k.startswith("optim.") and k.endswith(".exp_avg") for k in keys)
    assert header["optimizer"]["param_groups"][1]["name"] == "loss"
    assert [p.name for p in folder.iterdir()] == [CHECKPOINT_NAME]  # no temporary file left


def test_rng_states_are_restored() -> None:
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_missing_corrupt_and_foreign_files_are_refused(tmp_path: Path, tiny_weights: Path) -> None:
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_NAME).write_bytes(tiny_weights.read_bytes())
    with pytest.raises(CheckpointError, match="not an osma training checkpoint"):
        load_checkpoint(tmp_path)


def test_fingerprint_mismatch_is_refused() -> None:
    check_fingerprint("ckpt", {"seed": 0, "crop": [40]}, {"seed": 0, "crop": (40,)})
    with pytest.raises(CheckpointError, match="seed: checkpoint 0, now 1"):
        check_fingerprint("ckpt", {"seed": 0}, {"seed": 1})
