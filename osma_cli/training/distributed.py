"""Where a training process stands: one process, or one of several launched by ``torchrun``.

``distributed(device)`` gives the process's ``DistContext``. When ``WORLD_SIZE`` > 1 it
initialises the process group from torchrun's environment (NCCL on CUDA, Gloo on the CPU),
each process takes the GPU ``LOCAL_RANK`` (``--device cuda:N`` is ignored there), and the
group is destroyed on exit. A single process (no torchrun) never touches
``torch.distributed``. How ``loop.fit`` shares an epoch out over the processes is in
``loop``'s docstring.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from osma_cli.runtime import configure_numerics, resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its device, and its rank among ``world_size`` processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over all processes (identity in a single process)."""
        if not self.is_distributed:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()


@contextlib.contextmanager
def distributed(device_spec: str = "auto") -> Iterator[DistContext]:
    """The process's context: one process unless launched by torchrun with ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield DistContext(device=resolve_device(device_spec))
        return
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    configure_numerics()
    if device_spec.strip().lower() != "cpu" and torch.cuda.is_available():
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend)
    try:
        yield DistContext(device=device, rank=rank, world_size=world, local_rank=local)
    finally:
        if created:
            dist.destroy_process_group()
