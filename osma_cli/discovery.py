"""Grouping the images rejected as unknown: a few new generators often made most of them.

The unknowns' embeddings are clustered with HDBSCAN (density-based: it needs no number of
clusters and leaves points in no dense group as noise, label -1), or with average-linkage
agglomerative clustering cut at a distance taken from the known generators' spread (groups
smaller than ``min_cluster_size`` are then noise). Each cluster is described by its nearest
known generator: the L2 distance of the cluster's mean embedding to each generator's
centroid in the store's space.

With JPEG regimes each regime's embeddings live in their own space (another head, other
references), so the unknowns are clustered per regime and compared with that regime's store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from osma_cli.attribution import UNKNOWN
from osma_cli.defaults import DISCOVERY_CUT_SCALE, DISCOVERY_METHOD, DISCOVERY_METHODS, DISCOVERY_MIN_CLUSTER_SIZE
from osma_cli.embed import Embedder, EmbedOptions, stack_vectors
from osma_cli.errors import UsageError
from osma_cli.references import ReferenceStore
from osma_cli.regime_store import AnyStore, RegimeStores

if TYPE_CHECKING:
    from osma_cli.api import FileAttribution

NOISE = -1
HDBSCAN_METHOD, AGGLOMERATIVE = DISCOVERY_METHODS
METHODS = DISCOVERY_METHODS
DEFAULT_MIN_CLUSTER_SIZE = DISCOVERY_MIN_CLUSTER_SIZE
DEFAULT_METHOD = DISCOVERY_METHOD
DEFAULT_CUT_SCALE = DISCOVERY_CUT_SCALE
"""sigma is the RMS distance of a generator's images to its centroid, so two images of one
generator lie about sqrt(2) sigma apart, and the average linkage of two groups of one
generator is about that. Measured best: 1.5 for MISLNet, 3 for the descriptor; 2 is near
both (docs/discovery.md)."""


def cluster_embeddings(
    embeddings: np.ndarray,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    *,
    method: str = HDBSCAN_METHOD,
    distance_cut: float | None = None,
) -> np.ndarray:
    """Cluster labels (0..k-1, ordered by cluster size, largest first; -1: noise) for (N, D) vectors.

    ``hdbscan``: one dense group is one cluster (``allow_single_cluster``): the unknowns may
    all come from a single new generator. ``agglomerative``: average linkage, merging while
    groups are closer than ``distance_cut``; groups smaller than ``min_cluster_size`` are
    noise. Fewer points than ``min_cluster_size`` cannot form a cluster: all noise, without
    asking the library (HDBSCAN refuses too few samples).
    """
    if method not in METHODS:
        raise UsageError(f"unknown clustering method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    n = len(embeddings)
    if n < max(2, min_cluster_size):
        return np.full(n, NOISE, dtype=int)
    points = np.asarray(embeddings, np.float64)
    if method == HDBSCAN_METHOD:
        from sklearn.cluster import HDBSCAN

        raw = HDBSCAN(min_cluster_size=min_cluster_size, allow_single_cluster=True, copy=True).fit_predict(points)
    else:
        from sklearn.cluster import AgglomerativeClustering

        if distance_cut is None or not np.isfinite(distance_cut) or distance_cut <= 0:
            raise UsageError(f"agglomerative clustering needs a positive distance cut, got {distance_cut}")
        raw = AgglomerativeClustering(
            n_clusters=None, distance_threshold=float(distance_cut), linkage="average"
        ).fit_predict(points)
        sizes = np.bincount(raw)
        raw = np.where(sizes[raw] >= min_cluster_size, raw, NOISE)
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
    sha256: tuple[str | None, ...] = ()
    """The sha256 of each file's bytes when it was clustered (None: unreadable by then), so
    that ``--enroll`` can refuse files that changed since the analyst saw them."""

    @property
    def size(self) -> int:
        return len(self.files)


@dataclass
class SpaceView:
    """One embedding space's points (a regime's, or the model's): what the 2-D map draws."""

    regime: str | None
    store: ReferenceStore
    accepted: np.ndarray
    """(n, D) embeddings of the images accepted as a known generator."""
    accepted_as: list[str]
    """The generator each was accepted as."""
    unknown: np.ndarray
    """(m, D) embeddings of the unknown images."""
    labels: np.ndarray
    """(m,) the cluster id of each unknown image (the ``Cluster.id``), -1 for unclustered."""


@dataclass
class Discovery:
    """What ``discover_files`` found; ``failures`` are the files that could not be attributed."""

    clusters: list[Cluster] = field(default_factory=list)
    unclustered: list[Path] = field(default_factory=list)
    n_files: int = 0
    n_unknown: int = 0
    failures: list[FileAttribution] = field(default_factory=list)
    """``FileAttribution``s without an attribution (unreadable, or skipped on purpose)."""
    views: list[SpaceView] = field(default_factory=list)
    """Per space (regime), the accepted and unknown embeddings, for the map."""
    method: str = DEFAULT_METHOD
    distance_cuts: dict[str | None, float] = field(default_factory=dict)
    """The agglomerative cut used in each space (empty for HDBSCAN)."""


