"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``), for measuring.

On a GPU, decoding rather than the network bounds attribution's throughput: a CPU core decodes
a few hundred 256-pixel JPEGs a second. ``decode_jpegs`` decodes a batch of JPEG files'
bytes on the device in one call and returns RGB uint8 pixels, channel first, the layout
crops travel in. The inference pipeline does not use it (``ImageCropDataset`` decodes in
loader workers with Pillow, which also checks integrity and reads every format); for now only
``benchmarks/gpu_check.py`` does, to measure what decoding on the GPU would gain.

Pixels differ from Pillow's by the IDCT's rounding (nvJPEG's inverse transform and chroma
up-sampling are not libjpeg's): a level or two, no more, where chroma is not sub-sampled.
``device="cpu"`` decodes with torchvision's libjpeg-turbo, the same contract without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from osma_cli.errors import UsageError


def gpu_decode_available() -> bool:
    """Whether ``decode_jpegs(..., device="cuda")`` can run here."""
    return torch.cuda.is_available()


def decode_jpegs(data: Sequence[bytes], device: torch.device | str = "cuda") -> list[Tensor]:
    """JPEG files' bytes -> one (3, H, W) uint8 RGB tensor each, on ``device`` (grey becomes RGB).

    Raises ``UsageError`` for CUDA without a GPU, and ``ValueError`` naming the position of
    bytes that are not a decodable JPEG (nvJPEG reads baseline and progressive JPEGs only).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    if device.type == "cuda" and not gpu_decode_available():
        raise UsageError("JPEG decoding on CUDA needs a CUDA GPU", hint="decode with device='cpu'")
    encoded = [torch.frombuffer(bytearray(item), dtype=torch.uint8) for item in data]
    if not encoded:
        return []
    for position, item in enumerate(encoded):
        if len(item) < 4 or item[0] != 0xFF or item[1] != 0xD8:
            raise ValueError(f"item {position} is not a JPEG (no start-of-image marker)")
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as exc:
        raise ValueError(f"a JPEG of the batch does not decode: {exc}") from exc
