"""Fang et al.'s rule (README, "How it decides"): nearest centroid, L2 distance normalised by spread.

Per generator ``i`` with running sums ``n_i``, ``s_i = sum h`` and ``q_i = sum ||h||^2``::

    centroid r_i = s_i / n_i
    sigma_i      = sqrt( (q_i - ||s_i||^2 / n_i) / (n_i - 1) )     # because sum ||h - r||^2 = q - n ||r||^2
    candidate    S(x) = argmin_i ||h(x) - r_i||
    score        s(x) = ||h(x) - r_S|| / sigma_S

The candidate is chosen on the raw distance and the score is the normalized one (as in the
paper), so ``ScoredBatch.distances`` and ``.normalized`` differ for this rule only. It
needs no statistics beyond the three sums every store keeps, which is why old stores,
which kept only these, are ``fang`` stores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osma_cli.rules.base import GeneratorStats, OpenSetRule, ScoredBatch, class_groups, require_generators

MIN_SIGMA = 1e-12


def reference_spread(count: int, vector_sum: np.ndarray, sq_norm_sum: float) -> float:
    """sigma from running sums: sqrt((q - ||s||^2 / n) / (n - 1)); 0 below two images."""
    if count < 2:
        return 0.0
    scatter = float(sq_norm_sum) - float(np.dot(vector_sum, vector_sum)) / count
    return float(np.sqrt(max(scatter, 0.0) / (count - 1)))


def l2_distances(queries: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, K) Euclidean distances, in float64 so near-ties are resolved consistently."""
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    sq = (q * q).sum(1)[:, None] - 2.0 * q @ c.T + (c * c).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def normalized_distances(distances: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Distances divided by each reference's spread (a zero spread is floored)."""
    return distances / np.maximum(np.asarray(sigmas, dtype=np.float64), MIN_SIGMA)


def score_embeddings(embeddings: np.ndarray, centroids: np.ndarray, sigmas: np.ndarray) -> ScoredBatch:
    """The S rule and the normalized distance on a batch of vectors."""
    if centroids.shape[0] == 0:
        require_generators([])
    distances = l2_distances(embeddings, centroids)
    normalized = normalized_distances(distances, sigmas)
    candidates = distances.argmin(axis=1)
    scores = normalized[np.arange(len(candidates)), candidates]
    return ScoredBatch(candidates=candidates, scores=scores, distances=distances, normalized=normalized)


class FittedFang:
    def __init__(self, centroids: np.ndarray, sigmas: np.ndarray) -> None:
        self.centroids = centroids
        self.sigmas = sigmas

    def score(self, vectors: np.ndarray) -> ScoredBatch:
        return score_embeddings(vectors, self.centroids, self.sigmas)


class FangRule(OpenSetRule):
    name = "fang"
    score_name = "norm. distance"
    meaning = (
        "L2 distance to the nearest generator's centroid divided by that generator's spread "
        "sigma (Fang et al.); higher is more likely unknown"
    )

    def fit(self, generators: Sequence[GeneratorStats]) -> FittedFang:
        require_generators(generators)
        centroids = np.stack([g.vector_sum / g.count for g in generators])
        sigmas = np.array([reference_spread(g.count, g.vector_sum, g.sq_norm_sum) for g in generators])
        return FittedFang(centroids, sigmas)

    def held_out_scores(self, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Exact leave-one-out from the running sums; NaN for generators of fewer than 3 images."""
        emb = np.asarray(vectors, dtype=np.float64)
        classes, own = class_groups(labels)
        counts = np.bincount(own, minlength=len(classes))
        sums = np.stack([emb[own == j].sum(0) for j in range(len(classes))])
        sqs = np.array([np.einsum("ij,ij->", emb[own == j], emb[own == j]) for j in range(len(classes))])
        centroids = sums / counts[:, None]
        sigmas = np.array([reference_spread(int(n), s, q) for n, s, q in zip(counts, sums, sqs)])
        scores = np.full(len(emb), np.nan)
        for i, (x, j) in enumerate(zip(emb, own)):
            if counts[j] < 3:
                continue
            loo_sum = sums[j] - x
            loo_count = int(counts[j] - 1)
            c = centroids.copy()
            c[j] = loo_sum / loo_count
            sig = sigmas.copy()
            sig[j] = reference_spread(loo_count, loo_sum, sqs[j] - float(x @ x))
            d = l2_distances(x[None, :], c)[0]
            scores[i] = normalized_distances(d, sig)[int(d.argmin())]
        return scores
