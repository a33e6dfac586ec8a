"""``decode_jpegs``'s contract where no GPU is needed: its CPU path against Pillow, its refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from osma_cli.data.gpu_decode import decode_jpegs, gpu_decode_available
from osma_cli.errors import UsageError


def jpeg_bytes(pixels: np.ndarray, *, quality: int = 90, subsampling: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def pillow_rgb(data: bytes) -> torch.Tensor:
    """The pipeline's decoder, channel first."""
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


def sample_jpegs() -> list[bytes]:
    rng = np.random.default_rng(0)
    colour = np.clip(rng.normal(128, 40, (64, 48, 3)), 0, 255).astype(np.uint8)
    grey = np.clip(rng.normal(100, 30, (40, 56)), 0, 255).astype(np.uint8)
    return [jpeg_bytes(colour, subsampling=0), jpeg_bytes(colour, subsampling=2), jpeg_bytes(grey, quality=75)]


def test_cpu_decoding_gives_pillows_pixels_channel_first() -> None:
    data = sample_jpegs()
    decoded = decode_jpegs(data, device="cpu")
    assert [tuple(t.shape) for t in decoded] == [(3, 64, 48), (3, 64, 48), (3, 40, 56)]  # grey becomes RGB
    for tensor, item in zip(decoded, data):
        assert tensor.dtype == torch.uint8 and tensor.device.type == "cpu"
        assert int((tensor.int() - pillow_rgb(item).int()).abs().max()) <= 1


def test_what_is_not_a_jpeg_is_refused_with_its_position() -> None:
    good, png = sample_jpegs()[0], io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(ValueError, match="item 1 is not a JPEG"):
        decode_jpegs([good, png.getvalue()], device="cpu")
    with pytest.raises(ValueError, match="does not decode"):
        decode_jpegs([good[: len(good) // 3]], device="cpu")
    assert decode_jpegs([], device="cpu") == []


@pytest.mark.skipif(gpu_decode_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_decoding_without_a_gpu_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs a CUDA GPU"):
        decode_jpegs(sample_jpegs(), device="cuda")
