"""Embedding images: crops through a feature extractor, on whatever device there is.

This is the expensive half of attribution (the other half, a nearest-centroid lookup, is a
small matrix product), so it is kept apart: embeddings can be stored and re-used.

Decoding and cropping run in DataLoader worker processes, overlapped with the network.
Crops travel as uint8 (four times less to copy than float) and become floats in [0, 1] on
the device. On CUDA: pinned memory, non-blocking copies, ``channels_last`` and mixed
precision, unless the model's ``input_policy`` says otherwise (a descriptor takes float64
pixels, never autocast, and its crops are never padded). The embedding convention of the
weights (L2-normalised or not) is applied here and only here, through ``finalize_embeddings``.

Two stages, so that the costly one can be cached: ``features`` (a network's embedding, or a
descriptor's raw self-description), identified by ``feature_identity``, then ``head``
(nothing for a network; a descriptor's fitted projection), which is cheap and may be
refitted without describing any image again.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from osma_cli.data import DEFAULT_MAX_PIXELS, CropBatch, ImageCropDataset, SkipReason, crop_loader, default_workers
from osma_cli.defaults import EMBED_BATCH_SIZE, N_CROPS, SMALL
from osma_cli.errors import UsageError
from osma_cli.nets.base import DescriptorNet, ImageModel, InputPolicy
from osma_cli.regimes import LOSSLESS, Regime
from osma_cli.runtime import autocast_context, resolve_device
from osma_cli.weights import WeightsMeta, feature_identity, load_weights


def finalize_embeddings(raw: torch.Tensor, l2_normalize: bool) -> torch.Tensor:
    """Apply the weights' embedding convention (the one place it is applied)."""
    raw = raw.float()
    return F.normalize(raw, dim=1) if l2_normalize else raw


def aggregate_crops(per_crop: torch.Tensor, owners: torch.Tensor, n_images: int, l2_normalize: bool) -> torch.Tensor:
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

    @property
    def vector(self) -> np.ndarray:
        """The embedding of an image that has one (``ok``); asking a failed image's is a bug."""
        if self.embedding is None:
            raise ValueError(f"{self.path} has no embedding ({self.error or 'none computed'})")
        return self.embedding


@dataclass(frozen=True)
class EmbedOptions:
    """How files are turned into crops and batched; shared by every command and the benchmark."""

    n_crops: int = N_CROPS
    batch_size: int = EMBED_BATCH_SIZE
    workers: int | None = None
    small: str = SMALL
    max_pixels: int | None = None

    def kwargs(self) -> dict:
        out = {"n_crops": self.n_crops, "batch_size": self.batch_size, "workers": self.workers, "small": self.small}
        if self.max_pixels is not None:
            out["max_pixels"] = self.max_pixels
        return out


