"""``osma train --method fsd-detector``: a model of real photographs' self-descriptions, no generated image.

1. The real images under ``real`` are split by **group** (the sub-folder a file is in, e.g. one
   camera model; each file its own group when there are no sub-folders) into a fitting part
   and a held-out part (``held_out`` of the files, groups chosen by a seeded hash), so that
   calibration is measured on photos, and cameras, the fit never saw.
2. Each photo and its re-saved copies (``osma_cli.data.resave``: resized and off-grid crops
   re-saved losslessly, JPEG re-compressions) are described by the descriptor's raw
   self-description, on the window its embedder takes (the centred window, unpadded).
3. ``osma_cli.detection.fit_detector``: standardise + PCA, a Gaussian mixture on the fitting
   part; the score's standardisation and the threshold on the held-out part (its copies too:
   they are real photographs the detector must pass).

Everything is recorded in the detector file: the descriptor's identity, the copies, the
split, the mixture, and the held-out acceptance of each kind of copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from osma_cli.cache import EmbeddingCache, file_key
from osma_cli.data import DEFAULT_MAX_PIXELS, extract_crops, iter_image_files, load_rgb
from osma_cli.data.resave import Resave, parse_resaves
from osma_cli.defaults import DEFAULT_COPIES, DEFAULT_MIXTURE, DETECTOR_HELD_OUT, DEVICE, SEED
from osma_cli.detection import COVARIANCES, DEFAULT_ACCEPTANCE, Detector, fit_detector
from osma_cli.detector_file import DetectorMeta, descriptor_record, save_detector
from osma_cli.embed import Embedder
from osma_cli.errors import DataError, ImageError, UsageError


@dataclass
class DetectorConfig:
    real: Path
    out: Path
    descriptor: Path
    copies: tuple[str, ...] = DEFAULT_COPIES
    held_out: float = DETECTOR_HELD_OUT
    acceptance: float = DEFAULT_ACCEPTANCE
    pca_dim: int = DEFAULT_MIXTURE["pca_dim"]
    components: int = DEFAULT_MIXTURE["components"]
    covariance: str = DEFAULT_MIXTURE["covariance"]
    restarts: int = DEFAULT_MIXTURE["restarts"]
    reg_covar: float = 1e-6
    seed: int = SEED
    device: str = DEVICE
    max_pixels: int = DEFAULT_MAX_PIXELS
    use_cache: bool = True


@dataclass
class DescribedPhotos:
    """Raw descriptors of photos and their copies: ``raw[i]`` of copy ``copy_index[i]`` of ``photos[photo[i]]``."""

    photos: list[Path]
    copies: tuple[Resave, ...]
    raw: np.ndarray
    photo: np.ndarray
    copy_index: np.ndarray
    failures: list[tuple[Path, str]] = field(default_factory=list)

    def select(self, photo_mask: np.ndarray) -> np.ndarray:
        return self.raw[photo_mask[self.photo]]


@dataclass
class DetectorResult:
    detector: Detector
    meta: DetectorMeta
    n_fit_photos: int
    n_held_out_photos: int
    held_out_groups: list[str]
    acceptance_by_copy: dict[str, float]
    failures: list[tuple[Path, str]]


def photo_groups(paths: Sequence[Path], root: Path) -> list[str]:
    """Each file's group: its folder relative to ``root``, or the file itself when all share one folder."""
    folders = [
        str(Path(p).parent.relative_to(root)) if Path(p).is_relative_to(root) else str(Path(p).parent) for p in paths
    ]
    if len(set(folders)) < 2:
        return [str(p) for p in paths]
    return folders


def split_held_out(groups: Sequence[str], share: float, seed: int) -> np.ndarray:
    """Mask of the held-out files: whole groups, in a seeded hash order, until ``share`` of the files."""
    if not 0.0 < share < 1.0:
        raise UsageError(f"the held-out share must be in (0, 1), got {share}")
    names = sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}\0{g}".encode()).hexdigest())
    counts = {g: 0 for g in names}
    for g in groups:
        counts[g] += 1
    wanted, taken = share * len(groups), 0
    chosen: set[str] = set()
    for g in names:
        if taken >= wanted or len(chosen) == len(names) - 1:
            break
        chosen.add(g)
        taken += counts[g]
    return np.array([g in chosen for g in groups])


def copy_cache(embedder: Embedder, copy: Resave, folder: Path | None = None) -> EmbeddingCache:
    """The embedding cache of one kind of copy: the descriptor's own cache for ``original`` (rows
    ``osma detect``, ``build`` and ``attribute`` share), a sibling file per other copy."""
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="keep", folder=folder)
    if copy.kind == "original":
        return cache
    suffix = copy.name.replace(":", "-")
    return EmbeddingCache(cache.path.with_name(f"{cache.path.stem}-copy-{suffix}.h5"), embedder.feature_dim)


