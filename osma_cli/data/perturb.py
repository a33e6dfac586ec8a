"""Perturbations of test images, for measuring how verdicts hold up (``osma benchmark --perturb``).

Each perturbation is one small class, registered once under its name and parsed from
``name:strength``. It acts on ``(H, W, 3) uint8`` pixels and says how its result is stored:
``jpeg`` as a real JPEG file encoded at the quality (so that a model with JPEG regimes routes
it by its own tables, as it would a user's JPEG), every other one as a lossless PNG of its
pixels. Every random draw comes from the ``rng`` passed in, which the caller seeds per file,
so the same file gives the same bytes on every run.

Choices, and why:

- ``jpeg:Q``: ``osma_cli.data.augment.jpeg_encode``, the project's one JPEG encoder (Pillow,
  IJG tables scaled to Q, 4:2:0), so the perturbed files are compressed as the JPEG regimes'
  references were re-encoded.
- ``resize:S`` (0 < S < 1): Pillow's LANCZOS (a 3-lobe windowed sinc, support widened by
  the reduction factor, hence anti-aliased), to ``round(W*S) x round(H*S)`` (halves up, at
  least 1). It is Pillow's ``thumbnail`` default and libvips' default kernel, the reduction
  most web pipelines apply; a bilinear or nearest-neighbour reduction would alias and destroy
  more of the traces than a re-sharing site does.
- ``blur:SIGMA``: a Gaussian of standard deviation SIGMA pixels on each channel
  (``scipy.ndimage.gaussian_filter``, kernel cut at 4 SIGMA, edges mirrored), rounded to
  the nearest level.
- ``noise:SIGMA``: independent Gaussian noise of standard deviation SIGMA 8-bit levels on
  every pixel and channel, added, rounded and clipped to 0..255 (rounding adds 1/12 to the
  variance; clipping removes some near 0 and 255). The draw depends on the file only, so
  ``noise:2`` and ``noise:4`` add the same field at two scales.
- ``crop:F`` (0 < F < 1): the centred window of ``floor(H*F) x floor(W*F)`` pixels (at least
  1), its origin truncated to the 8-pixel grid as test-time crops are
  (``osma_cli.data.crops.centred_origin``): an exact sub-array, nothing resampled.
"""

from __future__ import annotations

import difflib
import io
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
from PIL import Image

from osma_cli.data.augment import jpeg_encode, jpeg_recompress
from osma_cli.data.crops import centred_origin
from osma_cli.errors import UsageError

STANDARD_NAME = "standard"
STANDARD_SPECS: tuple[str, ...] = (
    "jpeg:90",
    "jpeg:75",
    "jpeg:50",
    "resize:0.75",
    "resize:0.5",
    "blur:1.0",
    "noise:2",
    "crop:0.5",
)
"""The sweep ``--perturb standard`` runs (issue 17)."""


@dataclass(frozen=True)
class Perturbation(ABC):
    """One perturbation at one strength. Subclasses set the class variables and ``apply``."""

    strength: float

    name: ClassVar[str]
    requirement: ClassVar[str]
    """What a valid strength is, in words, for the error message."""
    integer: ClassVar[bool] = False
    stronger_when_lower: ClassVar[bool] = False
    """Whether a lower strength perturbs more (JPEG quality, scale and crop fractions)."""
    axis: ClassVar[str]
    """The strength's meaning, for a plot's axis."""
    suffix: ClassVar[str] = ".png"

    def __post_init__(self) -> None:
        if not math.isfinite(self.strength) or not self.valid(self.strength):
            raise UsageError(
                f"bad perturbation {self.spec!r}: {self.name} needs {self.requirement}",
                hint=f"e.g. {self.name}:{self.example}; see docs/robustness.md",
            )

    example: ClassVar[str]

    @classmethod
    @abstractmethod
    def valid(cls, strength: float) -> bool:
        """Whether ``strength`` has a meaning for this perturbation."""

    @abstractmethod
    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The perturbed ``(h, w, 3) uint8`` pixels of ``(H, W, 3) uint8`` ones."""

    def encode(self, pixels: np.ndarray, rng: np.random.Generator) -> bytes:
        """The file the perturbed image is stored as (``suffix``): a PNG of ``apply``'s pixels."""
        buffer = io.BytesIO()
        Image.fromarray(self.apply(_checked(pixels), rng)).save(buffer, format="PNG")
        return buffer.getvalue()

    @property
    def spec(self) -> str:
        """``name:strength``, the canonical spelling (``blur:1.0`` is ``blur:1``)."""
        return f"{self.name}:{format_strength(self.strength)}"

    def severity(self) -> float:
        """A key that sorts milder perturbations first."""
        return -self.strength if self.stronger_when_lower else self.strength


def format_strength(value: float) -> str:
    return f"{value:g}"


