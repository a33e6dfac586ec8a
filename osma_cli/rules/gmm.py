"""Per-generator Gaussian mixtures (as the forensic self-description paper models sources).

Each generator's vectors get their own ``sklearn.mixture.GaussianMixture`` (``components``
components, ``covariance`` "tied", "diag" or "full", ``reg_covar`` added to the diagonal),
fitted deterministically (k-means initialisation, ``random_state`` 0). The per-generator
score is the negative log-likelihood ``-log p_i(x)``; candidate ``argmin_i``, score at the
candidate: how improbable the image is under the most probable generator. It is a density,
so it can be negative: tau is any finite number for this rule.

A mixture is not a running sum, so the store keeps the vectors themselves (``"vectors"``)
and refits on load; enrolling images later and building with them at once give the same
vectors in the same order, hence the same mixtures. A generator with fewer images than
``components * MIN_PER_COMPONENT`` gets fewer components.

Held-out scores for ``osma build``'s provisional tau are k-fold (``folds``, default 5),
not leave-one-out: refitting a mixture per image would cost as many fits as images.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.rules.base import GeneratorStats, OpenSetRule, ScoredBatch, class_groups, require_generators

COVARIANCES = ("tied", "diag", "full")
MIN_PER_COMPONENT = 5


def fit_mixture(vectors: np.ndarray, *, components: int, covariance: str, reg_covar: float):
    """One generator's mixture, deterministic; sklearn is imported only when a mixture is needed."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    x = np.asarray(vectors, dtype=np.float64)
    k = max(1, min(components, x.shape[0] // MIN_PER_COMPONENT))
    model = GaussianMixture(
        n_components=k, covariance_type=covariance, reg_covar=reg_covar, random_state=0, n_init=1, max_iter=200
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x)
    return model


class FittedMixtures:
    def __init__(self, mixtures: list) -> None:
        self.mixtures = mixtures

    def score(self, vectors: np.ndarray) -> ScoredBatch:
        x = np.asarray(vectors, dtype=np.float64)
        nll = np.stack([-m.score_samples(x) for m in self.mixtures], axis=1)
        return ScoredBatch.from_matrix(nll)


class GMMRule(OpenSetRule):
    name = "gmm"
    score_name = "neg. log-lik."
    meaning = (
        "negative log-likelihood under the most probable generator's Gaussian mixture; "
        "higher is more likely unknown (can be negative)"
    )
    requires = frozenset({"vectors"})
    nonnegative_scores = False

    def __init__(
        self, *, components: int = 2, covariance: str = "tied", reg_covar: float = 1e-3, folds: int = 5
    ) -> None:
        if covariance not in COVARIANCES:
            raise UsageError(f"unknown gmm covariance {covariance!r}", hint=f"use {', '.join(COVARIANCES)}")
        if int(components) < 1 or int(folds) < 2 or not float(reg_covar) > 0:
            raise UsageError(
                f"gmm needs components >= 1, folds >= 2 and reg_covar > 0; got {components}, {folds}, {reg_covar}"
            )
        self.components = int(components)
        self.covariance = covariance
        self.reg_covar = float(reg_covar)
        self.folds = int(folds)

    def params(self) -> dict:
        return {
            "components": self.components,
            "covariance": self.covariance,
            "reg_covar": self.reg_covar,
            "folds": self.folds,
        }

    def _fit_one(self, vectors: np.ndarray):
        return fit_mixture(vectors, components=self.components, covariance=self.covariance, reg_covar=self.reg_covar)

    def fit(self, generators: Sequence[GeneratorStats]) -> FittedMixtures:
        require_generators(generators)
        vectors = [g.vectors for g in generators if g.vectors is not None]
        if len(vectors) < len(generators):
            missing = [g.name for g in generators if g.vectors is None]
            raise ReferenceStoreError(
                f"the store keeps no vectors for {', '.join(missing)}", hint="rebuild the store with --rule gmm"
            )
        return FittedMixtures([self._fit_one(v) for v in vectors])

    def held_out_method(self) -> str:
        return f"{self.folds}-fold held-out"

    def held_out_scores(self, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each image scored by its own generator's mixture fitted without its fold (k-fold)."""
        x = np.asarray(vectors, dtype=np.float64)
        classes, own = class_groups(labels)
        full = [self._fit_one(x[own == j]) for j in range(len(classes))]
        nll_full = np.stack([-m.score_samples(x) for m in full], axis=1)
        scores = np.full(len(x), np.nan)
        for j in range(len(classes)):
            rows = np.flatnonzero(own == j)
            if len(rows) < max(3, self.folds):
                continue
            for fold in range(self.folds):
                held = rows[fold :: self.folds]
                kept = np.setdiff1d(rows, held)
                nll = nll_full[held].copy()
                nll[:, j] = -self._fit_one(x[kept]).score_samples(x[held])
                scores[held] = nll.min(axis=1)
        return scores
