"""Reading a JPEG's quality back from its quantisation tables, and where it is reported."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from osma_cli.data.compression import jpeg_quality, note_for
from osma_cli.data.dataset import ImageCropDataset
from osma_cli.data.decode import decode_image


def noise(size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("quality", [10, 50, 75, 85, 90, 95, 100])
def test_the_quality_a_jpeg_was_written_at_is_read_back(quality):
    buffer = io.BytesIO()
    Image.fromarray(noise()).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as image:
        assert jpeg_quality(image) == quality


def test_lossless_files_have_no_jpeg_quality(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(noise()).save(path)
    assert decode_image(path).jpeg_quality is None
    assert note_for(None) is None


def test_the_dataset_notes_compression_only_when_asked(tmp_path):
    jpeg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    Image.fromarray(noise()).save(jpeg, quality=80)
    Image.fromarray(noise()).save(png)
    plain = ImageCropDataset([jpeg, png], 32)
    noted = ImageCropDataset([jpeg, png], 32, note_compression=True)
    assert plain[0][2] == () and plain[1][2] == ()
    assert any("quality about 80" in w for w in noted[0][2]) and noted[1][2] == ()
