"""Re-saved copies of a real photograph: what a model of real images must also call real.

Camera photographs are JPEGs; generated images are mostly PNGs. A model fitted on camera
JPEGs alone can learn "has JPEG blocking" instead of "is a photograph", and then calls every
PNG synthetic. A real photo re-saved losslessly after a resize (the blocking is resampled
away) or after a crop off the 8x8 grid (the blocking keeps its period, not its phase), or
re-compressed at another quality, is still a real photo; the real-image model is fitted on
such copies too, so that compression alone does not decide.

A copy is named ``KIND:VALUE``:

- ``original``: the decoded pixels;
- ``resize:F``: scaled by the factor F with Pillow's bicubic filter (a lossless re-save: PNG);
- ``offgrid:N``: N pixels cut from the top and the left, so the 8x8 JPEG grid no longer starts
  at the crop's origin (lossless); N should not be a multiple of 8;
- ``jpeg:Q``: one JPEG round trip at quality Q (4:2:0, as ``osma_cli.data.augment``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from osma_cli.data.augment import jpeg_recompress
from osma_cli.errors import UsageError

KINDS = ("original", "resize", "offgrid", "jpeg")


@dataclass(frozen=True)
class Resave:
    """One way of re-saving a photo (see the module docstring)."""

    kind: str
    value: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "original":
            return "original"
        value = int(self.value) if self.kind in ("offgrid", "jpeg") else f"{self.value:g}"
        return f"{self.kind}:{value}"

    @property
    def lossless(self) -> bool:
        return self.kind != "jpeg"

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``(H, W, 3) uint8`` pixels of the copy."""
        if self.kind == "original":
            return pixels
        if self.kind == "resize":
            height, width = pixels.shape[:2]
            size = (max(1, round(width * self.value)), max(1, round(height * self.value)))
            return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))
        if self.kind == "offgrid":
            n = int(self.value)
            return np.ascontiguousarray(pixels[n:, n:])
        return jpeg_recompress(np.ascontiguousarray(pixels), int(self.value))


def parse_resave(text: str) -> Resave:
    """``original``, ``resize:0.5``, ``offgrid:3`` or ``jpeg:90`` -> a ``Resave``, or a clear error."""
    kind, _, value = text.strip().partition(":")
    if kind not in KINDS or (kind == "original") != (value == ""):
        raise UsageError(
            f"unknown re-saved copy {text!r}",
            hint="use original, resize:FACTOR (e.g. resize:0.5), offgrid:PIXELS (e.g. offgrid:3) "
            "or jpeg:QUALITY (e.g. jpeg:90)",
        )
    if kind == "original":
        return Resave("original")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{text!r}: {value!r} is not a number") from None
    if kind == "resize" and not 0.05 <= number <= 4.0:
        raise UsageError(f"{text!r}: the resize factor must be in [0.05, 4]")
    if kind == "offgrid" and (number != int(number) or not 1 <= number <= 64 or number % 8 == 0):
        raise UsageError(f"{text!r}: cut 1..64 pixels, not a multiple of 8 (that stays on the JPEG grid)")
    if kind == "jpeg" and (number != int(number) or not 1 <= number <= 100):
        raise UsageError(f"{text!r}: JPEG quality must be an integer in 1..100")
    return Resave(kind, number)


def parse_resaves(text: str | None, default: tuple[str, ...]) -> tuple[Resave, ...]:
    """A comma-separated list (``--copies``); ``original`` is always included, first."""
    names = default if text is None else tuple(filter(None, (t.strip() for t in text.split(","))))
    copies = [Resave("original")] + [parse_resave(n) for n in names if n != "original"]
    unique = list(dict.fromkeys(copies))
    return tuple(unique)
