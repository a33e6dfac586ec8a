"""Damage that still decodes is reported: FIFOs and devices, cut-short PNGs, corrupt JPEGs."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osma_cli.data import ImageCropDataset, SkipReason, collate_crops
from osma_cli.data.decode import decode_image, load_rgb
from osma_cli.data.integrity import jpeg_warnings, png_warnings
from osma_cli.errors import ImageError


def picture(size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(0)
    return np.clip(np.stack([xx * 3, yy * 3, xx + yy], -1) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(
        np.uint8
    )


def encoded(fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture()).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def jpeg_with_restarts() -> bytes:
    return encoded("JPEG", quality=90, restart_marker_blocks=4)


def flip(data: bytes, at: int, bit: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 1 << bit
    return bytes(out)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def call_with_timeout(func, fifo: Path, timeout: float = 10.0):
    """Run ``func``; if it blocks on the FIFO, unblock it (a writer) and fail instead of hanging."""
    result: dict = {}

    def target():
        try:
            result["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(timeout)
        pytest.fail(f"blocked on the FIFO {fifo}")
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_intact_files_have_no_warnings(tmp_path):
    for name, data in [
        ("a.png", encoded("PNG")),
        ("b.jpg", encoded("JPEG")),
        ("c.jpg", encoded("JPEG", progressive=True)),
        ("d.jpg", jpeg_with_restarts()),
    ]:
        assert decode_image(write(tmp_path, name, data)).warnings == ()


def test_fifo_with_an_image_suffix_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError) as caught:
        call_with_timeout(lambda: load_rgb(fifo), fifo)
    assert caught.value.reason == "not a regular file (a FIFO), not read"


def test_character_device_is_refused():
    with pytest.raises(ImageError, match="a character device"):
        load_rgb(Path(os.devnull))


@pytest.mark.parametrize("cut", [1, 4, 12])
def test_png_cut_short_decodes_with_a_warning(tmp_path, cut):
    full = encoded("PNG")
    decoded = decode_image(write(tmp_path, "cut.png", full[:-cut]))
    np.testing.assert_array_equal(decoded.pixels, picture())
    assert len(decoded.warnings) == 1 and "cut short" in decoded.warnings[0]


def test_png_crc_mismatch_is_named():
    data = encoded("PNG")
    start = data.index(b"IDAT") - 4
    crc_at = start + 8 + int.from_bytes(data[start : start + 4], "big")
    assert png_warnings(flip(data, crc_at, 3)) == [
        f"png: chunk IDAT at byte {start} fails its CRC check (corrupt data)"
    ]


def test_jpeg_restart_marker_flipped_is_reported(tmp_path):
    data = jpeg_with_restarts()
    at = data.index(b"\xff\xd0")
    damaged = flip(data, at + 1, 0)  # RST0 -> RST1: libjpeg resyncs silently
    decoded = decode_image(write(tmp_path, "rst.jpg", damaged))
    assert decoded.pixels.shape == (48, 48, 3)
    assert decoded.warnings == (f"jpeg: restart marker 1 at byte {at} where 0 was due (corrupt data)",)


def test_jpeg_stuffed_byte_flipped_is_reported():
    data = encoded("JPEG", quality=90)
    at = data.index(b"\xff\x00", data.index(b"\xff\xda"))
    [warning] = jpeg_warnings(flip(data, at + 1, 0))  # FF00 -> FF01
    assert warning == f"jpeg: invalid marker 0x01 inside the compressed data at byte {at} (corrupt data)"


def test_jpeg_without_end_marker():
    data = encoded("JPEG")
    assert jpeg_warnings(data[:-2]) == ["jpeg: cut short: no end-of-image marker"]


def test_pillow_warnings_are_folded_into_the_result(tmp_path, monkeypatch):
    path = write(tmp_path, "a.png", encoded("PNG"))
    real_load = Image.Image.load

    def load_with_warning(self):
        warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=2)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", load_with_warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that leaked would fail the test
        decoded = decode_image(path)
    assert decoded.warnings == ("decoder: Corrupt EXIF data",)


def test_dataset_carries_warnings_and_marks_skips(tmp_path):
    damaged = write(tmp_path, "cut.png", encoded("PNG")[:-4])
    tiny = tmp_path / "tiny.png"
    Image.fromarray(picture(8)).save(tiny)
    dataset = ImageCropDataset([damaged, tiny], 16, small="skip")
    items = [dataset[0], dataset[1]]
    assert "cut short" in items[0][2][0]
    assert isinstance(items[1][1], SkipReason)
    batch = collate_crops(items)
    assert batch.indices == [0] and "cut short" in batch.warnings[0][0]
    assert [i for i, _ in batch.failures] == [1] and isinstance(batch.failures[0][1], SkipReason)
