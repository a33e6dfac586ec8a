"""Running a generator to make benchmark images: in float64, so every machine agrees.

The benchmark must come out the same, bit for bit, on every machine. Float32 convolutions
do not: the CPU's vector width and the library's blocking change the order of the sums,
the results differ in the last bits, and a few output values per image fall on the other
side of a rounding step when quantised to 8 bits. In float64 the differences are about
1e-12 of a grey level, so a value would have to lie that close to a rounding boundary to
flip: over the whole benchmark (about 3e8 values) that is expected far less than once.
Inference therefore runs in float64 (several times slower than float32 on a CPU), under
``torch.use_deterministic_algorithms`` and one thread per process, and each image is
quantised as ``round(clamp(y, 0, 1) * 255)`` (ties to even). The digests recorded in the
build's manifest and checked against the shipped ones (``materialise``) show whether this
held on a given machine; a mismatch is reported, never silent.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

import numpy as np
import torch

from osma_cli.errors import UsageError
from osma_cli.zoo.generators import Generator

RENDER_DTYPE = torch.float64
RENDER_THREADS = 1
"""torch threads per rendering process: one, always (the build runs several processes)."""


@contextlib.contextmanager
def deterministic_torch(threads: int = RENDER_THREADS) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count, restored afterwards."""
    import torch.utils.deterministic as det

    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    # fill_uninitialized_memory is a property of the module's class (torch replaces the module's
    # __class__), which torch's typing does not declare: the ignores below are for that gap
    old_fill = det.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    det.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # only costs time: every output is written
    try:
        yield
    finally:
        det.fill_uninitialized_memory = old_fill  # type: ignore[attr-defined]
        torch.use_deterministic_algorithms(old_deterministic)
        torch.set_num_threads(old_threads)


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    Float64 convolutions on the CPU allocate an unfolded copy of their input (about 75 MB
    for a 256-pixel image) for every layer; with glibc's defaults each is a fresh ``mmap``
    the kernel zero-fills, and page faults take more time than the arithmetic (measured
    here: 0.39 s per image, 0.17 s with this). Called in the worker processes osma starts
    for a build or training, never in a user's process; a no-op where there is no glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
        libc.mallopt(_M_MMAP_THRESHOLD, 2**30)
    except (OSError, AttributeError):
        pass


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def to_tensor(image: np.ndarray, dtype: torch.dtype = RENDER_DTYPE) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(1, 3, H, W)`` in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(dtype) / 255


def quantise(output: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` float -> ``(H, W, 3) uint8``: clamp to [0, 1], scale, round to even."""
    values = torch.round(output.clamp(0, 1) * 255).to(torch.uint8)
    return values[0].permute(1, 2, 0).contiguous().numpy()


def render(model: Generator, image: np.ndarray) -> np.ndarray:
    """``model``'s re-synthesis of ``image`` (both ``(H, W, 3) uint8``), computed in the
    model's dtype (float64 for the benchmark); call inside ``deterministic_torch``."""
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        return quantise(model(to_tensor(image, dtype)))


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (inf when equal)."""
    mse = float(np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
