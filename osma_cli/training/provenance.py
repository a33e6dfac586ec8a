"""Where a set of weights came from: the osma source and the environment that trained it.

Every training recipe (metric learning, pre-training, POSE) ends with ``environment(...)``:
the device, the loader workers, torch's and osma's versions, and the git commit of the
source when osma runs from a checkout (``source_commit``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch


def source_commit() -> dict:
    """The git commit of the osma source in use, when it runs from a checkout."""
    import osma_cli

    root = Path(osma_cli.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {}
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {}
    return {"osma_commit": head.stdout.strip(), "osma_tree_dirty": bool(status.stdout.strip())}


def environment(device: torch.device, workers: int, *, mixed_precision: bool | None = None) -> dict:
    """The recipe's record of where it ran: device, mixed precision (when the run has a choice),
    loader workers, versions and the source commit."""
    import osma_cli

    record: dict = {"device": str(device)}
    if mixed_precision is not None:
        record["mixed_precision"] = bool(mixed_precision and device.type == "cuda")
    record.update(
        {
            "loader_workers": workers,
            "torch_version": torch.__version__,
            "osma_version": osma_cli.__version__,
            **source_commit(),
        }
    )
    return record
