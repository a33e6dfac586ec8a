"""How well a clustering of unknown images matches their true generators (POSE, Table 5).

Three figures, each over every image, noise included:

- **purity**: each cluster counts the images of its most frequent generator; the sum over
  clusters, divided by the number of images. 1 when no cluster mixes generators; it
  rewards many small clusters, hence the other two.
- **NMI** (normalized mutual information, arithmetic mean of the entropies) and **ARI**
  (adjusted Rand index, 0 for chance), from scikit-learn.

Noise (label -1, the images HDBSCAN puts in no cluster) counts as one more cluster: the
analyst sees it as one pile of "unclustered" images, so a clustering that calls everything
noise scores as badly as one that puts everything in one cluster, and a pure handful of
clusters among much noise does not look perfect. ``clustered`` says which share of the
images fell in a real cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

from osma_cli.errors import UsageError

NOISE = -1


@dataclass(frozen=True)
class ClusteringScores:
    purity: float
    nmi: float
    ari: float
    n_images: int
    n_clusters: int
    """Clusters found, noise not counted."""
    clustered: float
    """Share of the images in a cluster (not noise)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _labels(truth: ArrayLike, found: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth_arr, found_arr = np.asarray(truth), np.asarray(found)
    if truth_arr.ndim != 1 or truth_arr.shape != found_arr.shape:
        raise UsageError(
            f"true and found labels must be 1-D of one length; got {truth_arr.shape} and {found_arr.shape}"
        )
    return truth_arr, found_arr


def purity(truth: ArrayLike, found: ArrayLike) -> float:
    """Share of the images that belong to their cluster's most frequent true class (0 for no images)."""
    truth_arr, found_arr = _labels(truth, found)
    if truth_arr.size == 0:
        return 0.0
    _, truth_ids = np.unique(truth_arr, return_inverse=True)
    _, found_ids = np.unique(found_arr, return_inverse=True)
    table = np.zeros((found_ids.max() + 1, truth_ids.max() + 1), dtype=np.int64)
    np.add.at(table, (found_ids, truth_ids), 1)
    return float(table.max(axis=1).sum() / truth_arr.size)


def clustering_scores(truth: ArrayLike, found: ArrayLike) -> ClusteringScores:
    """Purity, NMI and ARI of cluster labels ``found`` (-1: noise, one more cluster) against ``truth``."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth_arr, found_arr = _labels(truth, found)
    n = int(truth_arr.size)
    if n == 0:
        return ClusteringScores(purity=0.0, nmi=0.0, ari=0.0, n_images=0, n_clusters=0, clustered=0.0)
    return ClusteringScores(
        purity=purity(truth_arr, found_arr),
        nmi=float(normalized_mutual_info_score(truth_arr, found_arr)),
        ari=float(adjusted_rand_score(truth_arr, found_arr)),
        n_images=n,
        n_clusters=len(set(found_arr.tolist()) - {NOISE}),
        clustered=float((found_arr != NOISE).mean()),
    )
