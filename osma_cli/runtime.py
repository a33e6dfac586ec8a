"""Devices, seeds and numerics: decided once, here.

- ``--device auto`` picks CUDA when present, the CPU otherwise.
- TF32 is switched off so that a GPU computes the same embeddings as the CPU to float32
  tolerance; mixed precision is an explicit choice (``autocast_context``) used for
  throughput where the caller asks for it, never silently.
- ``seed_everything`` seeds Python, numpy and torch for reproducible CPU runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator

import numpy as np
import torch

from osma_cli.errors import UsageError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def configure_numerics() -> None:
    """Keep float32 matmuls and convolutions exact on GPUs (no TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device, refusing CUDA that is not there."""
    configure_numerics()
    spec = spec.strip().lower()
    if not _DEVICE_PATTERN.match(spec):
        raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but no CUDA device is available", hint="use --device cpu (or auto)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"no CUDA device {index}: this machine has {torch.cuda.device_count()}", hint="use --device cuda:0"
            )
    return device


def autocast_context(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bfloat16 where supported), a no-op on the CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed every generator osma uses, so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None leaves it alone)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_count() -> int:
    """CPUs this process may use (respects affinity masks and containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
