"""Zero-shot detection of generated images: how unlikely an image's self-description is for a photograph.

After Nguyen, Azizpour & Stamm (CVPR 2025): a Gaussian mixture is fitted to the forensic
self-descriptions of **real photographs only**; an image whose description is improbable
under it is called synthetic. No generated image is used to fit or to calibrate it.

The maths, each in one place below::

    raw descriptor     d  in R^D                     (a descriptor's ``describe``, e.g. fsd's 2 160)
    projection         y = (d - mu) @ M               standardise + PCA to k dims (osma_cli.projection, "pca")
    density            log p(y) = logsumexp_j [ log w_j + log N(y | m_j, S_j) ]
                       log N(y | m, S) = -k/2 log(2 pi) + log det L - |(y - m) @ L|^2 / 2,
                       L the Cholesky factor of the precision S^-1 (scikit-learn's convention)
    negative log-lik.  nll(d) = -log p(y)
    score              s = (nll - c) / r              c = median, r = 1.4826 x median absolute deviation
                                                      of the held-out real photos' nll (a robust z-score:
                                                      0 = a typical real photo, larger = less like one)
    verdict            synthetic when s >= t, else real; t accepts the stated share of the
                       held-out real photos' scores (``calibration.threshold_for_acceptance``)

``Detector.score_raw`` takes raw descriptors already computed (the embedding cache keeps
exactly these), so chaining detection with attribution describes no image twice.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import logsumexp

from osma_cli.calibration import threshold_for_acceptance
from osma_cli.defaults import DETECTOR_ACCEPTANCE
from osma_cli.errors import UsageError
from osma_cli.projection import Projection, fit_projection

COVARIANCES = ("full", "diag", "tied", "spherical")
MAD_TO_SIGMA = 1.4826
"""Median absolute deviation times this estimates a normal distribution's standard deviation."""
DEFAULT_ACCEPTANCE = DETECTOR_ACCEPTANCE
REAL, SYNTHETIC = "real", "synthetic"
VERDICTS = (REAL, SYNTHETIC)


