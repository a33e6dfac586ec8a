"""``osma train --method fsd``: a self-description extractor, fitted in closed form, no gradient.

Two fits, both seconds to minutes on a CPU:

1. the residual filters (optional): the least-squares optimal prediction-error filter of each
   support, learned on **camera photographs only** (``photos``), never on generated images,
   which is what keeps the descriptor generator-agnostic; without photos, the fixed filters;
2. the projection: raw descriptors of the known generators' images (one folder each in
   ``data``) -> standardise, PCA, shrunk within-class covariance, LDA or whitening
   (``osma_cli.projection``), saved in the weights with the recipe; with ``jpeg_regimes``,
   one more projection per JPEG quality, fitted on the same images re-encoded at it
   (``osma_cli.regimes``); with ``augment``, every projection on perturbed copies of the
   images too (``osma_cli.projection_augment``).

Enrolling a generator later needs no refit; refitting on more generators is the same
command on a larger ``data`` (the raw descriptors come from the cache, so nothing already
described is described again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osma_cli.api import shared_progress
from osma_cli.cache import EmbeddingCache, embed_with_cache
from osma_cli.data import class_folders, iter_image_files, load_rgb
from osma_cli.data.perturb import Perturbation
from osma_cli.embed import EmbeddedImage, Embedder, split_embedded
from osma_cli.errors import DataError, ImageError
from osma_cli.nets import get_model
from osma_cli.nets.fsd import FSDDescriptor
from osma_cli.nets.residual_filters import learn_filters
from osma_cli.projection import DEFAULT_PROJECTION, Projection, fit_projection
from osma_cli.projection_augment import RECIPE_KEY, augmented_inputs
from osma_cli.regimes import LOSSLESS, regimes_for
from osma_cli.runtime import resolve_device
from osma_cli.weights import WeightsMeta, save_weights


@dataclass
class DescriptorConfig:
    data: Path
    out: Path
    photos: Path | None = None
    settings: dict = field(default_factory=dict)
    projection: dict = field(default_factory=lambda: dict(DEFAULT_PROJECTION))
    rule: dict = field(default_factory=lambda: {"name": "fang", "params": {}})
    device: str = "auto"
    batch_size: int = 16
    workers: int | None = None
    use_cache: bool = True
    jpeg_regimes: tuple[int, ...] = ()
    """JPEG qualities to fit a projection of their own for (``osma_cli.regimes``); () : lossless only."""
    augment: tuple[Perturbation, ...] = ()
    """Perturbed copies of the images the projections are fitted on too (``osma_cli.projection_augment``)."""


@dataclass
class DescriptorResult:
    meta: WeightsMeta
    projection: Projection
    """The lossless regime's projection (``projections`` has every regime's)."""
    n_photos: int
    failures: list[EmbeddedImage]
    classes: list[str]
    projections: dict[str, Projection] = field(default_factory=dict)


def _fsd_model(**settings: Any) -> FSDDescriptor:
    """``get_model("fsd", ...)`` (its errors for bad settings), typed as the descriptor it builds."""
    model = get_model("fsd", **settings)
    assert isinstance(model, FSDDescriptor)  # the builder registered as "fsd" returns one
    return model


def raw_descriptor(settings: dict, photos: Path | None = None) -> tuple[FSDDescriptor, int]:
    """The unprojected extractor, its filters learned on ``photos`` when given; (model, photos used)."""
    model = _fsd_model(**{**settings, "projected": False})
    if photos is None:
        return model, 0
    used = 0

    def photographs():
        """Decoded one at a time: the normal equations are sums, so memory stays one photo."""
        nonlocal used
        for path in iter_image_files([photos]):
            try:
                pixels = load_rgb(path)
            except ImageError:
                continue
            used += 1
            yield torch.from_numpy(pixels).permute(2, 0, 1).to(torch.float64) / 255.0

    filters = learn_filters(photographs(), supports=model.settings["filters"])
    if not used:
        raise DataError(
            f"{photos}: no readable camera photographs to learn the residual filters from",
            hint="point --photos at a folder of camera JPEGs (no generated images)",
        )
    with torch.no_grad():
        model.filters.copy_(filters)
    return model, used


@dataclass
class DescribedFolders:
    """The rows a projection is fitted on: images first, then their copies."""

    features: np.ndarray
    labels: np.ndarray
    classes: list[str]
    failures: list[EmbeddedImage]
    """The images that could not be described (their copies are not reported again)."""
    n_images: int
    """Readable images, copies not counted."""


def describe_folders(
    embedder: Embedder,
    data: Path,
    *,
    batch_size: int,
    workers: int | None,
    use_cache: bool,
    augment: Sequence[Perturbation] = (),
    on_progress: Callable[[int], None] | None = None,
) -> DescribedFolders:
    """Raw descriptors of every image under ``data`` (one sub-folder per class) and their labels,
    followed by those of each ``augment`` copy; the failures are the images' own."""
    folders = class_folders(data)
    paths = [p for files in folders.values() for p in files]
    labels = np.array([k for k, files in enumerate(folders.values()) for _ in files])
    copies, copy_labels = augmented_inputs(paths, labels, augment)
    labels = np.concatenate([labels, copy_labels]) if copies else labels
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="keep") if use_cache else None
    items = list(
        embed_with_cache(
            embedder,
            [*paths, *copies],
            cache,
            features_only=True,
            batch_size=batch_size,
            workers=workers,
            on_progress=on_progress,
        )
    )
    originals = items[: len(paths)]
    if not any(it.ok for it in originals):
        raise DataError(f"{data}: no readable images")
    good, features, _ = split_embedded(items, embedder.feature_dim)
    return DescribedFolders(
        features=features.astype(np.float64),
        labels=labels[[it.index for it in good]],
        classes=list(folders),
        failures=[it for it in originals if not it.ok],
        n_images=sum(it.ok for it in originals),
    )


