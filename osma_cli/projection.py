"""A closed-form linear projection in which known generators separate.

Each image is a feature vector ``x`` in R^D. From the known generators' training
vectors (N rows, C classes) ``fit_projection`` builds one affine map
``y = (x - mean) @ matrix``; nearest-centroid, Mahalanobis or Gaussian-mixture
attribution (and the rejection of unseen generators) then runs on ``y``. The whole
pipeline below is composed into those two arrays so that a weights file can store it
as two tensors and nothing else has to be re-run at inference time.

Steps (``k`` = PCA dims kept, ``alpha`` = ``shrinkage``)::

    1. standardise   z = (x - mu) * s          mu_j = mean_j, s_j = 1 / sigma_j
                                                (sigma_j = population std; s_j = 0 for
                                                 a dim constant in training, see below)
    2. PCA           Z = U Sigma V^T            (SVD of the N x D standardised data)
                     p = V_k^T z                k = min(pca_dim, N - 1, D, rank Z)
    3. within-class  S_w = 1/(N - C) sum_c sum_{i in c} (p_i - m_c)(p_i - m_c)^T
                     S   = (1 - alpha) S_w + alpha (tr S_w / k) I
    4a. "lda"        S_b = 1/N sum_c n_c (m_c - m)(m_c - m)^T     (m = grand mean = 0)
                     S_b v = lambda S v,  v^T S v = 1,  keep the q = C - 1 largest
                     (or ``output_dim``) lambdas: W = [v_1 .. v_q]
    4b. "whiten"     W = S^(-1/2) = Q Lambda^(-1/2) Q^T   (S = Q Lambda Q^T), all k dims
    4c. "pca"        W = I_k                     (standardised PCA scores, no whitening)

    composite:       mean = mu,  matrix = diag(s) V_k W    (D x q)

Conventions the callers rely on:

* Output scale. For "lda" and "whiten" the output space has unit *shrunk* within-class
  covariance, ``W^T S W = I``; with ``shrinkage=0`` that is the identity within-class
  covariance of the projected training data, so Euclidean distance there is the
  Mahalanobis distance under the pooled within-class covariance. With shrinkage > 0
  the plain within-class covariance of the projected data is ``W^T S_w W`` (not I):
  downstream Mahalanobis / mixture rules should estimate their own covariances in the
  output space. For "lda", ``lambda_j`` (``steps["eigenvalues"]``) is the count-weighted
  variance of the class means along output axis j in those units.
* Constant dims. A dim whose training std is below ``1e-10 * max(1, max |x|)`` gets
  scale 0: it carries no training information, and a test image that differs there
  must not be amplified by 1/0. Such dims have zero rows in ``matrix``, so they are
  ignored at apply time. PCA components with zero singular value are also dropped
  (they are arbitrary), so ``steps["pca_dim"]`` can be below the requested value.
* Determinism. The sign of every output column is fixed so that its largest-|.| entry in
  ``matrix`` is positive; refits and row permutations give the same matrix.

Why shrinkage: with a 300-1000-dim descriptor and tens of images per generator the
within-class covariance is poorly estimated; unshrunk LDA then fits the known classes
so tightly that everything else collapses onto them, which breaks "unknown" rejection.
Shrinking towards a scaled identity matches the float ``shrinkage`` of scikit-learn's
``LinearDiscriminantAnalysis`` covariance estimate (up to its 1/N versus our 1/(N - C)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from osma_cli.errors import UsageError

METHODS = ("lda", "whiten", "pca")
DEFAULT_PROJECTION = {"method": "lda", "pca_dim": 256, "shrinkage": 0.2}
"""What ``osma train --method fsd`` and the benchmark fit when not told otherwise (docs/descriptors.md)."""
_CONSTANT_DIM_RTOL = 1e-10


@dataclass(frozen=True, eq=False)
class Projection:
    """An affine map ``(x - mean) @ matrix``, plus a JSON-able record of its fit."""

    mean: np.ndarray
    matrix: np.ndarray
    steps: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Copy into read-only float64 arrays so a frozen Projection really cannot change.
        mean = np.array(self.mean, dtype=np.float64)
        matrix = np.array(self.matrix, dtype=np.float64)
        if mean.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != mean.shape[0]:
            raise UsageError(
                f"projection mean {mean.shape} and matrix {matrix.shape} do not fit",
                hint="mean must be (D_in,) and matrix (D_in, D_out)",
            )
        mean.setflags(write=False)
        matrix.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "steps", dict(self.steps))

    @property
    def input_dim(self) -> int:
        """D_in, the feature dimension the projection expects."""
        return int(self.matrix.shape[0])

    @property
    def output_dim(self) -> int:
        """D_out, the dimension of the projected space."""
        return int(self.matrix.shape[1])

    @classmethod
    def identity(cls, d: int) -> Projection:
        """The do-nothing projection, for running attribution on raw features."""
        if d < 1:
            raise UsageError(f"identity projection needs d >= 1, got {d}")
        return cls(np.zeros(d), np.eye(d), {"method": "identity", "input_dim": d, "output_dim": d})

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Project ``x`` (N, D_in), or one vector (D_in,), with ``(x - mean) @ matrix``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_dim:
            raise UsageError(
                f"cannot project features of shape {x.shape}: the projection expects (N, {self.input_dim})",
                hint="use the feature extractor the projection was fitted on",
            )
        return (x - self.mean) @ self.matrix


def fit_projection(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "lda",
    pca_dim: int | None = 128,
    shrinkage: float = 0.2,
    output_dim: int | None = None,
    whiten_floor: float = 1e-6,
) -> Projection:
    """Fit the standardise -> PCA -> (shrunk LDA | within-class whitening) map.

    ``pca_dim=None`` keeps every PCA component with nonzero variance. ``output_dim``
    defaults to C - 1 for "lda" (more would be arbitrary directions with lambda = 0) and
    must be left None for "whiten"/"pca", whose output is the PCA space (set ``pca_dim``).
    ``whiten_floor`` guards the inversion of S: if its smallest eigenvalue is below
    ``whiten_floor`` times its largest, the fit is refused rather than amplifying
    directions that have (almost) no within-class variance.
    """
    x, labels = _check_inputs(x, labels, method, pca_dim, shrinkage, output_dim, whiten_floor)
    n, d_in = x.shape
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_classes = len(classes)
    if method != "pca":  # "pca" uses no labels: one class (e.g. real photos only) is enough
        _check_classes(classes, counts)

    # 1. standardise
    mu = x.mean(axis=0)
    sigma = x.std(axis=0)
    constant = sigma <= _CONSTANT_DIM_RTOL * max(1.0, float(np.abs(x).max()))
    scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, sigma))
    z = (x - mu) * scale

    # 2. PCA by SVD of the centred standardised data (columns of z have mean 0)
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    tol = (sv[0] if sv.size else 0.0) * max(n, d_in) * np.finfo(np.float64).eps
    rank = int((sv > tol).sum())
    k = min(rank, n - 1, d_in, d_in if pca_dim is None else pca_dim)
    if k < 1:
        raise UsageError(
            "the training features have no variance: every vector is the same",
            hint="check that the feature extractor produced real features",
        )
    basis = vt[:k].T  # (D, k)
    p = z @ basis
    total_var = float((sv**2).sum())
    explained = float((sv[:k] ** 2).sum() / total_var)

    steps: dict[str, Any] = {
        "method": method,
        "input_dim": int(d_in),
        "n_samples": int(n),
        "n_classes": int(n_classes),
        "n_constant_dims": int(constant.sum()),
        "pca_dim_requested": None if pca_dim is None else int(pca_dim),
        "pca_dim": int(k),
        "explained_variance": explained,
        "shrinkage": float(shrinkage),
    }

    if method == "pca":
        if output_dim is not None and output_dim != k:
            raise UsageError(
                f"method 'pca' outputs its {k} PCA dims; output_dim={output_dim} is not used",
                hint="set pca_dim instead of output_dim for method 'pca'",
            )
        w = np.eye(k)
    else:
        # 3. pooled within-class covariance, shrunk towards a scaled identity
        means = np.zeros((n_classes, k))
        np.add.at(means, index, p)
        means /= counts[:, None]
        resid = p - means[index]
        s_w = resid.T @ resid / (n - n_classes)
        s = (1.0 - shrinkage) * s_w + shrinkage * (np.trace(s_w) / k) * np.eye(k)
        s = (s + s.T) / 2
        evals_s, evecs_s = np.linalg.eigh(s)
        if evals_s[-1] <= 0 or evals_s[0] <= whiten_floor * evals_s[-1]:
            raise UsageError(
                f"the within-class covariance in {k} PCA dims is singular "
                f"({n} samples, {n_classes} classes: at most {n - n_classes} dims of "
                "within-class variation)",
                hint="use shrinkage > 0, or a pca_dim below N - C",
            )
        steps["whiten_floor"] = float(whiten_floor)
        steps["within_condition"] = float(evals_s[-1] / evals_s[0])
        if method == "whiten":
            if output_dim is not None and output_dim != k:
                raise UsageError(
                    f"method 'whiten' outputs its {k} PCA dims; output_dim={output_dim} is not used",
                    hint="set pca_dim instead of output_dim for method 'whiten'",
                )
            w = (evecs_s / np.sqrt(evals_s)) @ evecs_s.T
        else:
            # 4a. LDA: S_b v = lambda S v, largest lambdas first, v^T S v = 1
            max_q = min(n_classes - 1, k)
            q = max_q if output_dim is None else output_dim
            if q > max_q:
                raise UsageError(
                    f"LDA with {n_classes} classes in {k} PCA dims has at most {max_q} "
                    f"discriminant directions; output_dim={output_dim} asks for more",
                    hint=f"use output_dim <= {max_q}, or method 'whiten' for more dims",
                )
            s_b = (means.T * counts) @ means / n
            lam, vecs = scipy.linalg.eigh(s_b, s)
            order = np.argsort(lam)[::-1][:q]
            lam, w = lam[order], vecs[:, order]
            w = w / np.sqrt(np.einsum("ij,ik,kj->j", w, s, w))
            steps["eigenvalues"] = [float(v) for v in np.maximum(lam, 0.0)]

    matrix = (basis * scale[:, None]) @ w
    matrix = _fix_signs(matrix)
    steps["output_dim"] = int(matrix.shape[1])
    return Projection(mu, matrix, steps)


def _fix_signs(matrix: np.ndarray) -> np.ndarray:
    """Flip each column so its largest-|.| entry is positive (SVD/eigh signs are arbitrary)."""
    if matrix.size == 0:
        return matrix
    rows = np.argmax(np.abs(matrix), axis=0)
    signs = np.sign(matrix[rows, np.arange(matrix.shape[1])])
    signs[signs == 0] = 1.0
    return matrix * signs


def _label_str(label: Any) -> str:
    return repr(label.item() if isinstance(label, np.generic) else label)


def _check_inputs(
    x: np.ndarray,
    labels: np.ndarray,
    method: str,
    pca_dim: int | None,
    shrinkage: float,
    output_dim: int | None,
    whiten_floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise UsageError(f"unknown projection method {method!r}", hint=f"use one of {METHODS}")
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UsageError(f"features are not numeric: {e}") from None
    labels = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise UsageError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
        raise UsageError(
            f"labels of shape {labels.shape} do not match features of shape {x.shape}",
            hint="give one label per feature row",
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise UsageError(
            f"{rows.size} feature row(s) contain NaN or inf (first: row {int(rows[0])})",
            hint="drop or recompute those images' features",
        )
    if pca_dim is not None and (not isinstance(pca_dim, (int, np.integer)) or pca_dim < 1):
        raise UsageError(f"pca_dim must be None or an integer >= 1, got {pca_dim!r}")
    if output_dim is not None and (not isinstance(output_dim, (int, np.integer)) or output_dim < 1):
        raise UsageError(f"output_dim must be None or an integer >= 1, got {output_dim!r}")
    if not 0.0 <= shrinkage <= 1.0:
        raise UsageError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if not 0.0 < whiten_floor < 1.0:
        raise UsageError(f"whiten_floor must be in (0, 1), got {whiten_floor}")
    return x, labels


def _check_classes(classes: np.ndarray, counts: np.ndarray) -> None:
    if len(classes) < 2:
        raise UsageError(
            f"a projection needs at least 2 classes, got {len(classes)}",
            hint="fit on the features of two or more known generators",
        )
    small = [(c, int(n)) for c, n in zip(classes, counts) if n < 2]
    if small:
        named = ", ".join(f"{_label_str(c)} ({n} sample)" for c, n in small[:5])
        more = f" and {len(small) - 5} more" if len(small) > 5 else ""
        raise UsageError(
            f"every class needs at least 2 samples to estimate its spread: {named}{more}",
            hint="add images of that generator or leave it out of the fit",
        )
