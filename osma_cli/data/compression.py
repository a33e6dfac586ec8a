"""What compression an image has been through, read from its file: the first brick of routing.

A JPEG file carries its quantisation tables. Encoders that follow the IJG reference (libjpeg,
Pillow, most software and many cameras' "quality" settings) scale one standard table by a
quality factor, so the factor can be read back: ``jpeg_quality`` compares the file's
luminance table with the tables Pillow's libjpeg writes for each quality 1..100 and returns
the closest (sum of squared differences). For tables that no IJG quality makes (some cameras),
it is the nearest IJG quality: an estimate, said as one.

Descriptors that measure pixel correlations (``fsd``) are reliable only on images compressed
as their references were; the embedder says so in a file's warnings (``note_for``).
"""

from __future__ import annotations

import functools
import io
from typing import overload

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=1)
def _ijg_tables() -> np.ndarray:
    """(100, 64) luminance tables of Pillow's encoder for qualities 1..100, in Pillow's order."""
    tables = []
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="JPEG", quality=quality)
        with Image.open(buffer) as image:
            tables.append(list(image.quantization[0]))
    return np.array(tables, dtype=np.float64)


def jpeg_quality(image: Image.Image) -> int | None:
    """The IJG quality whose luminance table is closest to this JPEG's; None if not a JPEG."""
    tables = getattr(image, "quantization", None)
    if image.format not in ("JPEG", "MPO") or not tables:
        return None
    luma = np.asarray(tables.get(0, next(iter(tables.values()))), dtype=np.float64)
    if luma.shape != (64,):
        return None
    errors = ((_ijg_tables() - luma) ** 2).sum(axis=1)
    return int(errors.argmin()) + 1


NOTE_SUFFIX = "this model is reliable only on images compressed like its references (docs/descriptors.md)"


@overload
def note_for(quality: int) -> str: ...
@overload
def note_for(quality: None) -> None: ...
def note_for(quality: int | None) -> str | None:
    """The warning a compression-sensitive model adds to a JPEG's record."""
    if quality is None:
        return None
    return f"JPEG (quality about {quality}): {NOTE_SUFFIX}"


def is_compression_note(warning: str) -> bool:
    """Whether a record's warning is ``note_for``'s (about the model, not damage to the file)."""
    return warning.startswith("JPEG (quality about ") and warning.endswith(NOTE_SUFFIX)
