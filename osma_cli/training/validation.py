"""The validators ``loop.fit`` calls after every epoch: ``validate(model) -> accuracy``, higher is better.

- ``CentroidValidator`` (metric learning): the attribution rule itself, references
  (centroid and spread) from the centre crops of training images, each validation image
  attributed to the nearest centroid (``score_embeddings``);
- ``ClassifierValidator`` (pre-training): the classifier head's accuracy on held-out crops;
- ``ClosedSetValidator`` (POSE): closed-set accuracy of the arg-max class.

The first and the last embed through ``Embedder.embed_files``, the same crops, batching and
normalisation as ``osma attribute``, so the accuracy they report is the one the tool will
have. ``embed_labeled`` is that embedding with the files' labels (``embed.embed_all``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from osma_cli.attribution import score_embeddings
from osma_cli.data.training_sets import LabeledFiles
from osma_cli.embed import EmbeddedImage, Embedder, embed_all
from osma_cli.nets import ClassifierNet, EmbeddingNet
from osma_cli.references import MIN_IMAGES, ReferenceStore
from osma_cli.runtime import autocast_context
from osma_cli.training.loop import to_device_batch
from osma_cli.training.losses import ClassLoss
from osma_cli.weights import WeightsMeta


def embed_labeled(
    embedder: Embedder, files: LabeledFiles, *, batch_size: int, workers: int
) -> tuple[np.ndarray, np.ndarray, list[EmbeddedImage]]:
    """Centre-crop embeddings of ``files`` (a classifier's: class probabilities) with their labels;
    failures listed, not fatal."""
    matrix, failures = embed_all(embedder, list(files.paths), batch_size=batch_size, workers=workers)
    failed = np.zeros(len(files.paths), dtype=bool)
    failed[[item.index for item in failures]] = True
    return matrix, np.asarray(files.labels, dtype=np.int64)[~failed], failures


class CentroidValidator:
    """Nearest-centroid accuracy on known classes, with the attribution rule's own code."""

    def __init__(
        self,
        references: LabeledFiles,
        queries: LabeledFiles,
        meta: WeightsMeta,
        device: torch.device,
        *,
        batch_size: int,
        workers: int,
        mixed_precision: bool = True,
    ) -> None:
        self.references = references
        self.queries = queries
        self.meta = meta
        self.device = device
        self.batch_size = batch_size
        self.workers = workers
        self.mixed_precision = mixed_precision

    def __call__(self, model: EmbeddingNet) -> float:
        embedder = Embedder(model, self.meta, self.device, mixed_precision=self.mixed_precision)
        ref, ref_labels, _ = embed_labeled(embedder, self.references, batch_size=self.batch_size, workers=self.workers)
        query, query_labels, _ = embed_labeled(embedder, self.queries, batch_size=self.batch_size, workers=self.workers)
        store = ReferenceStore(
            weights_sha256="",
            architecture=self.meta.architecture,
            embedding_dim=self.meta.embedding_dim,
            l2_normalize=self.meta.l2_normalize,
        )
        present = [k for k in range(len(self.references.class_names)) if (ref_labels == k).sum() >= MIN_IMAGES]
        for k in present:
            store.enroll(f"class {k}", ref[ref_labels == k])
        if not present or len(query) == 0:
            return 0.0
        scored = score_embeddings(query, store.centroids(), store.sigmas())
        predicted = np.array(present)[scored.candidates]
        return float((predicted == query_labels).mean())


class ClassifierValidator:
    """Accuracy of the pre-training classifier on held-out images, in dataset order."""

    def __init__(
        self,
        dataset: Dataset,
        head: ClassLoss,
        device: torch.device,
        *,
        batch_size: int,
        workers: int,
        mixed_precision: bool = True,
    ) -> None:
        self.dataset = dataset
        self.head = head
        self.device = device
        self.batch_size = batch_size
        self.workers = workers
        self.mixed_precision = mixed_precision

    @torch.inference_mode()
    def __call__(self, model: EmbeddingNet) -> float:
        model.eval()
        self.head.eval()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(0)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),
        )
        correct = total = 0
        for crops, labels in loader:
            x = to_device_batch(crops, self.device)
            with autocast_context(self.device, self.mixed_precision):
                embeddings = model(x)
            predicted = self.head.predict(embeddings).cpu()
            correct += int((predicted == labels).sum())
            total += len(labels)
        return correct / total if total else 0.0


def validation_probabilities(
    model: ClassifierNet, meta: WeightsMeta, files: LabeledFiles, device: torch.device, *, batch_size: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of the files' centre crops (as ``osma attribute`` computes them) and labels."""
    embedder = Embedder(model, meta, device, mixed_precision=False)
    probs, labels, _ = embed_labeled(embedder, files, batch_size=batch_size, workers=workers)
    return probs, labels


class ClosedSetValidator:
    """POSE's validation: closed-set accuracy of the arg-max class on the files' centre crops."""

    def __init__(
        self, files: LabeledFiles, meta: WeightsMeta, device: torch.device, *, batch_size: int, workers: int
    ) -> None:
        self.files = files
        self.meta = meta
        self.device = device
        self.batch_size = batch_size
        self.workers = workers

    def __call__(self, model: ClassifierNet) -> float:
        model.eval()
        probs, labels = validation_probabilities(
            model, self.meta, self.files, self.device, batch_size=self.batch_size, workers=self.workers
        )
        return float((probs.argmax(1) == labels).mean()) if len(labels) else 0.0
