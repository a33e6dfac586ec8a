"""Training checkpoints for ``--resume``: safetensors for tensors, JSON for the rest, never pickle.

One checkpoint is one file, ``<dir>/last.safetensors``, rewritten atomically
(``osma_cli.atomic``) after every epoch, so a crash leaves the previous epoch's checkpoint
intact and never a mixture. It holds:

- tensors, by prefix: ``model.`` (network), ``loss.`` (proxies or classifier head),
  ``best.`` (the network with the best validation accuracy so far), ``optim.<i>.<key>``
  (AdamW's per-parameter moments and step counts), ``rng.`` (torch CPU and CUDA generator
  states, numpy's legacy state);
- one JSON object in the safetensors header under ``"osma_checkpoint"``: format and version,
  epochs completed, best accuracy and epoch, per-epoch history, the optimiser's parameter
  groups (their hyper-parameters; parameters as indices), its non-tensor state, the AMP
  gradient scaler's scalars, Python's ``random`` state, and the run's ``fingerprint`` (the
  settings that define the training trajectory, compared on resume).

Reading uses ``safetensors`` only: a checkpoint from anyone can be inspected and loaded
without running code from it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from osma_cli.atomic import atomic_write
from osma_cli.errors import OsmaError

FORMAT = "osma-training-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "osma_checkpoint"
CHECKPOINT_NAME = "last.safetensors"


class CheckpointError(OsmaError):
    """A training checkpoint is missing, corrupt, or does not belong to this run."""


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly where it stopped (after ``epoch`` epochs)."""

    epoch: int
    model: dict[str, Tensor]
    loss: dict[str, Tensor]
    optimizer: dict
    fingerprint: dict
    best_model: dict[str, Tensor] | None = None
    best_accuracy: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)
    scaler: dict | None = None
    rng: dict = field(default_factory=dict)


def checkpoint_path(directory: Path | str) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def has_checkpoint(directory: Path | str) -> bool:
    return checkpoint_path(directory).is_file()


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict:
    """The global generators' states: torch (CPU, every CUDA device), numpy, Python."""
    np_state = np.random.get_state()  # legacy=True: a tuple for MT19937, a dict for another bit generator
    if not isinstance(np_state, tuple):  # only after np.random.set_bit_generator, which osma never calls
        raise CheckpointError("numpy's global generator is not MT19937: its state cannot be saved")
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy": {
            "kind": np_state[0],
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _python_state_to_json(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = cuda_state
    return state


def restore_rng(state: dict) -> None:
    """Put back what ``capture_rng`` took (CUDA states only for devices that exist here)."""
    if not state:
        return
    torch.set_rng_state(state["torch"])
    np_meta = state["numpy"]
    np.random.set_state(
        (
            np_meta["kind"],
            state["numpy_keys"].numpy().astype(np.uint32),
            np_meta["pos"],
            np_meta["has_gauss"],
            np_meta["cached_gaussian"],
        )
    )
    random.setstate(_python_state_from_json(state["python"]))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"cuda.{i}" in state:
                torch.cuda.set_rng_state(state[f"cuda.{i}"], device=i)


def _python_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


# --------------------------------------------------------------------------- save


def save_checkpoint(directory: Path | str, state: TrainingState) -> Path:
    """Write ``state`` to ``<directory>/last.safetensors`` atomically; returns the path."""
    path = checkpoint_path(directory)
    tensors: dict[str, Tensor] = {}
    _put(tensors, "model.", state.model)
    _put(tensors, "loss.", state.loss)
    if state.best_model is not None:
        _put(tensors, "best.", state.best_model)
    optim_json = _flatten_optimizer(state.optimizer, tensors)
    rng_json = {}
    for key, value in state.rng.items():
        if isinstance(value, Tensor):
            tensors[f"rng.{key}"] = value
        else:
            rng_json[key] = value
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": state.epoch,
        "best_accuracy": state.best_accuracy,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "optimizer": optim_json,
        "scaler": state.scaler,
        "rng": rng_json,
        "fingerprint": state.fingerprint,
        "has_best": state.best_model is not None,
    }
    try:
        text = json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: training state is not plain JSON ({exc})") from exc
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: text}))
    except OSError as exc:
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({exc})", hint="check free space and permissions"
        ) from exc
    return path


def _put(out: dict[str, Tensor], prefix: str, tensors: dict[str, Tensor]) -> None:
    for name, tensor in tensors.items():
        out[prefix + name] = tensor


def _flatten_optimizer(state_dict: dict, tensors: dict[str, Tensor]) -> dict:
    """Tensors of the per-parameter state go to ``tensors``; the rest is returned as JSON."""
    per_param: dict[str, dict] = {}
    for index, entries in state_dict["state"].items():
        plain = {}
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                plain[key] = value
        per_param[str(index)] = plain
    groups = []
    for group in state_dict["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return {"param_groups": groups, "state": per_param}


# --------------------------------------------------------------------------- load


def load_checkpoint(directory: Path | str) -> TrainingState:
    """Read ``<directory>/last.safetensors`` (safetensors + JSON only; nothing is unpickled)."""
    directory = Path(directory)
    path = checkpoint_path(directory)
    if not path.is_file():
        raise CheckpointError(
            f"no training checkpoint in {directory} (looked for {CHECKPOINT_NAME})",
            hint="give the checkpoint folder of an earlier `osma train` run",
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({exc})", hint="the file is truncated or corrupt; start the run again"
        ) from exc
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path}: not an osma training checkpoint")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({exc})") from exc
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an osma training checkpoint")
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {header['format_version']} is newer than "
            f"this osma understands ({FORMAT_VERSION})",
            hint="upgrade osma",
        )
    groups = _by_prefix(tensors)
    rng = dict(header.get("rng") or {})
    rng.update(groups.get("rng", {}))
    return TrainingState(
        epoch=int(header["epoch"]),
        model=groups.get("model", {}),
        loss=groups.get("loss", {}),
        optimizer=_unflatten_optimizer(header["optimizer"], groups.get("optim", {})),
        fingerprint=header.get("fingerprint", {}),
        best_model=groups.get("best") if header.get("has_best") else None,
        best_accuracy=header.get("best_accuracy"),
        best_epoch=header.get("best_epoch"),
        history=list(header.get("history", [])),
        scaler=header.get("scaler"),
        rng=rng,
    )


def _by_prefix(tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    out: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        out.setdefault(prefix, {})[rest] = value
    return out


def _unflatten_optimizer(data: dict, tensors: dict[str, Tensor]) -> dict:
    state: dict[int, dict] = {int(k): dict(v) for k, v in data["state"].items()}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    groups = []
    for group in data["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def check_fingerprint(directory: Path | str, saved: dict, current: dict) -> None:
    """Refuse to resume a run whose trajectory-defining settings differ from the checkpoint's."""
    current = json.loads(json.dumps(current, sort_keys=True))
    keys = sorted(set(saved) | set(current))
    differences = [
        f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)
    ]
    if differences:
        shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise CheckpointError(
            f"cannot resume from {directory}: the run's settings differ ({shown})",
            hint="resume with the same data and options (only --epochs, --workers, "
            "--device and outputs may change), or start a new run",
        )
