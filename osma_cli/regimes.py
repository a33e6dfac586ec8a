"""Compression regimes: which projection and references score an image, chosen by its own file.

A descriptor that measures pixel correlations (``fsd``) sees JPEG's quantisation in every
compressed image, so references made from lossless images do not describe a JPEG, and
the other way round (docs/descriptors.md). A model can therefore carry one projection per
**regime**: ``lossless`` (images as they are) and ``jpeg<Q>`` for each quality ``Q`` it was
fitted for. A regime's references and projection are made from every training or enrolled
image re-encoded once at ``Q`` (Pillow, 4:2:0, ``osma_cli.data.augment.jpeg_recompress``):
a photo that was a camera JPEG, a generator's PNG, alike, as an image re-shared at that
quality would be.

Routing reads a file's compression from its header, not its name: a JPEG's quantisation
tables give its quality (``osma_cli.data.compression``), and the image is scored in the JPEG
regime of the nearest quality (ties: the higher one), re-encoded once at that quality as its
references were; anything else (PNG, WebP, TIFF...) is scored in ``lossless``. A JPEG whose
quality is far from every regime's gets a warning in its record, and so does every JPEG when
the model has no JPEG regime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osma_cli.errors import UsageError

FAR_FROM_REGIME = 5
"""A JPEG whose quality is more than this from its regime's is flagged as less reliable."""


@dataclass(frozen=True)
class Regime:
    """One compression regime of a model: lossless (``jpeg_quality`` None) or one JPEG quality."""

    jpeg_quality: int | None = None

    @property
    def name(self) -> str:
        return "lossless" if self.jpeg_quality is None else f"jpeg{self.jpeg_quality}"


LOSSLESS = Regime()


def check_jpeg_regimes(qualities: Sequence[int]) -> tuple[int, ...]:
    """Distinct JPEG qualities in 1..100, highest first (the order a model keeps them in)."""
    out = []
    for quality in qualities:
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise UsageError(f"a JPEG regime's quality must be an integer in 1..100, not {quality!r}")
        out.append(int(quality))
    if len(set(out)) != len(out):
        raise UsageError(f"JPEG regimes repeat a quality: {out}")
    return tuple(sorted(out, reverse=True))


def regimes_for(jpeg_qualities: Sequence[int]) -> tuple[Regime, ...]:
    """``lossless`` first, then one regime per JPEG quality, highest first."""
    return (LOSSLESS, *(Regime(q) for q in check_jpeg_regimes(jpeg_qualities)))


def parse_regimes(text: str) -> tuple[int, ...]:
    """``"95,90,75"`` -> (95, 90, 75); ``""`` or ``"none"`` -> () (lossless only)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return check_jpeg_regimes([int(part) for part in text.split(",") if part.strip()])
    except ValueError:
        raise UsageError(
            f"JPEG regimes {text!r} are not comma-separated qualities", hint="e.g. --jpeg-regimes 95,90,75"
        ) from None


def route(jpeg_quality: int | None, regimes: Sequence[Regime]) -> tuple[Regime, str | None]:
    """The regime that scores a file of this JPEG quality (None: not a JPEG), and a warning or None."""
    jpegs = [r for r in regimes if r.jpeg_quality is not None]
    if jpeg_quality is None:
        return LOSSLESS, None
    if not jpegs:
        return LOSSLESS, (
            f"JPEG (quality about {jpeg_quality}): this model has no JPEG regime and is "
            "reliable only on images compressed like its references (docs/descriptors.md)"
        )
    best_quality, best = min(
        ((r.jpeg_quality, r) for r in regimes if r.jpeg_quality is not None),
        key=lambda qr: (abs(qr[0] - jpeg_quality), -qr[0]),
    )
    if abs(best_quality - jpeg_quality) > FAR_FROM_REGIME:
        fitted = ", ".join(str(r.jpeg_quality) for r in jpegs)
        return best, (
            f"JPEG quality about {jpeg_quality}, far from the qualities this model was fitted "
            f"for ({fitted}): scored as {best.name}, less reliable"
        )
    return best, None


LOSSY_FORMATS = {
    "JPEG2000": "JPEG 2000 (usually lossy)",
    "AVIF": "AVIF (usually lossy)",
    "HEIF": "HEIF (usually lossy)",
}
"""Formats whose header does not say whether they are lossy, usually are, and have no regime."""


def file_compression(path: Path | str) -> tuple[int | None, str | None]:
    """(JPEG quality or None, the name of another lossy compression or None), from the header.

    Tables and headers only, no pixels decoded. A file that cannot be opened, or is not a
    regular file, gives (None, None): it is routed as lossless, where decoding reports what
    is wrong with it.
    """
    import os
    import stat

    from PIL import Image

    from osma_cli.data.compression import jpeg_quality

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, None  # a FIFO would block here; decoding refuses it with its reason
        with Image.open(path) as image:
            if image.format == "WEBP":
                return None, "lossy WebP" if _webp_is_lossy(path) else None
            return jpeg_quality(image), LOSSY_FORMATS.get(image.format or "")
    except Exception:  # any unreadable file: decoding names the problem later
        return None, None


def _webp_is_lossy(path: Path | str) -> bool:
    """A WebP's image chunk: ``VP8 `` is lossy, ``VP8L`` lossless (RIFF chunks after the header)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    pos = 12
    while pos + 8 <= len(head):
        kind, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if kind in (b"VP8 ", b"VP8L"):
            return kind == b"VP8 "
        pos += 8 + size + (size & 1)
    return False


def file_jpeg_quality(path: Path | str) -> int | None:
    """A file's JPEG quality from its header (``file_compression``); None for anything else."""
    return file_compression(path)[0]


def route_file(path: Path | str, regimes: Sequence[Regime]) -> tuple[Regime, str | None]:
    """``route`` for a file, by its own header; a lossy compression no regime covers is scored
    as lossless, with a warning."""
    quality, lossy = file_compression(path)
    if lossy is not None and quality is None:
        return LOSSLESS, (
            f"{lossy} compression: this model has no regime for it; scored as lossless, "
            "less reliable (docs/descriptors.md)"
        )
    return route(quality, regimes)
