"""Grouping the images rejected as unknown: a few new generators often made most of them.

The unknowns' embeddings are clustered with HDBSCAN (density-based: it needs no number of
clusters and leaves points in no dense group as noise, label -1). Each cluster is described
by its nearest known generator: the L2 distance of the cluster's mean embedding to each
generator's centroid in the store's space.

With JPEG regimes each regime's embeddings live in their own space (another head, other
references), so the unknowns are clustered per regime and compared with that regime's store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from osma_cli.attribution import UNKNOWN
from osma_cli.embed import Embedder, EmbedOptions
from osma_cli.references import ReferenceStore
from osma_cli.regime_store import AnyStore, RegimeStores

if TYPE_CHECKING:
    from osma_cli.api import FileAttribution

DEFAULT_MIN_CLUSTER_SIZE = 5
NOISE = -1


def cluster_embeddings(embeddings: np.ndarray, min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE) -> np.ndarray:
    """HDBSCAN labels (0..k-1, ordered by cluster size, largest first; -1: noise) for (N, D) vectors.

    One dense group is one cluster (``allow_single_cluster``): the unknowns may all come from
    a single new generator. Fewer points than ``min_cluster_size`` cannot form a cluster: all noise, without asking HDBSCAN
    (which refuses too few samples).
    """
    from sklearn.cluster import HDBSCAN

    n = len(embeddings)
    if n < max(2, min_cluster_size):
        return np.full(n, NOISE, dtype=int)
    clusterer = HDBSCAN(min_cluster_size=min_cluster_size, allow_single_cluster=True, copy=True)
    raw = clusterer.fit_predict(np.asarray(embeddings, np.float64))
    found = [label for label in np.unique(raw) if label != NOISE]
    order = sorted(found, key=lambda label: (-int((raw == label).sum()), int(np.flatnonzero(raw == label)[0])))
    labels = np.full(n, NOISE, dtype=int)
    for new, old in enumerate(order):
        labels[raw == old] = new
    return labels


def nearest_centroids(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid, its L2 distance) for each of the (M, D) ``points``."""
    points = np.asarray(points, np.float64)
    centroids = np.asarray(centroids, np.float64)
    distances = np.sqrt(np.maximum(((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2), 0.0))
    nearest = distances.argmin(axis=1)
    return nearest, distances[np.arange(len(points)), nearest]


@dataclass(frozen=True)
class Cluster:
    """A group of unknown images that look alike: perhaps one new generator."""

    id: int
    regime: str | None
    files: tuple[Path, ...]
    nearest: str
    """The known generator whose centroid is nearest the cluster's mean."""
    distance: float
    """L2 distance from the cluster's mean embedding to that centroid (the store's space)."""

    @property
    def size(self) -> int:
        return len(self.files)


@dataclass
class Discovery:
    """What ``discover_files`` found; ``failures`` are the files that could not be attributed."""

    clusters: list[Cluster] = field(default_factory=list)
    unclustered: list[Path] = field(default_factory=list)
    n_files: int = 0
    n_unknown: int = 0
    failures: list["FileAttribution"] = field(default_factory=list)
    """``FileAttribution``s without an attribution (unreadable, or skipped on purpose)."""


def group_unknowns(embeddings: np.ndarray, files: Sequence[Path], store: ReferenceStore, *, regime: str | None,
                   min_cluster_size: int, first_id: int = 0) -> tuple[list[Cluster], list[Path]]:
    """Clusters (ids from ``first_id``) and unclustered files of one space's unknowns."""
    labels = cluster_embeddings(embeddings, min_cluster_size)
    count = int(labels.max()) + 1 if len(labels) else 0
    if count == 0:
        return [], list(files)
    means = np.stack([embeddings[labels == label].mean(axis=0) for label in range(count)])
    nearest, distances = nearest_centroids(means, store.centroids())
    names = store.names
    clusters = [Cluster(id=first_id + label, regime=regime,
                        files=tuple(f for f, mine in zip(files, labels == label) if mine),
                        nearest=names[nearest[label]], distance=float(distances[label]))
                for label in range(count)]
    return clusters, [f for f, label in zip(files, labels) if label == NOISE]


def discover_files(embedder: Embedder, store: AnyStore, paths: Sequence[Path], *,
                   threshold: float | Mapping[str, float],
                   min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
                   options: EmbedOptions = EmbedOptions(),
                   on_progress: Callable[[int], None] | None = None) -> Discovery:
    """Attribute ``paths``, then cluster the unknowns' embeddings (those they were scored with), per regime."""
    from osma_cli.api import attribute_files
    from osma_cli.classifier import require_embedding_model

    require_embedding_model(embedder.meta, "group unknown images")
    result = Discovery()
    unknown: dict[str | None, list] = {}
    for item in attribute_files(embedder, store, paths, threshold=threshold, options=options,
                                on_progress=on_progress):
        result.n_files += 1
        if item.attribution is None:
            result.failures.append(item)
        elif item.verdict == UNKNOWN:
            unknown.setdefault(item.regime, []).append(item)
    result.n_unknown = sum(len(items) for items in unknown.values())
    regimes = {regime.name: regime for regime in embedder.regimes}
    for name, items in unknown.items():
        single = store.store_for(regimes[name]) if isinstance(store, RegimeStores) else store
        embeddings = np.stack([item.embedding for item in items])
        clusters, rest = group_unknowns(embeddings, [item.path for item in items], single, regime=name,
                                        min_cluster_size=min_cluster_size, first_id=len(result.clusters))
        result.clusters += clusters
        result.unclustered += rest
    return result