def _checked(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise UsageError(f"expected an (H, W, 3) uint8 image, got {pixels.shape} {pixels.dtype}")
    return pixels


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixel values rounded to the nearest 8-bit level and clipped to 0..255."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Perturbation]] = {}
P = TypeVar("P", bound=type[Perturbation])


def register_perturbation(name: str) -> Callable[[P], P]:
    """Register a perturbation class under ``name``; a name is registered once."""

    def decorate(cls: P) -> P:
        if name in _REGISTRY:
            raise ValueError(f"perturbation {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_perturbations() -> list[str]:
    return sorted(_REGISTRY)


def parse_perturbation(spec: str) -> Perturbation:
    """``"jpeg:90"`` -> ``Jpeg(90)``; a clear ``UsageError`` naming the spec otherwise."""
    name, colon, text = spec.strip().partition(":")
    name = name.strip().lower()
    cls = _REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list_perturbations(), n=1)
        raise UsageError(
            f"unknown perturbation {spec!r}",
            hint=(f"did you mean {close[0]}? " if close else "")
            + f"known: {', '.join(list_perturbations())}, or {STANDARD_NAME}",
        )
    if not colon or not text.strip():
        raise UsageError(
            f"perturbation {spec!r} has no strength", hint=f"write {name}:STRENGTH, e.g. {name}:{cls.example}"
        )
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"bad perturbation {spec!r}: strength {text.strip()!r} is not a number",
            hint=f"{name} needs {cls.requirement}, e.g. {name}:{cls.example}",
        ) from None
    if cls.integer:
        if not value.is_integer():
            raise UsageError(
                f"bad perturbation {spec!r}: {name} needs {cls.requirement}", hint=f"e.g. {name}:{cls.example}"
            )
        value = int(value)
    return cls(value)


def parse_perturbations(specs: Sequence[str]) -> tuple[Perturbation, ...]:
    """Each ``--perturb`` value (``standard`` for the whole sweep), repeats dropped, in order."""
    found: dict[str, Perturbation] = {}
    for spec in specs:
        for one in STANDARD_SPECS if spec.strip().lower() == STANDARD_NAME else (spec,):
            perturbation = parse_perturbation(one)
            found.setdefault(perturbation.spec, perturbation)
    if not found:
        raise UsageError("no perturbation given", hint=f"e.g. --perturb jpeg:90, or --perturb {STANDARD_NAME}")
    return tuple(found.values())


# --------------------------------------------------------------------------- the perturbations


@register_perturbation("jpeg")
@dataclass(frozen=True)
class Jpeg(Perturbation):
    """One JPEG compression at quality Q (1..100), stored as the JPEG file itself."""

    requirement: ClassVar[str] = "an integer quality in 1..100"
    example: ClassVar[str] = "90"
    integer: ClassVar[bool] = True
    stronger_when_lower: ClassVar[bool] = True
    axis: ClassVar[str] = "JPEG quality"
    suffix: ClassVar[str] = ".jpg"

    @classmethod
    def valid(cls, strength: float) -> bool:
        return float(strength).is_integer() and 1 <= strength <= 100

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return jpeg_recompress(_checked(pixels), int(self.strength))

    def encode(self, pixels: np.ndarray, rng: np.random.Generator) -> bytes:
        return jpeg_encode(_checked(pixels), int(self.strength))


def resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` of an image resized by ``scale``: each side rounded, halves up, at least 1."""
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


@register_perturbation("resize")
@dataclass(frozen=True)
class Resize(Perturbation):
    """A reduction by a factor in (0, 1), Lanczos (the module docstring says why)."""

    requirement: ClassVar[str] = "a scale factor between 0 and 1 (a reduction), e.g. 0.5"
    example: ClassVar[str] = "0.5"
    stronger_when_lower: ClassVar[bool] = True
    axis: ClassVar[str] = "scale factor"

    @classmethod
    def valid(cls, strength: float) -> bool:
        return 0 < strength < 1

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = _checked(pixels).shape[:2]
        height, width = resized_size(height, width, self.strength)
        resized = Image.fromarray(pixels).resize((width, height), resample=Image.Resampling.LANCZOS)
        return np.asarray(resized, dtype=np.uint8)


@register_perturbation("blur")
@dataclass(frozen=True)
class Blur(Perturbation):
    """A Gaussian blur of standard deviation SIGMA pixels."""

    requirement: ClassVar[str] = "a Gaussian sigma in pixels, above 0 and at most 20"
    example: ClassVar[str] = "1.0"
    axis: ClassVar[str] = "Gaussian sigma (pixels)"

    @classmethod
    def valid(cls, strength: float) -> bool:
        return 0 < strength <= 20

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        blurred = gaussian_filter(
            _checked(pixels).astype(np.float64), sigma=(self.strength, self.strength, 0), mode="reflect", truncate=4.0
        )
        return _to_uint8(blurred)


@register_perturbation("noise")
@dataclass(frozen=True)
class Noise(Perturbation):
    """Additive Gaussian noise of standard deviation SIGMA 8-bit levels, seeded per file."""

    requirement: ClassVar[str] = "a noise sigma in 8-bit levels, above 0 and at most 64"
    example: ClassVar[str] = "2"
    axis: ClassVar[str] = "noise sigma (8-bit levels)"

    @classmethod
    def valid(cls, strength: float) -> bool:
        return 0 < strength <= 64

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(_checked(pixels).shape) * self.strength
        return _to_uint8(pixels.astype(np.float64) + noise)


@register_perturbation("crop")
@dataclass(frozen=True)
class Crop(Perturbation):
    """The centred window of a side fraction in (0, 1), origin on the 8-pixel grid."""

    requirement: ClassVar[str] = "a side fraction between 0 and 1, e.g. 0.5"
    example: ClassVar[str] = "0.5"
    stronger_when_lower: ClassVar[bool] = True
    axis: ClassVar[str] = "side fraction kept"

    @classmethod
    def valid(cls, strength: float) -> bool:
        return 0 < strength < 1

    def window(self, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns kept of an ``height x width`` image."""
        rows, cols = max(1, math.floor(height * self.strength)), max(1, math.floor(width * self.strength))
        top, left = centred_origin(height, rows), centred_origin(width, cols)
        return slice(top, top + rows), slice(left, left + cols)

    def apply(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows, cols = self.window(*_checked(pixels).shape[:2])
        return np.ascontiguousarray(pixels[rows, cols])