class Embedder:
    """A feature extractor and its metadata on a device, ready to embed crops or files."""

    def __init__(
        self,
        model: ImageModel,
        meta: WeightsMeta,
        device: torch.device | str = "cpu",
        *,
        mixed_precision: bool = True,
        weights_path: Path | None = None,
    ) -> None:
        self.device = torch.device(device) if isinstance(device, str) else device
        self.meta = meta
        self.weights_path = None if weights_path is None else Path(weights_path)
        self.model = model.to(self.device).eval()
        self.policy = getattr(model, "input_policy", None) or InputPolicy()
        self.mixed_precision = mixed_precision and self.policy.mixed_precision
        self.regime = LOSSLESS
        """The regime this embedder describes in (``for_regime`` gives the others)."""
        self._regimes: tuple[Regime, ...] = self.model_regimes
        self.feature_identity = feature_identity(model)
        if self.device.type == "cuda" and not self.is_descriptor:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_file(cls, path: Path | str, device: str = "auto") -> Embedder:
        resolved = resolve_device(device)
        model, meta = load_weights(path, device=resolved)
        return cls(model, meta, resolved, weights_path=Path(path))

    @property
    def regimes(self) -> tuple[Regime, ...]:
        """The compression regimes this embedder scores in (``osma_cli.regimes``): the model's,
        lossless only for most; just its own for a ``for_regime`` view."""
        return self._regimes

    @property
    def model_regimes(self) -> tuple[Regime, ...]:
        """Every regime the model has, whatever this embedder is pinned to."""
        return getattr(self.model, "regimes", (LOSSLESS,))

    @property
    def is_routed(self) -> bool:
        """Whether files are routed to a regime by their compression (the model has JPEG regimes)."""
        return len(self.regimes) > 1

    def for_regime(self, regime: Regime) -> Embedder:
        """This embedder pinned to ``regime``: images re-encoded at its quality, its projection.

        Shares the model; only the regime (and so the features' identity) differs. An
        unprojected descriptor describes in any regime: that is how regimes' projections are fitted.
        """
        unprojected = self.descriptor is not None and not self.descriptor.projected
        if regime not in self.regimes and not unprojected:
            raise UsageError(
                f"the model has no {regime.name} regime", hint=f"its regimes: {', '.join(r.name for r in self.regimes)}"
            )
        view = copy.copy(self)
        view.regime = regime
        view._regimes = (regime,)
        view.feature_identity = regime_feature_identity(feature_identity(self.model), regime)
        return view

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

    @property
    def is_descriptor(self) -> bool:
        return isinstance(self.model, DescriptorNet)

    @property
    def descriptor(self) -> DescriptorNet | None:
        """The model where it is a descriptor (``describe``, ``project``), else None."""
        return self.model if isinstance(self.model, DescriptorNet) else None

    @property
    def feature_dim(self) -> int:
        """Width of the cached stage: the embedding, or a descriptor's raw self-description."""
        return self.descriptor.raw_dim if self.descriptor is not None else self.embedding_dim

    @property
    def notes_compression(self) -> bool:
        """Whether a JPEG's record gets a note that this model's verdicts depend on compression:
        a compression-sensitive model with no regimes to route it to (``data.compression.note_for``)."""
        return self.policy.compression_sensitive and len(self.model_regimes) == 1

    def small_policy(self, requested: str) -> str:
        """The model's own small-image policy where it has one (``skip`` is always honoured)."""
        if self.policy.small is None or requested == "skip":
            return requested
        return self.policy.small

    @torch.inference_mode()
    def features_of_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """(M, 3, h, w) uint8 crops -> (M, F) float32 features, on the embedder's device."""
        x = crops.to(self.device, non_blocking=True)
        if self.device.type == "cuda" and not self.is_descriptor:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(self.policy.dtype).div_(255.0)
        if self.descriptor is not None:
            return self.descriptor.describe(x).float()
        with autocast_context(self.device, self.mixed_precision):
            raw = self.model(x)
        return finalize_embeddings(raw, self.meta.l2_normalize)

    @torch.inference_mode()
    def head(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Features -> embeddings: a descriptor's projection and the weights' convention."""
        if self.descriptor is None:
            return torch.as_tensor(features)
        raw = torch.as_tensor(features, device=self.device)
        return finalize_embeddings(self.descriptor.project(raw, self.regime.jpeg_quality), self.meta.l2_normalize)

    @torch.inference_mode()
    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """(M, 3, h, w) uint8 crops -> (M, D) float32 embeddings, on the embedder's device."""
        return self.head(self.features_of_crops(crops))

    @torch.inference_mode()
    def features_of_batch(self, batch: CropBatch) -> torch.Tensor:
        """Per-image features (crops averaged) for the decodable images of a batch."""
        parts = [
            (self.features_of_crops(crops), owners.to(self.device, non_blocking=True))
            for crops, owners in batch.parts
            if len(crops)
        ]
        if not parts:
            return torch.zeros(0, self.feature_dim)
        per_crop = torch.cat([features for features, _ in parts])
        owners = torch.cat([owners for _, owners in parts])
        return aggregate_crops(
            per_crop, owners, len(batch.indices), l2_normalize=self.meta.l2_normalize and not self.is_descriptor
        )

    @torch.inference_mode()
    def embed_batch(self, batch: CropBatch) -> torch.Tensor:
        """Per-image embeddings (crops averaged) for the decodable images of a batch."""
        return self.head(self.features_of_batch(batch))

    def embed_files(
        self,
        paths: Sequence[Path],
        *,
        n_crops: int = 1,
        batch_size: int = 32,
        workers: int | None = None,
        small: str = "pad",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        features_only: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[EmbeddedImage]:
        """Embed files in order, streaming results; a bad file yields an error, not an exception.

        ``features_only`` stops before the head (a descriptor's raw self-descriptions, what the
        cache keeps). Memory stays bounded by the batch size and the loader's prefetch,
        whatever the number of files.
        """
        policy = self.small_policy(small)
        dataset = ImageCropDataset(
            list(paths),
            self.crop_size,
            n_crops,
            small=policy,
            max_pixels=max_pixels,
            min_size=self.model.min_input_size if policy == "keep" else 1,
            note_compression=self.notes_compression,
            reencode_quality=self.regime.jpeg_quality,
        )
        loader = crop_loader(
            dataset,
            batch_size=batch_size,
            workers=default_workers() if workers is None else workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            yield from self._results(batch, dataset, features_only)
            if on_progress is not None:
                on_progress(len(batch.indices) + len(batch.failures))

    def _results(self, batch: CropBatch, dataset: ImageCropDataset, features_only: bool) -> Iterable[EmbeddedImage]:
        embedded: dict[int, np.ndarray] = {}
        if batch.indices:
            features = self.features_of_batch(batch)
            vectors = (features if features_only else self.head(features)).cpu().numpy()
            embedded = dict(zip(batch.indices, vectors))
        errors = dict(batch.failures)
        for index in sorted(set(embedded) | set(errors)):
            error = errors.get(index)
            yield EmbeddedImage(
                index=index,
                path=dataset.path(index),
                embedding=embedded.get(index),
                error=None if error is None else str(error),
                warnings=batch.warnings.get(index, ()),
                skipped=isinstance(error, SkipReason),
            )


def regime_feature_identity(identity: str, regime: Regime) -> str:
    """Features of images re-encoded for a JPEG regime are other features than the lossless ones."""
    if regime.jpeg_quality is None:
        return identity
    return hashlib.sha256(f"{identity}\0reencoded-jpeg\0{regime.jpeg_quality}".encode()).hexdigest()


class HasVector(Protocol):
    """An embedded image or an attribution: anything that carries its vector."""

    @property
    def vector(self) -> np.ndarray: ...


def split_embedded(
    items: Iterable[EmbeddedImage], width: int
) -> tuple[list[EmbeddedImage], np.ndarray, list[EmbeddedImage]]:
    """The images that have a vector, their vectors stacked (``(0, width)`` when none), and
    the failures: the one "drop failures, stack" step of every caller that embeds a list."""
    good: list[EmbeddedImage] = []
    bad: list[EmbeddedImage] = []
    for item in items:
        (good if item.ok else bad).append(item)
    return good, stack_vectors(good, width), bad


def stack_vectors(items: Sequence[HasVector], width: int) -> np.ndarray:
    """``(len(items), width)``: each item's vector a row; ``(0, width)`` float32 for none."""
    if not items:
        return np.zeros((0, width), dtype=np.float32)
    return np.stack([item.vector for item in items])


def embed_all(embedder: Embedder, paths: Sequence[Path], **kwargs) -> tuple[np.ndarray, list[EmbeddedImage]]:
    """Embed a list of files; returns (embeddings of the good ones, the failures)."""
    _, matrix, bad = split_embedded(embedder.embed_files(paths, **kwargs), embedder.embedding_dim)
    return matrix, bad
