"""Embedding images: crops through the network, on whatever device there is.

This is the expensive half of attribution (the other half, a nearest-centroid lookup, is a
small matrix product), so it is kept apart: embeddings can be stored and re-used.

Decoding and cropping run in DataLoader worker processes, overlapped with the network.
Crops travel as uint8 (four times less to copy than float) and become floats in [0, 1] on
the device. On CUDA: pinned memory, non-blocking copies, ``channels_last`` and mixed
precision. The embedding convention of the weights (L2-normalised or not) is applied here
and only here, through ``finalize_embeddings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from osma_cli.data import (DEFAULT_MAX_PIXELS, CropBatch, ImageCropDataset, SkipReason, crop_loader,
                           default_workers)
from osma_cli.runtime import autocast_context, resolve_device
from osma_cli.weights import WeightsMeta, load_weights


def finalize_embeddings(raw: torch.Tensor, l2_normalize: bool) -> torch.Tensor:
    """Apply the weights' embedding convention (the one place it is applied)."""
    raw = raw.float()
    return F.normalize(raw, dim=1) if l2_normalize else raw


def aggregate_crops(per_crop: torch.Tensor, owners: torch.Tensor, n_images: int,
                    l2_normalize: bool) -> torch.Tensor:
    """Average the embeddings of each image's crops (then re-normalise if L2)."""
    sums = torch.zeros(n_images, per_crop.shape[1], dtype=per_crop.dtype, device=per_crop.device)
    sums.index_add_(0, owners, per_crop)
    counts = torch.bincount(owners, minlength=n_images).clamp_min(1).to(per_crop.dtype)
    return finalize_embeddings(sums / counts[:, None], l2_normalize)


@dataclass(frozen=True)
class EmbeddedImage:
    """One input file: its embedding, or why it has none."""

    index: int
    path: Path
    embedding: np.ndarray | None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    """Damage found in a file that still decoded (see ``osma_cli.data.decode``)."""
    skipped: bool = False
    """No embedding on purpose (``small="skip"``): not an unreadable file."""

    @property
    def ok(self) -> bool:
        return self.error is None


class Embedder:
    """A network and its metadata on a device, ready to embed crops or files."""

    def __init__(self, model: torch.nn.Module, meta: WeightsMeta, device: torch.device | str = "cpu",
                 *, mixed_precision: bool = True, weights_path: Path | None = None) -> None:
        self.device = torch.device(device) if isinstance(device, str) else device
        self.meta = meta
        self.weights_path = None if weights_path is None else Path(weights_path)
        self.model = model.to(self.device).eval()
        self.mixed_precision = mixed_precision
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_file(cls, path: Path | str, device: str = "auto") -> "Embedder":
        resolved = resolve_device(device)
        model, meta = load_weights(path, device=resolved)
        return cls(model, meta, resolved, weights_path=Path(path))

    @property
    def crop_size(self) -> int:
        return self.meta.crop_size

    @property
    def embedding_dim(self) -> int:
        """Width of the per-image vector: an embedding, or a classifier's class probabilities."""
        return self.meta.output_dim

    @property
    def is_classifier(self) -> bool:
        return self.meta.is_classifier

    @torch.inference_mode()
    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """(M, 3, c, c) uint8 crops -> (M, D) float32 embeddings, on the embedder's device."""
        x = crops.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.float().div_(255.0)
        with autocast_context(self.device, self.mixed_precision):
            raw = self.model(x)
        return finalize_embeddings(raw, self.meta.l2_normalize)

    @torch.inference_mode()
    def embed_batch(self, batch: CropBatch) -> torch.Tensor:
        """Per-image embeddings (crops averaged) for the decodable images of a batch."""
        per_crop = self.embed_crops(batch.crops)
        owners = batch.owners.to(self.device, non_blocking=True)
        return aggregate_crops(per_crop, owners, len(batch.indices), self.meta.l2_normalize)

    def embed_files(self, paths: Sequence[Path], *, n_crops: int = 1, batch_size: int = 32,
                    workers: int | None = None, small: str = "pad",
                    max_pixels: int = DEFAULT_MAX_PIXELS,
                    on_progress: Callable[[int], None] | None = None) -> Iterator[EmbeddedImage]:
        """Embed files in order, streaming results; a bad file yields an error, not an exception.

        Memory stays bounded by the batch size and the loader's prefetch, whatever the
        number of files.
        """
        dataset = ImageCropDataset(list(paths), self.crop_size, n_crops, small=small, max_pixels=max_pixels)
        loader = crop_loader(dataset, batch_size=batch_size,
                             workers=default_workers() if workers is None else workers,
                             pin_memory=self.device.type == "cuda")
        for batch in loader:
            yield from self._results(batch, dataset)
            if on_progress is not None:
                on_progress(len(batch.indices) + len(batch.failures))

    def _results(self, batch: CropBatch, dataset: ImageCropDataset) -> Iterable[EmbeddedImage]:
        embedded: dict[int, np.ndarray] = {}
        if batch.indices:
            vectors = self.embed_batch(batch).cpu().numpy()
            embedded = dict(zip(batch.indices, vectors))
        errors = dict(batch.failures)
        for index in sorted(set(embedded) | set(errors)):
            error = errors.get(index)
            yield EmbeddedImage(index=index, path=dataset.path(index), embedding=embedded.get(index),
                                error=None if error is None else str(error),
                                warnings=batch.warnings.get(index, ()),
                                skipped=isinstance(error, SkipReason))


def embed_all(embedder: Embedder, paths: Sequence[Path], **kwargs) -> tuple[np.ndarray, list[EmbeddedImage]]:
    """Embed a list of files; returns (embeddings of the good ones, the failures)."""
    good, bad = [], []
    for item in embedder.embed_files(paths, **kwargs):
        (good if item.ok else bad).append(item)
    matrix = (np.stack([g.embedding for g in good]) if good
              else np.zeros((0, embedder.embedding_dim), dtype=np.float32))
    return matrix, bad
