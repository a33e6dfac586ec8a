"""Decode an image file to the RGB pixels exactly as stored.

Attribution reads pixel-level traces that a generator leaves, so decoding must not alter
them: no EXIF orientation (``exif_transpose`` is never called), no resampling, no JPEG
draft mode (reduced-size DCT decoding), no colour management (ICC profiles are ignored),
no gamma. Multi-frame files (GIF, APNG, multi-page TIFF, MPO) give their first frame.
The format is detected from the content, never from the extension.

One rule per Pillow mode turns the stored pixels into ``(H, W, 3) uint8``:

=========================  ================================================================
mode                       rule
=========================  ================================================================
``RGB``                    as stored
``RGBX``                   padding byte dropped
``L``                      grey value replicated to 3 channels
``1``                      0 / 255, replicated to 3 channels
``LA``, ``RGBA``           alpha discarded, stored colour kept. Compositing onto a
                           background would replace the generator's pixels with a blend
                           that no generator produced.
``P``, ``PA``              palette lookup (indices beyond the palette give black, as in
                           Pillow); transparency and alpha discarded
``CMYK``                   Pillow's CMYK to RGB conversion
``YCbCr``, ``LAB``,        Pillow's conversion to RGB
``HSV``
``I;16``, ``I;16L``,       clipped to [0, 65535], then ``round(v / 257)``: the exact inverse
``I;16B``, ``I;16N``,      of the usual 8-to-16-bit expansion ``v * 257``, so an 8-bit image
``I``                      saved as 16 bits comes back unchanged
``F``                      NaN to 0, clipped to [0, 255], rounded to nearest (ties to even)
anything else              ``ImageError`` naming the mode
=========================  ================================================================

Pillow itself reduces 16-bit-per-channel colour files (48-bit PNG or TIFF) to 8 bits when
it opens them (it has no 16-bit RGB mode); osma takes those pixels as Pillow gives them.

Every failure for one file is an ``ImageError`` whose reason says what is wrong; no raw
exception escapes for a bad file. The pixel count is checked from the header before any
pixel is decoded, so a decompression bomb is refused without allocating it. Only regular
files are opened: a FIFO or a device with an image suffix would block or never end.

Damage that still decodes is not silent: ``decode_image`` returns the pixels with a list
of warnings for the file. They come from Pillow's own warnings during the decode (caught,
not printed) and from a structure check of PNG and JPEG files (``integrity``): a PNG must
end with its IEND chunk and every chunk must pass its CRC; a JPEG's segments must follow
each other up to the end-of-image marker, with restart markers in sequence and no invalid
marker inside the compressed data, and a sequential JPEG's compressed data must decode
to exactly its blocks (``jpeg_scan``). JPEG has no checksum: a flipped bit that leaves
that structure intact changes pixels undetectably. osma never sets Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES``: data Pillow cannot decode stays an ``ImageError``;
a caller who sets it gets the pixels of a cut-short file and the warning that it is.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from osma_cli.data.compression import jpeg_quality
from osma_cli.data.integrity import integrity_warnings
from osma_cli.errors import ImageError, UsageError

DEFAULT_MAX_PIXELS: int = 2**26
"""Largest width * height decoded by default (67 million pixels, e.g. 8192x8192).