def distance_cut(store: ReferenceStore, scale: float = DEFAULT_CUT_SCALE) -> float:
    """The agglomerative distance cut for ``store``'s space: ``scale`` x the known generators' median sigma."""
    sigmas = store.sigmas()
    if not len(sigmas):
        raise UsageError("the reference store holds no generators: no spread to take a distance cut from")
    return float(scale * np.median(sigmas))


def group_labels(
    embeddings: np.ndarray,
    store: ReferenceStore,
    *,
    min_cluster_size: int,
    method: str = DEFAULT_METHOD,
    cut_scale: float = DEFAULT_CUT_SCALE,
) -> np.ndarray:
    """Cluster labels of one space's unknowns, the cut (for ``agglomerative``) from ``store``'s spread."""
    cut = distance_cut(store, cut_scale) if method == AGGLOMERATIVE else None
    return cluster_embeddings(embeddings, min_cluster_size, method=method, distance_cut=cut)


def group_unknowns(
    embeddings: np.ndarray,
    files: Sequence[Path],
    store: ReferenceStore,
    *,
    regime: str | None,
    min_cluster_size: int,
    first_id: int = 0,
    method: str = DEFAULT_METHOD,
    cut_scale: float = DEFAULT_CUT_SCALE,
    hash_files: bool = False,
) -> tuple[list[Cluster], list[Path], np.ndarray]:
    """Clusters (ids from ``first_id``), unclustered files and each file's cluster id (-1: none)
    of one space's unknowns; ``hash_files`` records each clustered file's sha256."""
    from osma_cli.data.files import file_sha256

    labels = (
        group_labels(embeddings, store, min_cluster_size=min_cluster_size, method=method, cut_scale=cut_scale)
        if len(files)
        else np.zeros(0, int)
    )
    count = int(labels.max()) + 1 if len(labels) else 0
    ids = np.where(labels == NOISE, NOISE, labels + first_id)
    if count == 0:
        return [], list(files), ids
    means = np.stack([embeddings[labels == label].mean(axis=0) for label in range(count)])
    nearest, distances = nearest_centroids(means, store.centroids())
    names = store.names
    clusters = []
    for label in range(count):
        members = tuple(f for f, mine in zip(files, labels == label) if mine)
        clusters.append(
            Cluster(
                id=first_id + label,
                regime=regime,
                files=members,
                nearest=names[nearest[label]],
                distance=float(distances[label]),
                sha256=tuple(file_sha256(f) for f in members) if hash_files else (),
            )
        )
    return clusters, [f for f, label in zip(files, labels) if label == NOISE], ids


def discover_files(
    embedder: Embedder,
    store: AnyStore,
    paths: Sequence[Path],
    *,
    threshold: float | Mapping[str, float],
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    method: str = DEFAULT_METHOD,
    cut_scale: float = DEFAULT_CUT_SCALE,
    options: EmbedOptions = EmbedOptions(),
    on_progress: Callable[[int], None] | None = None,
) -> Discovery:
    """Attribute ``paths``, then cluster the unknowns' embeddings (those they were scored with), per regime.

    Each clustered file's sha256 is recorded, so that enrolling a cluster later can prove it
    enrols the bytes that were clustered (``osma_cli.discovery_enroll``).
    """
    from osma_cli.api import attribute_files
    from osma_cli.classifier import require_embedding_model

    require_embedding_model(embedder.meta, "group unknown images")
    if method not in METHODS:
        raise UsageError(f"unknown clustering method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    result = Discovery(method=method)
    unknown: dict[str | None, list[FileAttribution]] = {}
    accepted: dict[str | None, list[FileAttribution]] = {}
    accepted_as: dict[str | None, list[str]] = {}
    for item in attribute_files(embedder, store, paths, threshold=threshold, options=options, on_progress=on_progress):
        result.n_files += 1
        if item.attribution is None:
            result.failures.append(item)
        else:
            unknown.setdefault(item.regime, [])
            (unknown if item.verdict == UNKNOWN else accepted).setdefault(item.regime, []).append(item)
            if item.verdict != UNKNOWN:
                accepted_as.setdefault(item.regime, []).append(item.attribution.candidate)
    result.n_unknown = sum(len(items) for items in unknown.values())
    regimes = {regime.name: regime for regime in embedder.regimes}
    for name, items in unknown.items():
        if isinstance(store, RegimeStores):
            assert name is not None, "routed attribution names each file's regime"
            single = store.store_for(regimes[name])
        else:
            single = store
        dim = single.embedding_dim
        embeddings = stack_vectors(items, dim)
        if method == AGGLOMERATIVE:
            result.distance_cuts[name] = distance_cut(single, cut_scale)
        clusters, rest, ids = group_unknowns(
            embeddings,
            [item.path for item in items],
            single,
            regime=name,
            min_cluster_size=min_cluster_size,
            first_id=len(result.clusters),
            method=method,
            cut_scale=cut_scale,
            hash_files=True,
        )
        result.clusters += clusters
        result.unclustered += rest
        known = accepted.get(name, [])
        result.views.append(
            SpaceView(
                regime=name,
                store=single,
                accepted=stack_vectors(known, dim),
                accepted_as=accepted_as.get(name, []),
                unknown=embeddings,
                labels=ids,
            )
        )
    return result
