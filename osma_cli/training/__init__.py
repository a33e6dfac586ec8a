"""Training osma's embedding networks (docs/training.md).

- ``losses``: ProxyNCA++ and the pre-training classifier head, with injected distances and a
  reducer (pytorch-metric-learning's separation); losses own their parameters;
- ``schedule``: the paper's step-decay schedules and the optimiser's parameter groups
  (proxies on a faster learning rate);
- ``checkpoint``: the training state for ``--resume`` (safetensors + JSON, never pickle);
- ``loop``: the epoch loop both trainings share (devices, mixed precision, DDP under torchrun,
  the constraint after each step, validation, best-network keeping, checkpoints);
- ``sync_bn``: batch normalisation with statistics pooled over the processes under torchrun,
  so that ``w`` processes train the model one process trains (Gloo and NCCL alike);
- ``metric``: ``train_embedding(TrainConfig)``, ProxyNCA++ metric learning (``osma train``);
- ``pretrain``: ``pretrain(PretrainConfig)``, camera-model pre-training (``osma pretrain``).

``train_embedding``, ``TrainConfig`` and ``PretrainConfig`` are importable from here; they are
loaded on first use, with the data modules they need. The function ``pretrain`` lives in the
module of the same name: ``from osma_cli.training.pretrain import pretrain``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "TrainConfig": "osma_cli.training.metric",
    "TrainResult": "osma_cli.training.metric",
    "train_embedding": "osma_cli.training.metric",
    "PretrainConfig": "osma_cli.training.pretrain",
    "PretrainResult": "osma_cli.training.pretrain",
}

__all__ = ["PretrainConfig", "PretrainResult", "TrainConfig", "TrainResult", "train_embedding"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'osma_cli.training' has no attribute {name!r}")