def fit_fsd(config: DescriptorConfig, on_progress: Callable[[int], None] | None = None) -> DescriptorResult:
    """Learn filters (optional), fit the projection on ``data``'s generators, write the weights."""
    device = resolve_device(config.device)
    raw, n_photos = raw_descriptor(config.settings, config.photos)
    window = raw.settings["window"]
    raw_meta = WeightsMeta(
        architecture="fsd", embedding_dim=raw.raw_dim, crop_size=window, l2_normalize=False, kind="descriptor"
    )
    embedder = Embedder(raw, raw_meta, device)
    regimes = regimes_for(config.jpeg_regimes)
    progress = shared_progress(on_progress, len(regimes))
    projections: dict[str, Projection] = {}
    described: dict[str, DescribedFolders] = {}
    for regime in regimes:
        rows = described[regime.name] = describe_folders(
            embedder.for_regime(regime),
            config.data,
            batch_size=config.batch_size,
            workers=config.workers,
            use_cache=config.use_cache,
            augment=config.augment,
            on_progress=progress,
        )
        projections[regime.name] = fit_projection(rows.features, rows.labels, **config.projection)
    lossless = described[LOSSLESS.name]
    failures, classes = lossless.failures, lossless.classes  # the same files fail in every regime: reported once
    projection = projections[LOSSLESS.name]
    widths = {p.output_dim for p in projections.values()}
    if len(widths) > 1:
        raise DataError(
            f"{config.data}: the regimes' projections have different widths {sorted(widths)}",
            hint="set the projection's dimension explicitly",
        )
    settings = {**raw.settings, "projected": True, "jpeg_regimes": list(config.jpeg_regimes)}
    model = _fsd_model(**{**settings, "embedding_dim": projection.output_dim})
    with torch.no_grad():
        model.filters.copy_(raw.filters.cpu())
    for regime in regimes:
        fitted = projections[regime.name]
        model.set_projection(torch.tensor(fitted.mean), torch.tensor(fitted.matrix), regime.jpeg_quality)
    recipe: dict[str, Any] = {
        "method": "fsd",
        "filters": "learned" if n_photos else "fixed",
        "filter_photos": None if config.photos is None else str(config.photos),
        "n_photos": n_photos,
        "data": {"root": str(config.data), "classes": classes, "n_images": lossless.n_images},
        "projection": {**config.projection, "fitted": projection.steps},
    }
    if config.augment:
        recipe[RECIPE_KEY] = [p.spec for p in config.augment]
    if config.jpeg_regimes:
        recipe["regimes"] = {name: {"fitted": p.steps} for name, p in projections.items()}
    else:
        settings.pop("jpeg_regimes")
    meta = WeightsMeta(
        architecture="fsd",
        embedding_dim=projection.output_dim,
        crop_size=window,
        l2_normalize=False,
        kind="descriptor",
        arch_kwargs=settings,
        recipe=recipe,
        rule=dict(config.rule),
    )
    meta = save_weights(config.out, model.cpu(), meta)
    return DescriptorResult(
        meta=meta, projection=projection, n_photos=n_photos, failures=failures, classes=classes, projections=projections
    )
