"""A Mahalanobis distance with one covariance shared by the known generators, shrunk.

From each generator's count ``n_i``, sum ``s_i`` and second moment ``M_i = sum h h^T``::

    mu_i = s_i / n_i
    W_i  = M_i - s_i s_i^T / n_i                      # generator i's scatter
    S_w  = sum_i W_i / (N - K)                        # pooled within-generator covariance
    S    = (1 - a) S_w + a (trace(S_w) / D) I          # shrinkage a (``shrinkage``)
    d_i(x) = sqrt( (x - mu_i)^T S^-1 (x - mu_i) )

Candidate ``argmin_i d_i(x)``, score ``d_S(x)``: how many within-generator standard
deviations the image lies from the nearest generator, in the directions where generators
actually vary. Under a Gaussian model ``d^2`` is chi-squared with D degrees of freedom, so
tau scales with ``sqrt(D)``. Shrinkage keeps ``S`` invertible when there are fewer images
than dimensions. Every statistic is a sum, so enrolment stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.rules.base import GeneratorStats, OpenSetRule, ScoredBatch, class_groups, require_generators

FLOOR = 1e-12


def shrunk_covariance(scatter: np.ndarray, dof: int, shrinkage: float) -> np.ndarray:
    """``(1 - a) S_w + a (tr S_w / D) I`` with ``S_w = scatter / dof``; floored so it inverts."""
    if dof < 1:
        raise ReferenceStoreError(
            "a shared covariance needs more images than generators", hint="enroll at least two images per generator"
        )
    s_w = scatter / dof
    d = s_w.shape[0]
    level = max(float(np.trace(s_w)) / d, FLOOR)
    return (1.0 - shrinkage) * s_w + (shrinkage * level + FLOOR * level) * np.eye(d)


def mahalanobis_distances(x: np.ndarray, means: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """(N, K) distances ``sqrt((x - mu_k)^T S^-1 (x - mu_k))`` through one Cholesky factor."""
    factor = np.linalg.cholesky(covariance)
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], means.shape[0]))
    for k, mu in enumerate(means):
        z = np.linalg.solve(factor, (x - mu).T)
        out[:, k] = np.sqrt((z * z).sum(axis=0))
    return out


def _scatter(count: int, vector_sum: np.ndarray, second_moment: np.ndarray) -> np.ndarray:
    return second_moment - np.outer(vector_sum, vector_sum) / count


class FittedMahalanobis:
    def __init__(self, means: np.ndarray, covariance: np.ndarray) -> None:
        self.means = means
        self.covariance = covariance

    def score(self, vectors: np.ndarray) -> ScoredBatch:
        return ScoredBatch.from_matrix(mahalanobis_distances(vectors, self.means, self.covariance))


class MahalanobisRule(OpenSetRule):
    name = "mahalanobis"
    score_name = "Mahalanobis"
    meaning = (
        "Mahalanobis distance to the nearest generator's mean under one covariance shared by "
        "the known generators (shrunk); higher is more likely unknown"
    )
    requires = frozenset({"second_moment"})

    def __init__(self, *, shrinkage: float = 0.1) -> None:
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise UsageError(f"mahalanobis shrinkage must be in [0, 1], got {shrinkage}")
        self.shrinkage = float(shrinkage)

    def params(self) -> dict:
        return {"shrinkage": self.shrinkage}

    def fit(self, generators: Sequence[GeneratorStats]) -> FittedMahalanobis:
        require_generators(generators)
        missing: list[str] = []
        scatters: list[np.ndarray] = []
        for g in generators:
            if g.second_moment is None:
                missing.append(g.name)
            else:
                scatters.append(_scatter(g.count, g.vector_sum, g.second_moment))
        if missing:
            raise ReferenceStoreError(
                f"the store keeps no second moments for {', '.join(missing)}",
                hint="rebuild the store with --rule mahalanobis",
            )
        means = np.stack([g.vector_sum / g.count for g in generators])
        scatter = scatters[0]
        for more in scatters[1:]:
            scatter = scatter + more
        dof = sum(g.count for g in generators) - len(generators)
        return FittedMahalanobis(means, shrunk_covariance(scatter, dof, self.shrinkage))

    def held_out_scores(self, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Exact leave-one-out: the image leaves its generator's mean and the pooled scatter."""
        x_all = np.asarray(vectors, dtype=np.float64)
        classes, own = class_groups(labels)
        counts = np.bincount(own, minlength=len(classes))
        sums = np.stack([x_all[own == j].sum(0) for j in range(len(classes))])
        moments = np.stack([x_all[own == j].T @ x_all[own == j] for j in range(len(classes))])
        scatters = [_scatter(int(counts[j]), sums[j], moments[j]) for j in range(len(classes))]
        total = sum(scatters)
        dof = int(counts.sum()) - len(classes) - 1
        means = sums / counts[:, None]
        scores = np.full(len(x_all), np.nan)
        for i, (x, j) in enumerate(zip(x_all, own)):
            if counts[j] < 3:
                continue
            n, s, m = int(counts[j]) - 1, sums[j] - x, moments[j] - np.outer(x, x)
            mu = means.copy()
            mu[j] = s / n
            cov = shrunk_covariance(total - scatters[j] + _scatter(n, s, m), dof, self.shrinkage)
            scores[i] = mahalanobis_distances(x[None, :], mu, cov)[0].min()
        return scores
