"""Detection of files: real or synthetic for each, through the descriptor, the cache and a detector.

The library side of ``osma detect`` (the CLI renders what this yields). Files are described
by the descriptor's raw self-description, served from and added to the embedding cache (the
same rows ``osma build`` and ``osma attribute`` with that descriptor use), in chunks, so that
results stream and memory stays bounded. An unreadable file yields an error result, never
an exception: a batch goes past bad files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osma_cli.cache import EmbeddingCache, embed_with_cache
from osma_cli.data import DEFAULT_MAX_PIXELS
from osma_cli.data.compression import is_compression_note
from osma_cli.detection import Detection, Detector
from osma_cli.detector_file import (
    DetectorMeta,
    check_descriptor,
    default_descriptor_path,
    default_detector_path,
    load_detector,
)
from osma_cli.embed import Embedder, EmbedOptions
from osma_cli.errors import OsmaError, UsageError
from osma_cli.home import shipped_dir
from osma_cli.regimes import file_jpeg_quality

CHUNK = 64
"""Files described per call to the cache (results stream chunk by chunk)."""


class MissingDetectorError(OsmaError):
    """No ``--detector`` given and none shipped."""


@dataclass(frozen=True)
class FileDetection:
    """One input file: its detection, or why it has none."""

    path: Path
    detection: Detection | None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    skipped: bool = False


@dataclass(frozen=True)
class LoadedDetector:
    """A detector with the descriptor it was fitted on, checked, on a device."""

    detector: Detector
    meta: DetectorMeta
    path: Path
    embedder: Embedder

    @property
    def fitted_jpeg_qualities(self) -> list[int]:
        return sorted(int(c.split(":")[1]) for c in self.meta.recipe.get("copies", []) if c.startswith("jpeg:"))


def resolve_paths(detector: Path | None, descriptor: Path | None) -> tuple[Path, Path]:
    """``--detector`` and ``--model``, else the shipped detector and the shipped descriptor."""
    if detector is None:
        detector = default_detector_path()
        if detector is None:
            raise MissingDetectorError(
                f"no default detector is installed (looked in {shipped_dir()})",
                hint="pass --detector FILE, made by `osma train --method fsd-detector REAL_DIR --out FILE`",
            )
    if descriptor is None:
        descriptor = default_descriptor_path()
        if descriptor is None:
            raise MissingDetectorError(
                f"the descriptor is not installed (looked in {shipped_dir()})",
                hint="pass --model, the fsd weights the detector was fitted on",
            )
    return detector, descriptor


def load(detector: Path | None = None, descriptor: Path | None = None, device: str = "auto") -> LoadedDetector:
    """The detector and its descriptor; a descriptor other than the one it was fitted on is refused."""
    detector_path, descriptor_path = resolve_paths(detector, descriptor)
    fitted, meta = load_detector(detector_path)
    embedder = Embedder.from_file(descriptor_path, device=device)
    if not embedder.is_descriptor:
        raise UsageError(
            f"{descriptor_path}: a {embedder.meta.kind} network, not a descriptor",
            hint="pass the fsd weights the detector was fitted on with --model",
        )
    check_descriptor(detector_path, fitted, embedder.feature_identity, embedder.feature_dim, descriptor_path)
    return LoadedDetector(detector=fitted, meta=meta, path=Path(detector_path), embedder=embedder)


def compression_warning(path: Path, fitted_qualities: Sequence[int]) -> str | None:
    """A JPEG compressed harder than any copy the detector was fitted with: say its verdict is less sure."""
    quality = file_jpeg_quality(path)  # the header only; a FIFO is not opened
    if quality is None or (fitted_qualities and quality >= min(fitted_qualities)):
        return None
    fitted = (
        f"qualities {min(fitted_qualities)}-{max(fitted_qualities)}"
        if fitted_qualities
        else "no JPEG re-compressed copies"
    )
    return (
        f"JPEG (quality about {quality}), compressed harder than the real photos the detector was fitted "
        f"with ({fitted}): real photos like it are called synthetic more often (docs/detection.md)"
    )


def detect_files(
    loaded: LoadedDetector,
    paths: Sequence[Path],
    *,
    threshold: float | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    max_pixels: int | None = None,
    use_cache: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[FileDetection]:
    """One result per file, in input order."""
    embedder = loaded.embedder
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="keep") if use_cache else None
    options = EmbedOptions(
        n_crops=1,
        batch_size=batch_size,
        workers=workers,
        small="keep",
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
    ).kwargs()
    qualities = loaded.fitted_jpeg_qualities
    for start in range(0, len(paths), CHUNK):
        chunk = list(paths[start : start + CHUNK])
        items = list(embed_with_cache(embedder, chunk, cache, features_only=True, on_progress=on_progress, **options))
        good = [it for it in items if it.ok]
        detections = loaded.detector.detect_raw(np.stack([it.vector for it in good]), threshold) if good else []
        by_index = {it.index: d for it, d in zip(good, detections)}
        for item in items:
            warnings = [w for w in item.warnings if not is_compression_note(w)]
            if item.ok:
                note = compression_warning(item.path, qualities)
                warnings += [note] if note else []
            yield FileDetection(
                path=item.path,
                detection=by_index.get(item.index),
                error=item.error,
                warnings=tuple(warnings),
                skipped=item.skipped,
            )
