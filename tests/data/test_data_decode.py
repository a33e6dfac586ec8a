"""load_rgb: one pixel rule per mode, checked against numpy; every bad input reported."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from osma_cli.data import decode
from osma_cli.data.decode import DEFAULT_MAX_PIXELS, load_rgb, pixels_to_rgb
from osma_cli.errors import ImageError

RNG = np.random.default_rng(20240601)
H, W = 24, 40


def save(tmp_path: Path, image: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[:, :, None], 3, axis=2).astype(np.uint8)


def check_output(rgb: np.ndarray, height: int = H, width: int = W) -> None:
    assert rgb.shape == (height, width, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous and rgb.flags.writeable


def test_rgb_png_exact(tmp_path):
    pixels = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb = load_rgb(save(tmp_path, Image.fromarray(pixels), "a.png"))
    check_output(rgb)
    np.testing.assert_array_equal(rgb, pixels)


def test_l_replicated(tmp_path):
    grey = RNG.integers(0, 256, (H, W), dtype=np.uint8)
    rgb = load_rgb(save(tmp_path, Image.fromarray(grey), "l.png"))
    check_output(rgb)
    np.testing.assert_array_equal(rgb, grey3(grey))


def test_la_alpha_discarded(tmp_path):
    la = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
    la[:5, :, 1] = 0
    rgb = load_rgb(save(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    np.testing.assert_array_equal(rgb, grey3(la[:, :, 0]))


def test_rgba_colour_kept_even_where_transparent(tmp_path):
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[::2, :, 3] = 0
    rgb = load_rgb(save(tmp_path, Image.fromarray(rgba, "RGBA"), "rgba.png"))
    check_output(rgb)
    np.testing.assert_array_equal(rgb, rgba[:, :, :3])


def _palette_image(n_colours: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    palette = RNG.integers(0, 256, (n_colours, 3), dtype=np.uint8)
    indices = RNG.integers(0, n_colours, (H, W), dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    return image, indices, palette


@pytest.mark.parametrize("transparency", [3, bytes(range(0, 256, 16))])
def test_p_with_transparency_palette_lookup(tmp_path, transparency):
    image, indices, palette = _palette_image(16)
    path = save(tmp_path, image, "p.png", transparency=transparency)
    assert "transparency" in Image.open(path).info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = load_rgb(path)
    check_output(rgb)
    np.testing.assert_array_equal(rgb, palette[indices])


def test_p_gif_and_index_beyond_palette_is_black(tmp_path):
    image, indices, palette = _palette_image(8)
    np.testing.assert_array_equal(load_rgb(save(tmp_path, image, "p.gif")), palette[indices])
    short = Image.fromarray(np.array([[0, 1], [2, 200]], dtype=np.uint8), "P")
    short.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    expected = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [0, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(pixels_to_rgb(short), expected)
    np.testing.assert_array_equal(pixels_to_rgb(short), np.asarray(short.convert("RGB")))


def test_pa_palette_lookup_alpha_discarded(tmp_path):
    image, indices, palette = _palette_image(16)
    pa = image.convert("PA")
    path = save(tmp_path, pa, "pa.tiff")
    assert Image.open(path).mode == "PA"
    np.testing.assert_array_equal(load_rgb(path), palette[indices])


def test_cmyk_pillow_conversion(tmp_path):
    cmyk = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(cmyk, "CMYK"), "cmyk.tiff")
    c = cmyk.astype(np.int64)
    expected = np.round((255 - c[:, :, :3]) * (255 - c[:, :, 3:]) / 255).astype(np.uint8)
    np.testing.assert_array_equal(load_rgb(path), expected)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_inverse_of_8_to_16_expansion(tmp_path, mode):
    values8 = RNG.integers(0, 256, (H, W)).astype(np.uint16)
    values8[0, :2] = (0, 255)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (W, H), (values8 * 257).astype(dtype).tobytes())
    path = save(tmp_path, image, "g16.tiff")
    assert Image.open(path).mode in ("I;16", "I;16B", "I;16L")
    np.testing.assert_array_equal(load_rgb(path), grey3(values8))


def test_16_bit_png_rounds_arbitrary_values(tmp_path):
    values = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    values[0, :4] = (0, 128, 129, 65535)
    path = save(tmp_path, Image.fromarray(values), "g16.png")
    assert Image.open(path).mode == "I;16"
    expected = np.array([[round(int(v) / 257) for v in row] for row in values])
    np.testing.assert_array_equal(load_rgb(path), grey3(expected))
    assert tuple(load_rgb(path)[0, :4, 0]) == (0, 0, 1, 255)


def test_32_bit_int_clipped_then_rounded(tmp_path):
    values = RNG.integers(-70000, 140000, (H, W)).astype(np.int32)
    values[0, :3] = (-1, 70000, 257 * 77)
    path = save(tmp_path, Image.fromarray(values), "i32.tiff")
    assert Image.open(path).mode == "I"
    expected = np.round(np.clip(values, 0, 65535) / 257)
    np.testing.assert_array_equal(load_rgb(path), grey3(expected))
    assert tuple(load_rgb(path)[0, :3, 0]) == (0, 255, 77)


def test_float_clipped_and_rounded(tmp_path):
    values = RNG.normal(128, 120, (H, W)).astype(np.float32)
    values[0, :5] = (-3.0, 300.0, 2.5, 3.5, np.nan)
    path = save(tmp_path, Image.fromarray(values), "f.tiff")
    assert Image.open(path).mode == "F"
    expected = np.rint(np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0), 0, 255))
    np.testing.assert_array_equal(load_rgb(path), grey3(expected))
    assert tuple(load_rgb(path)[0, :5, 0]) == (0, 255, 2, 4, 0)


def test_bilevel_0_255(tmp_path):
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    path = save(tmp_path, Image.fromarray(bits), "b.png")
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(load_rgb(path), grey3(bits * 255))


def test_ycbcr_pillow_conversion(tmp_path):
    ycc = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(ycc, "YCbCr"), "ycc.tiff")
    assert Image.open(path).mode == "YCbCr"
    rgb = load_rgb(path)
    np.testing.assert_array_equal(rgb, np.asarray(Image.fromarray(ycc, "YCbCr").convert("RGB")))
    y, cb, cr = (ycc[:, :, i].astype(np.float64) - (0, 128, 128)[i] for i in range(3))
    bt601 = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    assert np.abs(rgb - np.clip(bt601, 0, 255)).max() <= 1


def test_lab_and_hsv_use_pillow_conversion(tmp_path):
    lab = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(lab, "LAB"), "lab.tiff")
    assert Image.open(path).mode == "LAB"
    expected = np.asarray(Image.fromarray(lab, "LAB").convert("RGB"))
    np.testing.assert_array_equal(load_rgb(path), expected)
    hsv = Image.new("HSV", (3, 2), (0, 255, 255))
    np.testing.assert_array_equal(pixels_to_rgb(hsv), np.full((2, 3, 3), (255, 0, 0), np.uint8))


def test_rgbx_padding_dropped_and_unknown_mode_refused():
    pixels = RNG.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    rgbx = Image.frombytes("RGBX", (5, 4), pixels.tobytes())
    np.testing.assert_array_equal(pixels_to_rgb(rgbx), pixels[:, :, :3])
    with pytest.raises(ValueError, match="La"):
        pixels_to_rgb(Image.new("La", (2, 2)))


def test_unknown_mode_is_an_image_error(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (4, 4)), "x.png")
    monkeypatch.setattr(decode.Image, "open", lambda fp: Image.new("La", (4, 4)))
    with pytest.raises(ImageError, match="unsupported pixel mode 'La'"):
        load_rgb(path)


def _exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def test_exif_orientation_ignored(tmp_path):
    pixels = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    png = save(tmp_path, Image.fromarray(pixels), "o.png", exif=_exif_orientation(6))
    assert Image.open(png).getexif()[0x0112] == 6
    np.testing.assert_array_equal(load_rgb(png), pixels)
    jpg = save(tmp_path, Image.fromarray(pixels), "o.jpg", exif=_exif_orientation(8), quality=90)
    assert Image.open(jpg).getexif()[0x0112] == 8
    rgb = load_rgb(jpg)
    check_output(rgb)
    with Image.open(jpg) as stored:
        np.testing.assert_array_equal(rgb, np.asarray(stored))


def test_decoded_by_content_not_extension(tmp_path):
    pixels = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(pixels), "really_a_png.jpg", format="PNG")
    np.testing.assert_array_equal(load_rgb(path), pixels)


def test_first_frame_of_multi_frame_files(tmp_path):
    frames = [RNG.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    images = [Image.fromarray(f) for f in frames]
    tiff = tmp_path / "pages.tiff"
    images[0].save(tiff, save_all=True, append_images=images[1:])
    np.testing.assert_array_equal(load_rgb(tiff), frames[0])
    apng = tmp_path / "anim.png"
    images[0].save(apng, save_all=True, append_images=images[1:])
    assert Image.open(apng).n_frames == 3
    np.testing.assert_array_equal(load_rgb(apng), frames[0])


def test_jpeg_full_resolution_no_draft(tmp_path):
    pixels = RNG.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(pixels), "full.jpg", quality=90)
    with Image.open(path) as stored:
        np.testing.assert_array_equal(load_rgb(path), np.asarray(stored))


# Bad inputs ------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width x height``, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def reason_of(path: Path, **kwargs) -> str:
    with pytest.raises(ImageError) as caught:
        load_rgb(path, **kwargs)
    assert caught.value.path == Path(path)
    assert str(path) in str(caught.value)
    return caught.value.reason


def test_every_bad_input_has_its_own_reason(tmp_path):
    files = {
        "empty": b"",
        "random": RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        "truncated_jpeg": _encoded("JPEG")[:1500],
        "truncated_png": _encoded("PNG")[:6000],
        "bomb": png_header_only(100_000, 100_000),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.img").write_bytes(data)
    (tmp_path / "folder.png").mkdir()
    reasons = {name: reason_of(tmp_path / f"{name}.img") for name in files}
    reasons["folder"] = reason_of(tmp_path / "folder.png")
    reasons["missing"] = reason_of(tmp_path / "missing.png")
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["random"].startswith("not an image")
    assert reasons["truncated_jpeg"].startswith("truncated or corrupt")
    assert reasons["truncated_png"].startswith("truncated or corrupt")
    assert reasons["folder"].startswith("is a directory")
    assert reasons["missing"] == "no such file"
    assert reasons["bomb"] == (
        f"10000000000 pixels, over the limit of {DEFAULT_MAX_PIXELS}; possible decompression "
        "bomb; raise the limit with --max-pixels if you trust the file"
    )
    kinds = {reason.split(" (")[0] for reason in reasons.values()}
    assert len(kinds) == len(reasons) - 1  # both truncations are the same kind


def test_corrupt_jpeg_data(tmp_path):
    data = bytearray(_encoded("JPEG"))
    data[400:420] = b"\xff" * 20
    (tmp_path / "c.jpg").write_bytes(bytes(data))
    assert reason_of(tmp_path / "c.jpg").startswith("truncated or corrupt image data")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_small_max_pixels_refused_before_decoding(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (W, H)), "ok.png")
    assert reason_of(path, max_pixels=W * H - 1) == (
        f"{W * H} pixels, over the limit of {W * H - 1}; possible decompression bomb; "
        "raise the limit with --max-pixels if you trust the file"
    )

    def refuse(self):
        pytest.fail("decoded a refused image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    reason_of(path, max_pixels=10)


def test_bomb_header_never_allocates(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a bomb"))
    assert "possible decompression bomb" in reason_of(path)


def test_our_limit_governs_and_pillow_state_restored(tmp_path, monkeypatch):
    pixels = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(pixels), "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    filters = list(warnings.filters)
    np.testing.assert_array_equal(load_rgb(path), pixels)
    reason_of(path, max_pixels=50)
    assert Image.MAX_IMAGE_PIXELS == 100
    assert warnings.filters == filters
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pillow_bomb_error_reworded(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(3000, 3000))
    assert reason_of(path, max_pixels=1000) == (
        "9000000 pixels, over the limit of 1000; possible decompression bomb; "
        "raise the limit with --max-pixels if you trust the file"
    )


def test_zero_size_image(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (4, 4)), "z.png")
    monkeypatch.setattr(decode.Image, "open", lambda fp: Image.new("RGB", (0, 7)))
    assert reason_of(path) == "zero-size image (0x7)"


def test_permission_denied(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (4, 4)), "locked.png")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        path.chmod(0)
    else:
        real_open = os.open

        def refuse(file, *args, **kwargs):
            if os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied")
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(decode.os, "open", refuse)
    assert reason_of(path) == "permission denied"


def test_read_error_is_not_called_corruption(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (4, 4)), "eio.png")

    def failing_load(self):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    assert reason_of(path) == "read error: Input/output error"


def test_unexpected_plugin_failure_is_an_image_error(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (4, 4)), "odd.png")

    def broken_load(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    assert reason_of(path).startswith("cannot decode (error: unpack")
