"""Feeding test-time crops to a network: decoding in DataLoader workers.

JPEG decoding is the CPU's limit, so it runs in worker processes, overlapped with the
network. A bad file never stops a batch: its item carries the reason instead of crops and
the batch lists it under ``failures``. Batches count images, not crops, and keep the order
of the file list, so results can be written as they come and matched back to files.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from osma_cli.data.augment import jpeg_recompress
from osma_cli.data.compression import note_for
from osma_cli.data.crops import CropTooSmall, check_crop_policy, extract_crops
from osma_cli.data.decode import DEFAULT_MAX_PIXELS, decode_image
from osma_cli.errors import ImageError, UsageError

CropItem = tuple[int, "torch.Tensor | str", tuple[str, ...]]
"""What the dataset yields: (index, crops, warnings) for a good image, (index, reason,
warnings) for a bad one; ``collate_crops`` also takes items without the warnings."""


class SkipReason(str):
    """The reason of a file left out on purpose (``small="skip"``), not an unreadable one.

    A ``str``, so that it travels where reasons do (and pickles to the main process).
    """


@dataclass
class CropBatch:
    """The crops of a batch of images, with which image each crop came from.

    Crops of one size form one part ``(crops, owners)``; a batch has one part unless the
    crop policy keeps small images at their own size (``small="keep"``), when each distinct
    size is a part of its own, in order of first appearance.
    """

    parts: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    """``(crops (M, 3, h, w) uint8, owners (M,) int64)`` per crop size; an owner is the
    crop's image's position in ``indices``."""
    indices: list[int]
    """Dataset indices of the images that decoded, in order."""
    failures: list[tuple[int, str]]
    """(dataset index, reason) of the images that did not; a ``SkipReason`` for a skip."""
    warnings: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Dataset index -> warnings of the files that have any (damage that still decoded)."""

    @property
    def crops(self) -> torch.Tensor:
        """All crops, when they have one size (the usual case)."""
        return self._single()[0]

    @property
    def owners(self) -> torch.Tensor:
        return self._single()[1]

    def _single(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.parts) != 1:
            raise ValueError(f"this batch holds crops of {len(self.parts)} sizes; iterate over .parts")
        return self.parts[0]

    def pin_memory(self) -> CropBatch:
        """Page-locked copy, so that ``DataLoader(pin_memory=True)`` handles this batch type."""
        return dataclasses.replace(self, parts=tuple((c.pin_memory(), o.pin_memory()) for c, o in self.parts))


class ImageCropDataset(Dataset):
    """The test-time crops (``extract_crops``) of each file in a list.

    The paths are kept in one byte buffer, not a list of Python objects: worker processes
    forked from the main one would otherwise copy the list page by page as reference
    counts change, which for millions of files costs each worker that much memory.
    """

    def __init__(
        self,
        paths: Iterable[str | Path],
        crop: int,
        n_crops: int = 1,
        *,
        small: str = "pad",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_size: int = 1,
        note_compression: bool = False,
        reencode_quality: int | None = None,
    ) -> None:
        """``min_size``: the smallest side a model can take unpadded (``small="keep"``); smaller is an error.

        ``note_compression``: add a warning to each JPEG's item, for models whose verdicts
        depend on the compression (``compression.note_for``). ``reencode_quality``: re-encode
        each decoded image once as a JPEG of this quality before cropping (a model's JPEG
        regime, ``osma_cli.regimes``), so that crops keep the whole image's block grid.
        """
        self.note_compression = note_compression
        self.reencode_quality = reencode_quality
        check_crop_policy(crop, n_crops, small)
        self.min_size = min_size
        if max_pixels < 1:
            raise UsageError(f"max_pixels must be at least 1, not {max_pixels}")
        encoded = [os.fsencode(Path(path)) for path in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(item) for item in encoded], out=self._offsets[1:])
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.crop = crop
        self.n_crops = n_crops
        self.small = small
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def path(self, index: int) -> Path:
        """The file at ``index`` (to name it in reports)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} files")
        index %= len(self)
        start, end = self._offsets[index], self._offsets[index + 1]
        return Path(os.fsdecode(self._blob[start:end].tobytes()))

    def __getitem__(self, index: int) -> CropItem:
        """``(index, (n, 3, c, c) uint8 crops, warnings)``, or ``(index, reason, warnings)``."""
        try:
            decoded = decode_image(self.path(index), max_pixels=self.max_pixels)
        except ImageError as exc:
            return index, exc.reason, ()
        height, width = decoded.pixels.shape[:2]
        if min(height, width) < self.min_size:
            return (
                index,
                (
                    f"image is {width}x{height}, smaller than the {self.min_size}x{self.min_size} "
                    "pixels this model needs"
                ),
                decoded.warnings,
            )
        notes = decoded.warnings
        if self.note_compression and decoded.jpeg_quality is not None:
            notes = (*notes, note_for(decoded.jpeg_quality))
        pixels = decoded.pixels
        if self.reencode_quality is not None:
            pixels = jpeg_recompress(pixels, self.reencode_quality)
        try:
            crops = extract_crops(pixels, self.crop, self.n_crops, small=self.small)
        except CropTooSmall as exc:
            return index, SkipReason(f"{exc} (small images are skipped)"), notes
        return index, torch.from_numpy(crops), notes


def collate_crops(items: Sequence[CropItem], crop: int | None = None) -> CropBatch:
    """Gather dataset items into one ``CropBatch``, one part per crop size.

    ``crop`` only sets the shape of ``crops`` when every image of the batch failed. In a
    worker process the crops are written straight into shared memory, saving the copy the
    hand-over to the main process would make.
    """
    by_shape: dict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    indices: list[int] = []
    failures: list[tuple[int, str]] = []
    warnings: dict[int, tuple[str, ...]] = {}
    for index, item, *rest in items:
        if rest and rest[0]:
            warnings[index] = tuple(rest[0])
        if isinstance(item, str):
            failures.append((index, item))
            continue
        tensors, owners = by_shape.setdefault(tuple(item.shape[1:]), ([], []))
        owners.append(torch.full((item.shape[0],), len(indices), dtype=torch.int64))
        indices.append(index)
        tensors.append(item)
    if not by_shape:
        side = crop or 0
        empty = (torch.empty((0, 3, side, side), dtype=torch.uint8), torch.empty((0,), dtype=torch.int64))
        return CropBatch((empty,), indices, failures, warnings)
    parts = []
    for tensors, owners in by_shape.values():
        out = torch.empty((sum(t.shape[0] for t in tensors), *tensors[0].shape[1:]), dtype=torch.uint8)
        if get_worker_info() is not None:
            out.share_memory_()
        torch.cat(tensors, out=out)
        parts.append((out, torch.cat(owners)))
    return CropBatch(tuple(parts), indices, failures, warnings)


def default_workers() -> int:
    """Loader workers for this machine: one core stays with the main process, at most 8.

    0 (decode in the main process) on a single core, where a worker would only compete
    with the network for it.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return 0 if cpus <= 1 else min(8, cpus - 1)


def crop_loader(dataset: ImageCropDataset, *, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """A loader of ``CropBatch`` es over ``dataset``, in the dataset's order.

    ``batch_size`` counts images. With workers, they persist across epochs and each keeps
    two batches decoded ahead. Pinned memory is asked for only when CUDA is present (it
    serves host-to-GPU copies and is refused elsewhere).
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, not {batch_size}")
    if workers < 0:
        raise UsageError(f"workers must be 0 or more, not {workers}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=functools.partial(collate_crops, crop=dataset.crop),
        pin_memory=pin_memory and torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        in_order=True,
    )