Decoding peaks at about 10 bytes per pixel (Pillow's 4-byte pixels, the RGB array, the
file's bytes for the integrity check): measured 641 MB above the process for an 8192x8192
PNG, 1.3 GB for 2^27 pixels. At this default a decode worker stays under about 1 GB."""

_BOMB_HINT = "possible decompression bomb; raise the limit with --max-pixels if you trust the file"
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")
_UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PIL_CONVERTED_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV"})
SUPPORTED_MODES: frozenset[str] = frozenset(
    {"RGB", "RGBA", "RGBX", "L", "LA", "1", "P", "PA", "F"} | _UINT16_MODES | _PIL_CONVERTED_MODES
)

_limit_lock = threading.Lock()
_active_limits: Counter[int] = Counter()
_saved_pil_limit: int | None = None


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int) -> Iterator[list[warnings.WarningMessage]]:
    """Make Pillow's own bomb checks follow ``max_pixels`` during one decode.

    Pillow checks sizes at open and again on frames and tiles inside some formats (GIF,
    TIFF, WebP); its global default (~89 M pixels) would otherwise refuse images the caller
    allowed, or allow inner frames the caller did not. While any decode is running, Pillow's
    limit is the largest limit in use and its warning is an error; the previous value comes
    back when the last decode ends, so Pillow's global state is never changed for good.
    Every other warning raised meanwhile is recorded in the yielded list, for the file's
    record. (``warnings.catch_warnings`` is process-wide before Python 3.14: decoding from
    several threads at once can leave its filter in place. osma decodes in worker processes.)
    """
    global _saved_pil_limit
    with _limit_lock:
        if not _active_limits:
            _saved_pil_limit = Image.MAX_IMAGE_PIXELS
        _active_limits[max_pixels] += 1
        Image.MAX_IMAGE_PIXELS = max(_active_limits)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield caught
    finally:
        with _limit_lock:
            _active_limits[max_pixels] -= 1
            if _active_limits[max_pixels] == 0:
                del _active_limits[max_pixels]
            Image.MAX_IMAGE_PIXELS = max(_active_limits) if _active_limits else _saved_pil_limit


def _bomb_reason(pixels: int | None, max_pixels: int) -> str:
    count = "image" if pixels is None else f"{pixels} pixels,"
    return f"{count} over the limit of {max_pixels}; {_BOMB_HINT}"


def _pil_bomb_reason(exc: Exception, max_pixels: int) -> str:
    """Pillow's own refusal, reworded as ours (its message carries the pixel count)."""
    match = _PIL_PIXELS.search(str(exc))
    return _bomb_reason(int(match.group(1)) if match else None, max_pixels)


@contextlib.contextmanager
def _open_file(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` for reading, turning every way it can fail into a distinct reason.

    The file is opened without blocking and checked to be a regular file before anything
    is read: opening a FIFO normally waits for a writer, forever.
    """
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot open file: {exc.strerror or exc}") from None
    kind = _file_kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise ImageError(path, f"not a regular file ({kind}), not read")
    handle = os.fdopen(fd, "rb")
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        yield handle


def _file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is (for the reason)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def _identify(handle: BinaryIO, path: Path, max_pixels: int) -> Image.Image:
    """Read the header only (Pillow opens lazily) and refuse what must not be decoded."""
    try:
        image = Image.open(handle)
    except UnidentifiedImageError:
        raise ImageError(path, "not an image: unrecognised or unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, _pil_bomb_reason(exc, max_pixels)) from None
    except Exception as exc:  # a plugin failing on a malformed header
        raise ImageError(path, f"corrupt image header ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageError(path, f"zero-size image ({width}x{height})")
    if width * height > max_pixels:
        image.close()
        raise ImageError(path, _bomb_reason(width * height, max_pixels))
    if image.mode not in SUPPORTED_MODES:
        image.close()
        raise ImageError(path, f"unsupported pixel mode {image.mode!r}")
    return image


def _palette_lookup(image: Image.Image, indices: np.ndarray) -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)[:256]
    palette[: len(colours)] = colours
    return palette[indices]


def _replicate(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def pixels_to_rgb(image: Image.Image) -> np.ndarray:
    """Apply the module's per-mode rule to a decoded Pillow image.

    Separate from ``load_rgb`` so that the rule can be applied to modes no file format
    stores (``HSV``) and tested on its own. Raises ``ValueError`` for a mode outside
    ``SUPPORTED_MODES``.
    """
    mode = image.mode
    if mode == "RGB":
        rgb = np.asarray(image)
    elif mode in ("RGBA", "RGBX"):
        rgb = np.asarray(image)[:, :, :3]
    elif mode == "L":
        rgb = _replicate(np.asarray(image))
    elif mode == "LA":
        rgb = _replicate(np.asarray(image)[:, :, 0])
    elif mode == "1":
        rgb = _replicate(np.asarray(image).astype(np.uint8) * np.uint8(255))
    elif mode == "P":
        rgb = _palette_lookup(image, np.asarray(image))
    elif mode == "PA":
        rgb = _palette_lookup(image, np.asarray(image)[:, :, 0])
    elif mode in _PIL_CONVERTED_MODES:
        rgb = np.asarray(image.convert("RGB"))
    elif mode in _UINT16_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        rgb = _replicate(((values + 128) // 257).astype(np.uint8))
    elif mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        rgb = _replicate(np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8))
    else:
        raise ValueError(f"unsupported pixel mode {mode!r}")
    if not (rgb.flags.c_contiguous and rgb.flags.writeable):
        rgb = np.array(rgb, dtype=np.uint8, order="C")
    return rgb


@dataclass(frozen=True)
class DecodedImage:
    """A file's pixels and what is wrong with the file although it decoded."""

    pixels: np.ndarray
    """``(H, W, 3) uint8``, as in ``load_rgb``."""
    warnings: tuple[str, ...] = ()
    """Damage or oddities found while decoding (Pillow's warnings, the structure check)."""
    jpeg_quality: int | None = None
    """The estimated IJG quality of a JPEG file (``osma_cli.data.compression``); None otherwise."""


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the first frame of ``path`` to ``(H, W, 3) uint8`` pixels exactly as stored.

    Raises ``ImageError`` (with a reason naming the problem) for a missing file, a
    directory, a FIFO or device, an empty or unreadable file, a file that is not an image,
    an image over ``max_pixels`` pixels, a zero-size image, truncated or corrupt data, or a
    pixel mode without a rule. Damage that still decodes is not reported here: use
    ``decode_image`` for the warnings.
    """
    return decode_image(path, max_pixels=max_pixels).pixels


def decode_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """``load_rgb``'s pixels and the file's warnings (damage that did not stop decoding).

    Pillow's warnings during the decode are folded into the result instead of printed;
    warnings that are not ``UserWarning`` s (deprecations) are passed on as they were.
    """
    if max_pixels < 1:
        raise UsageError(f"max_pixels must be at least 1, not {max_pixels}")
    path = Path(path)
    with _open_file(path) as handle:
        with _pil_pixel_limit(max_pixels) as caught:
            pixels, image_format, quality = _decode(handle, path, max_pixels)
        notes = _fold_warnings(caught)
        if image_format is not None:
            handle.seek(0)
            notes += integrity_warnings(handle.read(), image_format)
    return DecodedImage(pixels=pixels, warnings=tuple(dict.fromkeys(notes)), jpeg_quality=quality)


def _fold_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    notes = []
    for item in caught:
        if issubclass(item.category, UserWarning):
            notes.append(f"decoder: {item.message}")
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return notes


def _decode(handle: BinaryIO, path: Path, max_pixels: int) -> tuple[np.ndarray, str | None, int | None]:
    image = _identify(handle, path, max_pixels)
    with image:
        try:
            image.load()
            return pixels_to_rgb(image), image.format, jpeg_quality(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(path, _pil_bomb_reason(exc, max_pixels)) from None
        except MemoryError:
            raise ImageError(path, "out of memory while decoding") from None
        except OSError as exc:
            if exc.errno is not None:
                raise ImageError(path, f"read error: {exc.strerror or exc}") from None
            raise ImageError(path, f"truncated or corrupt image data ({exc})") from None
        except Exception as exc:  # a plugin failing on malformed data must not end a batch
            raise ImageError(path, f"cannot decode ({type(exc).__name__}: {exc})") from None
