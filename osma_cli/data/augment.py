"""Training augmentation that keeps forensic traces: crops and JPEG re-compression, and
optionally the perturbations a user asks for.

Fang et al. never resample (no resize, rotation or blur: each would overwrite the traces the
network must learn); they crop, and they re-compress with JPEG at a quality drawn from
``JPEG_QUALITIES``, because attributed images have often been re-compressed on their way.
``TrainTransform.perturbations`` is the robustness option (docs/robustness.md): images
shared on the web are also resized or blurred, and a network that has seen such copies of
its training images may keep more of its accuracy on them. It is off by default, as in the
paper.

JPEG choices (``jpeg_recompress``): Pillow's baseline encoder with the standard IJG tables
scaled to the quality, and 4:2:0 chroma subsampling, asked for explicitly. 4:2:0 is what
most images met in the wild carry (web and social-media re-encoders, most phones) and what
Pillow and OpenCV write by default, so it is the re-compression a test image most likely
went through. The crop is compressed, not the whole image: training crops start on
multiples of 8 (``random_crop``), so the crop's 8x8 luma blocks are the image's blocks, as
when a whole image is re-compressed. The 16x16 chroma macro-blocks of 4:2:0 line up with
the image's only when the crop origin is a multiple of 16 (half of the draws per axis).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from osma_cli.data.crops import check_crop_policy, extract_crops, random_crop
from osma_cli.errors import UsageError

JPEG_QUALITIES: tuple[int | None, ...] = (75, 80, 85, 90, 95, None)
"""Fang et al.'s re-compression qualities; ``None`` leaves the crop as it is."""

JPEG_SUBSAMPLING = "4:2:0"


def _check_quality(quality: object) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise UsageError(f"JPEG quality must be an integer, not {quality!r}")
    if not 1 <= quality <= 100:
        raise UsageError(f"JPEG quality must be in 1..100, not {quality}")
    return int(quality)


def jpeg_encode(image: np.ndarray, quality: int) -> bytes:
    """The JPEG file of ``(H, W, 3) uint8`` pixels at ``quality``: the one encoder osma uses."""
    quality = _check_quality(quality)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
    return buffer.getvalue()


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """``(H, W, 3) uint8`` pixels after one JPEG round trip in memory at ``quality``."""
    with Image.open(io.BytesIO(jpeg_encode(image, quality))) as decoded:
        return np.array(decoded.convert("RGB"), dtype=np.uint8)


class ImagePerturbation(Protocol):
    """What ``TrainTransform`` needs of a perturbation (``osma_cli.data.perturb.Perturbation``)."""

    @property
    def spec(self) -> str: ...

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainTransform:
    """Fang et al.'s training augmentation: a random grid-aligned crop, then JPEG
    re-compression at a quality drawn uniformly from ``jpeg_qualities``.

    With ``perturbations``, the whole image is first perturbed by one drawn uniformly from
    them and "none" (with two given, each image has a 1/3 chance of each and of staying as
    it is), before the crop: a resized image is cropped at its new size, so the crop sees the
    resampled pixels as a test image would (padded like any small image when it has become
    smaller than the crop). Every draw comes from the ``rng`` passed in (the perturbation
    first, when there are any, then the crop origin, then the quality), so a dataset that
    seeds ``rng`` per item makes the augmentation reproducible; without perturbations nothing
    extra is drawn, so the paper's augmentation is unchanged draw for draw.
    """

    crop: int
    jpeg_qualities: tuple[int | None, ...] = JPEG_QUALITIES
    perturbations: tuple[ImagePerturbation, ...] = ()

    def __post_init__(self) -> None:
        check_crop_policy(self.crop)
        if not self.jpeg_qualities:
            raise UsageError("jpeg_qualities is empty", hint="use (None,) for no re-compression")
        for quality in self.jpeg_qualities:
            if quality is not None:
                _check_quality(quality)

    def describe(self) -> dict:
        """The augmentation as a weights recipe records it (JSON-ready)."""
        description: dict = {"crop": "random, 8-aligned, no resampling", "jpeg_qualities": list(self.jpeg_qualities)}
        if self.perturbations:
            description["perturbations"] = [p.spec for p in self.perturbations]
            description["perturbation_draw"] = "one of them or none, uniformly, on the whole image before the crop"
        return description

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(3, crop, crop) uint8`` CHW from an ``(H, W, 3) uint8`` image."""
        if self.perturbations:
            drawn = int(rng.integers(len(self.perturbations) + 1))
            if drawn < len(self.perturbations):
                image = self.perturbations[drawn].apply(image, rng)
        chw = random_crop(image, self.crop, rng)
        quality = self.jpeg_qualities[int(rng.integers(len(self.jpeg_qualities)))]
        if quality is None:
            return chw
        hwc = jpeg_recompress(np.ascontiguousarray(chw.transpose(1, 2, 0)), quality)
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def eval_transform(image: np.ndarray, crop: int) -> np.ndarray:
    """The deterministic test-time crop (the centre crop of ``extract_crops``), CHW uint8."""
    return extract_crops(image, crop, 1)[0]