def describe_photos(
    embedder: Embedder,
    paths: Sequence[Path],
    copies: Sequence[Resave],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    use_cache: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> DescribedPhotos:
    """Raw descriptors of every readable photo and each of its copies, described as the embedder would.

    A copy smaller than the descriptor's minimum input is left out (a small photo's half-size copy).
    With ``use_cache``, descriptors are served from and added to one cache per kind of copy
    (keyed by the file's identity, as every cache row), so refitting with other settings
    describes nothing again.
    """
    caches = [copy_cache(embedder, c) for c in copies] if use_cache else None
    keys = [file_key(p) for p in paths]
    found = [c.lookup(keys) for c in caches] if caches else [{} for _ in copies]
    rows, photo, copy_index, failures = [], [], [], []
    fresh: list[tuple[list[bytes], list[np.ndarray]]] = [([], []) for _ in copies]
    minimum = embedder.model.min_input_size
    for i, path in enumerate(paths):
        pixels = None
        if not all(i in f for f in found):
            try:
                pixels = load_rgb(path, max_pixels=max_pixels)
            except ImageError as exc:
                failures.append((Path(path), exc.reason))
                continue
        for j, copy in enumerate(copies):
            if i in found[j]:
                vector = found[j][i]
            else:
                assert pixels is not None  # decoded above: not every copy of photo i was cached
                crop = extract_crops(copy.apply(pixels), embedder.crop_size, 1, small="keep")
                if min(crop.shape[-2:]) < minimum:
                    continue
                vector = embedder.features_of_crops(torch.from_numpy(crop)).cpu().numpy()[0]
                key = keys[i]
                if key is not None:
                    fresh[j][0].append(key)
                    fresh[j][1].append(vector)
            rows.append(np.asarray(vector, dtype=np.float64))
            photo.append(i)
            copy_index.append(j)
        if on_progress is not None:
            on_progress(1)
    for cache, (new_keys, vectors) in zip(caches or [], fresh):
        if new_keys:
            cache.add(new_keys, np.stack(vectors))
    raw = np.stack(rows) if rows else np.zeros((0, embedder.feature_dim))
    return DescribedPhotos(
        photos=list(map(Path, paths)),
        copies=tuple(copies),
        raw=raw,
        photo=np.array(photo, int),
        copy_index=np.array(copy_index, int),
        failures=failures,
    )


def acceptance_by_copy(detector: Detector, described: DescribedPhotos, mask: np.ndarray) -> dict[str, float]:
    """Share of the masked photos' copies called real, per kind of copy."""
    rows = mask[described.photo]
    scores = detector.score_raw(described.raw[rows])
    kinds = described.copy_index[rows]
    return {
        copy.name: float(np.mean(scores[kinds == j] < detector.threshold))
        for j, copy in enumerate(described.copies)
        if np.any(kinds == j)
    }


def train_detector(config: DetectorConfig, on_progress: Callable[[int], None] | None = None) -> DetectorResult:
    """Describe, split, fit, calibrate and write the detector (``config.out``)."""
    if config.covariance not in COVARIANCES:
        raise UsageError(f"unknown covariance type {config.covariance!r}", hint=f"use one of {', '.join(COVARIANCES)}")
    embedder = Embedder.from_file(config.descriptor, device=config.device)
    if not embedder.is_descriptor:
        raise UsageError(
            f"{config.descriptor}: a detector is fitted on a descriptor's self-descriptions, "
            f"not on a {embedder.meta.kind} network",
            hint="pass an fsd model (`osma train --method fsd`), e.g. weights/osma-fsd.safetensors",
        )
    copies = parse_resaves(",".join(config.copies), ())
    paths = sorted(iter_image_files([config.real]))
    if not paths:
        raise DataError(f"{config.real}: no image files", hint="point REAL_DIR at a folder of real photographs")
    groups = photo_groups(paths, config.real)
    held = split_held_out(groups, config.held_out, config.seed)
    described = describe_photos(
        embedder, paths, copies, max_pixels=config.max_pixels, use_cache=config.use_cache, on_progress=on_progress
    )
    readable = np.zeros(len(paths), bool)
    readable[described.photo] = True
    if not (readable & held).any() or not (readable & ~held).any():
        raise DataError(
            f"{config.real}: too few readable photos to fit and hold some out ({int(readable.sum())} readable)",
            hint="give more real photographs",
        )
    descriptor = descriptor_record(embedder.feature_identity, embedder.meta, Path(config.descriptor).name)
    detector = fit_detector(
        described.select(~held),
        described.select(held),
        pca_dim=config.pca_dim,
        components=config.components,
        covariance=config.covariance,
        reg_covar=config.reg_covar,
        acceptance=config.acceptance,
        descriptor=descriptor,
        seed=config.seed,
        restarts=config.restarts,
    )
    accepted = acceptance_by_copy(detector, described, held)
    held_groups = sorted({g for g, h in zip(groups, held) if h})
    n_fit, n_held_out = int((readable & ~held).sum()), int((readable & held).sum())
    recipe = {
        "method": "fsd-detector",
        "real": str(config.real),
        "copies": [c.name for c in copies],
        "held_out_share": config.held_out,
        "seed": config.seed,
        "n_fit_photos": n_fit,
        "n_held_out_photos": n_held_out,
        "held_out_groups": held_groups,
        "n_unreadable": len(described.failures),
        "window": embedder.crop_size,
        "crops": "one centred window, unpadded (as the descriptor's embedder)",
    }
    meta = save_detector(config.out, detector, recipe=recipe, metrics={"held_out_acceptance": accepted})
    return DetectorResult(
        detector=detector,
        meta=meta,
        n_fit_photos=n_fit,
        n_held_out_photos=n_held_out,
        held_out_groups=held_groups,
        acceptance_by_copy=accepted,
        failures=described.failures,
    )
