"""Crops of real photos rendered through simulated cameras: camera-model pre-training
without a camera database.

Fang et al. pre-train the embedding on camera-model identification, so that it learns the
traces an image-forming pipeline leaves (colour-filter interpolation, denoising and
sharpening, tone curves, JPEG quantisation) before it learns those of generators. A user
without a camera database gets the same kind of task here: real photos, taken as scene
radiance, re-rendered through many distinct simulated pipelines
(``osma_cli.data.camera_pipeline``), one class per pipeline.

``SimulatedCameraDataset`` renders a small region around each training crop, not the whole
photo. The region is 16-aligned in the photo (the colour-filter period and the JPEG
macro-block) and extends ``CameraPipeline.margin`` pixels past the crop on every side: more
than the filters reach (``CameraPipeline.reach``), plus one macro-block when chroma is
subsampled (the decoder's chroma up-sampling reads the neighbouring block, whose values
depend on all its pixels). So the crop of a rendered region is, bit for bit, the crop of
the rendered photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from osma_cli.data.camera_pipeline import ALIGN, CameraPipeline, make_pipelines
from osma_cli.data.decode import load_rgb
from osma_cli.errors import DataError, ImageError, UsageError

__all__ = ["SimulatedCameraDataset", "CameraPipeline", "make_pipelines"]
"""``CameraPipeline`` and ``make_pipelines`` are re-exported: callers that build a dataset
(``osma_cli.training.pretrain``) import them from here with it."""


def _region_origin(size: int, extent: int, rng: np.random.Generator) -> int:
    if size <= extent:
        return 0
    return ALIGN * int(rng.integers(0, (size - extent) // ALIGN + 1))


def _region(photo: np.ndarray, extent: int, rng: np.random.Generator) -> np.ndarray:
    """An ``(extent, extent, 3)`` window at a drawn ``ALIGN``-aligned origin (top, then
    left); a photo smaller than ``extent`` is mirror-padded at its bottom or right."""
    top = _region_origin(photo.shape[0], extent, rng)
    left = _region_origin(photo.shape[1], extent, rng)
    window = photo[top : top + extent, left : left + extent]
    pad = ((0, extent - window.shape[0]), (0, extent - window.shape[1]), (0, 0))
    if pad[0][1] or pad[1][1]:
        window = np.pad(window, pad, mode="symmetric")
    return window


class SimulatedCameraDataset(Dataset):
    """Crops of real photos rendered through simulated cameras; the label is the camera.

    Item ``i`` of epoch ``e`` uses pipeline ``i mod len(pipelines)`` (so every class gets
    the same number of items in an epoch) and a photo and region drawn from a generator
    seeded with ``(seed, e, i)``: the same item gives the same pixels whatever the worker
    count or the order of access, and an interrupted run resumes exactly. An epoch has
    ``samples_per_epoch`` items, by default one per photo and pipeline.

    The epoch lives in shared memory, so ``set_epoch`` reaches DataLoader workers that were
    started before it (``persistent_workers=True``); call it before iterating the epoch.
    ``cache_decoded=True`` keeps each decoded photo in memory (3 MB a megapixel): decoding
    a 1024x1024 JPEG costs more than rendering a crop. With DataLoader workers each worker
    holds its own cache, lost when the worker ends; ``check_readable`` in the main process
    first fills one cache that forked workers share.
    """

    def __init__(
        self,
        photos: Sequence[Path | str],
        pipelines: Sequence[CameraPipeline],
        crop: int,
        *,
        seed: int,
        samples_per_epoch: int | None = None,
        cache_decoded: bool = False,
    ) -> None:
        if not photos:
            raise DataError("no photos to render", hint="give at least one real photo")
        if not pipelines:
            raise UsageError("no camera pipelines given")
        if crop < 1:
            raise UsageError(f"crop size must be at least 1, not {crop}")
        if seed < 0:
            raise UsageError(f"seed must be 0 or more, not {seed}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise UsageError(f"samples per epoch must be at least 1, not {samples_per_epoch}")
        self.photos = tuple(Path(p) for p in photos)
        self.pipelines = tuple(pipelines)
        self.crop = crop
        self.seed = seed
        self.samples_per_epoch = (
            samples_per_epoch if samples_per_epoch is not None else len(self.photos) * len(self.pipelines)
        )
        self.cache_decoded = cache_decoded
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.samples_per_epoch

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of ``epoch`` from now on (in this process and in its workers)."""
        if epoch < 0:
            raise UsageError(f"epoch must be 0 or more, not {epoch}")
        self._epoch[0] = epoch

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(f"sim{k}-{p.cfa}-{p.demosaic}" for k, p in enumerate(self.pipelines))

    @property
    def labels(self) -> np.ndarray:
        """``(len,) int64``: the class of every item (known without rendering)."""
        return np.arange(len(self), dtype=np.int64) % len(self.pipelines)

    def _photo(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        photo = load_rgb(self.photos[index])
        if self.cache_decoded:
            self._cache[index] = photo
        return photo

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``((3, crop, crop) uint8, pipeline index)``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        label = index % len(self.pipelines)
        try:
            photo = self._photo(int(rng.integers(len(self.photos))))
        except ImageError as exc:
            raise DataError(f"photo {exc}", hint="remove it from the photo list") from None
        pipeline = self.pipelines[label]
        margin = pipeline.margin
        extent = -(-self.crop // ALIGN) * ALIGN + 2 * margin
        rendered = pipeline.render(_region(photo, extent, rng))
        window = rendered[margin : margin + self.crop, margin : margin + self.crop]
        return torch.from_numpy(np.ascontiguousarray(window.transpose(2, 0, 1))), label

    def check_readable(self) -> list[tuple[Path, str]]:
        """Decode every photo once; ``(path, reason)`` for each that fails, in order.
        With ``cache_decoded`` the photos are kept, so rendering does not decode them again."""
        failures: list[tuple[Path, str]] = []
        for index, path in enumerate(self.photos):
            try:
                self._photo(index)
            except ImageError as exc:
                failures.append((path, exc.reason))
        return failures
