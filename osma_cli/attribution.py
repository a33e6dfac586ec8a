"""The attribution rule (Fang et al., DESIGN.md section 1), in one place.

Candidate ``S(x) = argmin_k d(h(x), r_k)`` with ``d`` the L2 distance; score
``s = d(h(x), r_S) / sigma_S``; accepted when ``s < tau``, otherwise *unknown*. The score
is a rejection score: higher means more likely unknown. One ``tau`` for all generators.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.references import ReferenceStore

UNKNOWN = "unknown"
MIN_SIGMA = 1e-12


def l2_distances(queries: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, K) Euclidean distances, in float64 so near-ties are resolved consistently."""
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    sq = (q * q).sum(1)[:, None] - 2.0 * q @ c.T + (c * c).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def normalized_distances(distances: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Distances divided by each reference's spread (a zero spread is floored)."""
    return distances / np.maximum(np.asarray(sigmas, dtype=np.float64), MIN_SIGMA)


def is_accepted(scores: np.ndarray | float, tau: float) -> np.ndarray:
    """The acceptance rule: strictly below the threshold."""
    return np.asarray(scores) < tau


@dataclass(frozen=True)
class Candidate:
    name: str
    distance: float
    normalized_distance: float


@dataclass(frozen=True)
class Attribution:
    """The verdict for one image and the evidence behind it."""

    verdict: str
    candidate: str
    score: float
    threshold: float
    top: tuple[Candidate, ...]

    @property
    def accepted(self) -> bool:
        return self.verdict != UNKNOWN

    @property
    def margin(self) -> float:
        """How far below the threshold the score is (negative: rejected)."""
        return self.threshold - self.score


@dataclass(frozen=True)
class ScoredBatch:
    """Nearest-centroid candidates and scores for a batch, as arrays (for metrics)."""

    candidates: np.ndarray
    scores: np.ndarray
    distances: np.ndarray
    normalized: np.ndarray


def score_embeddings(embeddings: np.ndarray, centroids: np.ndarray, sigmas: np.ndarray) -> ScoredBatch:
    """Apply the S rule and the normalized distance to a batch of embeddings."""
    if centroids.shape[0] == 0:
        raise ReferenceStoreError("the reference store holds no generators",
                                  hint="enroll generators with `osma enroll` or `osma build`")
    distances = l2_distances(embeddings, centroids)
    normalized = normalized_distances(distances, sigmas)
    candidates = distances.argmin(axis=1)
    scores = normalized[np.arange(len(candidates)), candidates]
    return ScoredBatch(candidates=candidates, scores=scores, distances=distances, normalized=normalized)


def resolve_threshold(store: ReferenceStore, override: float | None) -> float:
    """``--threshold`` if given, else the store's calibrated tau."""
    if override is not None:
        if not np.isfinite(override) or override <= 0:
            raise UsageError(f"--threshold must be a positive number, got {override}")
        return float(override)
    if store.threshold is None:
        raise ReferenceStoreError("the reference store has no threshold",
                                  hint="pass --threshold, or calibrate it with `osma calibrate`")
    return store.threshold.value


def attribute_embeddings(embeddings: np.ndarray, store: ReferenceStore, *, threshold: float,
                         top_k: int = 1) -> list[Attribution]:
    """Verdicts for a batch of embeddings against every reference in ``store``."""
    if top_k < 1:
        raise UsageError(f"--top must be at least 1, got {top_k}")
    names = store.names
    batch = score_embeddings(embeddings, store.centroids(), store.sigmas())
    accepted = is_accepted(batch.scores, threshold)
    k = min(top_k, len(names))
    order = np.argsort(batch.distances, axis=1, kind="stable")[:, :k]
    results = []
    for i, cand in enumerate(batch.candidates):
        top = tuple(Candidate(names[j], float(batch.distances[i, j]), float(batch.normalized[i, j]))
                    for j in order[i])
        results.append(Attribution(verdict=names[cand] if accepted[i] else UNKNOWN,
                                   candidate=names[cand], score=float(batch.scores[i]),
                                   threshold=float(threshold), top=top))
    return results