@dataclass(frozen=True, eq=False)
class MixtureDensity:
    """A Gaussian mixture as plain arrays: weights (K,), means (K, k), precision Cholesky factors (K, k, k).

    Every covariance type is kept in the full form, so one formula scores them all and a file
    needs no per-type layout.
    """

    weights: np.ndarray
    means: np.ndarray
    precision_cholesky: np.ndarray

    def __post_init__(self) -> None:
        weights, means, chol = (
            np.array(a, dtype=np.float64) for a in (self.weights, self.means, self.precision_cholesky)
        )
        k = means.shape[-1] if means.ndim == 2 else -1
        if weights.ndim != 1 or means.shape != (len(weights), k) or chol.shape != (len(weights), k, k):
            raise UsageError(
                f"mixture arrays do not fit: weights {weights.shape}, means {means.shape}, "
                f"precision Cholesky factors {chol.shape}"
            )
        for name, value in (("weights", weights), ("means", means), ("precision_cholesky", chol)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @classmethod
    def from_sklearn(cls, model) -> MixtureDensity:
        """The full-form arrays of a fitted ``sklearn.mixture.GaussianMixture``, whatever its covariance type."""
        k, dim = model.means_.shape
        chol = np.asarray(model.precisions_cholesky_, dtype=np.float64)
        if model.covariance_type == "full":
            full = chol
        elif model.covariance_type == "tied":
            full = np.broadcast_to(chol, (k, dim, dim))
        elif model.covariance_type == "diag":
            full = np.stack([np.diag(row) for row in chol])
        else:
            full = chol[:, None, None] * np.eye(dim)[None]
        return cls(model.weights_, model.means_, full)

    def log_density(self, y: np.ndarray) -> np.ndarray:
        """log p(y) for each row of ``y`` (N, k)."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise UsageError(f"cannot score vectors of shape {y.shape} with a {self.dim}-dim mixture")
        centred = y[:, None, :] - self.means[None]  # (N, K, k)
        whitened = np.einsum("nkd,kde->nke", centred, self.precision_cholesky)
        log_det = np.log(np.diagonal(self.precision_cholesky, axis1=1, axis2=2)).sum(axis=1)
        per_component = (
            -0.5 * self.dim * math.log(2 * math.pi)
            + log_det[None]
            - 0.5 * (whitened**2).sum(axis=2)
            + np.log(self.weights)[None]
        )
        return logsumexp(per_component, axis=1)


def fit_mixture_density(
    y: np.ndarray, *, components: int, covariance: str, reg_covar: float = 1e-6, seed: int = 0
) -> MixtureDensity:
    """A deterministic scikit-learn mixture fit (k-means start, ``seed``), as ``MixtureDensity``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    if covariance not in COVARIANCES:
        raise UsageError(f"unknown covariance type {covariance!r}", hint=f"use one of {', '.join(COVARIANCES)}")
    if components < 1 or y.shape[0] < 2 * components:
        raise UsageError(
            f"{components} mixture components need at least {2 * components} real images, got {y.shape[0]}",
            hint="give more real photographs or fewer --components",
        )
    model = GaussianMixture(
        n_components=components,
        covariance_type=covariance,
        reg_covar=reg_covar,
        random_state=seed,
        n_init=1,
        max_iter=500,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(np.asarray(y, dtype=np.float64))
    return MixtureDensity.from_sklearn(model)


@dataclass(frozen=True)
class Standardisation:
    """The robust z-score of a negative log-likelihood: ``(nll - centre) / scale``."""

    centre: float
    scale: float

    @classmethod
    def of(cls, nll: np.ndarray) -> Standardisation:
        """Median and 1.4826 x MAD of the held-out real photos' nll (a floor keeps the scale positive)."""
        nll = np.asarray(nll, dtype=np.float64)
        centre = float(np.median(nll))
        mad = float(np.median(np.abs(nll - centre)))
        scale = MAD_TO_SIGMA * mad if mad > 0 else max(float(nll.std()), 1e-12)
        return cls(centre=centre, scale=scale)

    def apply(self, nll: np.ndarray) -> np.ndarray:
        return (np.asarray(nll, dtype=np.float64) - self.centre) / self.scale


@dataclass(frozen=True)
class Detection:
    """One image's verdict: ``synthetic`` when ``score >= threshold``; ``margin = threshold - score``."""

    verdict: str
    score: float
    threshold: float
    nll: float

    @property
    def margin(self) -> float:
        return self.threshold - self.score


@dataclass(frozen=True, eq=False)
class Detector:
    """Projection, real-photo density, standardisation and threshold, plus what they were fitted on.

    ``descriptor`` identifies the raw descriptor the detector expects (its ``feature_identity``);
    ``fit`` records settings and counts (JSON-able), saved with the detector.
    """

    projection: Projection
    density: MixtureDensity
    standardisation: Standardisation
    threshold: float
    acceptance: float
    descriptor: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.projection.output_dim != self.density.dim:
            raise UsageError(
                f"projection to {self.projection.output_dim} dims does not feed a {self.density.dim}-dim mixture"
            )
        if not math.isfinite(self.threshold):
            raise UsageError(f"detector threshold must be finite, got {self.threshold}")

    @property
    def raw_dim(self) -> int:
        return self.projection.input_dim

    def nll(self, raw: np.ndarray) -> np.ndarray:
        """Negative log-likelihood of raw descriptors (N, D) under the real-photo mixture."""
        return -self.density.log_density(self.projection.apply(np.atleast_2d(raw)))

    def score_raw(self, raw: np.ndarray) -> np.ndarray:
        """The standardised score of raw descriptors: 0 = typical real photo, larger = less real."""
        return self.standardisation.apply(self.nll(raw))

    def detect_raw(self, raw: np.ndarray, threshold: float | None = None) -> list[Detection]:
        """Verdicts for raw descriptors (N, D), at the calibrated threshold unless told another."""
        t = self.threshold if threshold is None else float(threshold)
        nll = self.nll(raw)
        scores = self.standardisation.apply(nll)
        return [
            Detection(verdict=verdict_of(s, t), score=float(s), threshold=t, nll=float(n)) for s, n in zip(scores, nll)
        ]


def verdict_of(score: float, threshold: float) -> str:
    """``real`` below the threshold, ``synthetic`` at or above it (as ``unknown`` in attribution)."""
    return "synthetic" if score >= threshold else "real"


def fit_detector(
    fit_raw: np.ndarray,
    held_out_raw: np.ndarray,
    *,
    pca_dim: int = 32,
    components: int = 1,
    covariance: str = "full",
    reg_covar: float = 1e-6,
    acceptance: float = DEFAULT_ACCEPTANCE,
    descriptor: dict[str, Any] | None = None,
    seed: int = 0,
    restarts: int = 1,
) -> Detector:
    """Fit on real descriptors ``fit_raw``; standardise and set the threshold on ``held_out_raw``.

    The held-out images must be real photographs that took no part in the fit (the caller
    splits by photo, so that a photo's re-saved copies stay on one side).

    ``restarts``: the mixture is fitted from the k-means starts of seeds ``seed`` ..
    ``seed + restarts - 1`` and the one under which the held-out real photos are most likely
    (highest mean log-density; the first on a tie) is kept. With a few hundred photos the
    fits of different starts differ widely in how well they describe photos they did not
    see (docs/detection.md), and that is what a model of real photographs is for; the
    training likelihood, which scikit-learn's ``n_init`` maximises, rewards components
    fitted to single photos' copies instead.
    """
    if not 0.0 < acceptance <= 1.0:
        raise UsageError(f"acceptance must be in (0, 1], got {acceptance}")
    fit_raw = np.asarray(fit_raw, dtype=np.float64)
    held_out_raw = np.asarray(held_out_raw, dtype=np.float64)
    if held_out_raw.ndim != 2 or held_out_raw.shape[0] < 2:
        raise UsageError(
            f"calibration needs at least 2 held-out real images, got {held_out_raw.shape[0]}",
            hint="give more real photographs or a larger held-out share",
        )
    if restarts < 1:
        raise UsageError(f"restarts must be at least 1, got {restarts}")
    projection = fit_projection(fit_raw, np.zeros(len(fit_raw), dtype=int), method="pca", pca_dim=pca_dim)
    fit_y, held_y = projection.apply(fit_raw), projection.apply(held_out_raw)
    seeds = list(range(seed, seed + restarts))
    fits = [
        fit_mixture_density(fit_y, components=components, covariance=covariance, reg_covar=reg_covar, seed=s)
        for s in seeds
    ]
    held_likelihood = [float(np.mean(f.log_density(held_y))) for f in fits]
    best = int(np.argmax(held_likelihood))
    density = fits[best]
    nll = -density.log_density(held_y)
    standardisation = Standardisation.of(nll)
    scores = standardisation.apply(nll)
    settings = {
        "pca_dim": int(projection.output_dim),
        "pca_dim_requested": int(pca_dim),
        "components": int(density.n_components),
        "covariance": covariance,
        "reg_covar": float(reg_covar),
        "seed": int(seeds[best]),
        "restarts": int(restarts),
        "restart_seeds": seeds,
        "held_out_mean_log_density": held_likelihood,
        "n_fit": int(len(fit_raw)),
        "n_held_out": int(len(held_out_raw)),
        "explained_variance": projection.steps.get("explained_variance"),
    }
    return Detector(
        projection=projection,
        density=density,
        standardisation=standardisation,
        threshold=threshold_for_acceptance(scores, acceptance),
        acceptance=float(acceptance),
        descriptor=dict(descriptor or {}),
        fit=settings,
    )
