"""Perturbed copies of a split's test images, as files, and the split that points at them.

Each test image (known and unknown) is decoded, perturbed (``osma_cli.data.perturb``) and
written once to ``$OSMA_HOME/cache/perturbed/v1/<name>-<strength>/<sha256 of the source
bytes><suffix>`` (``jpeg`` as ``.jpg``, the others as ``.png``), atomically. The file's name
is its source's content hash, so a second run, a second model or a second split sharing
the image finds it, and the embedding cache (keyed by path, size and mtime) gives every
perturbation's file its own entry. The random draws are seeded from the same hash: the same
source bytes give the same perturbed bytes on every run and machine.

The references are not touched: the split returned keeps its training and validation
images as they were (``dataclasses.replace`` of the test parts only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from osma_cli.atomic import atomic_write_bytes
from osma_cli.data.decode import DEFAULT_MAX_PIXELS, load_rgb
from osma_cli.data.perturb import Perturbation
from osma_cli.errors import ImageError
from osma_cli.evaluation.sources import BenchmarkSplit, LabeledImage
from osma_cli.home import osma_home

LAYOUT_VERSION = "v1"
"""Part of the cache path: raised when a perturbation's pixels change, so old files are not reused."""


def perturbed_root() -> Path:
    """Where perturbed test images are kept: ``$OSMA_HOME/cache/perturbed/v1``."""
    return osma_home() / "cache" / "perturbed" / LAYOUT_VERSION


def folder_name(perturbation: Perturbation) -> str:
    """``jpeg-90``, ``resize-0.5``: the spec without the colon, which some file systems refuse."""
    return perturbation.spec.replace(":", "-")


def seed_rng(digest: bytes) -> np.random.Generator:
    """The random generator of one file: seeded from the sha256 of its bytes."""
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def perturbed_file(
    source: Path, perturbation: Perturbation, *, root: Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Path:
    """The perturbed copy of ``source``, written on first use; ``source`` itself when it
    cannot be read or decoded, so that the benchmark reports it as it would the clean file."""
    try:
        data = Path(source).read_bytes()
        digest = hashlib.sha256(data).digest()
    except OSError:
        return Path(source)
    target = (
        (perturbed_root() if root is None else root) / folder_name(perturbation) / (digest.hex() + perturbation.suffix)
    )
    if target.is_file():
        return target
    try:
        pixels = load_rgb(source, max_pixels=max_pixels)
    except ImageError:
        return Path(source)
    atomic_write_bytes(target, perturbation.encode(pixels, seed_rng(digest)))
    return target


def perturbed_split(
    split: BenchmarkSplit,
    perturbation: Perturbation,
    *,
    root: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: Callable[[int], None] = lambda n: None,
) -> BenchmarkSplit:
    """``split`` with its test images (known and unknown) replaced by their perturbed copies."""

    def moved(images: tuple[LabeledImage, ...]) -> tuple[LabeledImage, ...]:
        out = []
        for image in images:
            out.append(replace(image, path=perturbed_file(image.path, perturbation, root=root, max_pixels=max_pixels)))
            on_progress(1)
        return tuple(out)

    return replace(
        split,
        test_known=moved(split.test_known),
        test_unknown=moved(split.test_unknown),
        source=f"{split.source}, test images perturbed by {perturbation.spec}",
    )
