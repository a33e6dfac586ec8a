"""fit_projection against scikit-learn's LDA (as an oracle only) and a step-by-step numpy fit."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.linalg
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from osma_cli.errors import UsageError
from osma_cli.projection import Projection, fit_projection


def make_data(seed: int = 0, n_per: int = 100, n_classes: int = 4, d: int = 10, spread: float = 3.0):
    """Classes with distinct means, one shared correlated covariance, very different dim scales."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = (q * np.exp(rng.uniform(-1, 1, size=d))) @ q.T  # correlated, condition of a a^T <= e^4
    dim_scale = np.exp(rng.uniform(-3, 3, size=d))
    means = rng.normal(scale=spread, size=(n_classes, d))
    x = np.concatenate([rng.normal(size=(n_per, d)) @ a + m for m in means]) * dim_scale + 7.0
    y = np.repeat(np.arange(n_classes), n_per)
    return x, y


def pooled_within_cov(y_proj: np.ndarray, labels: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    resid = np.concatenate([y_proj[labels == c] - y_proj[labels == c].mean(0) for c in classes])
    return resid.T @ resid / (len(y_proj) - len(classes))


def assert_equal_up_to_column_sign(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    assert a.shape == b.shape
    for j in range(a.shape[1]):
        s = np.sign(a[:, j] @ b[:, j])
        np.testing.assert_allclose(a[:, j], s * b[:, j], atol=atol, rtol=0)


def nearest_mean(train_y, labels, test_y):
    classes = np.unique(labels)
    centroids = np.stack([train_y[labels == c].mean(0) for c in classes])
    d2 = ((test_y[:, None, :] - centroids[None]) ** 2).sum(-1)
    return classes[d2.argmin(1)]


# --- scikit-learn as an oracle -------------------------------------------------------------


def test_lda_without_shrinkage_matches_sklearn_eigen_solver():
    x, y = make_data(0)
    x_test, _ = make_data(1, n_per=50)
    n, c = len(x), 4
    p = fit_projection(x, y, method="lda", shrinkage=0.0, pca_dim=None)
    sk = LinearDiscriminantAnalysis(solver="eigen").fit(x, y)
    ref = sk.scalings_[:, : c - 1]
    assert p.output_dim == c - 1 and p.steps["pca_dim"] == x.shape[1]
    # Same subspace of the input space ...
    assert np.max(scipy.linalg.subspace_angles(p.matrix, ref)) < 1e-8
    # ... and the same directions, one by one: sklearn normalises v^T (scatter / N) v = 1,
    # we normalise v^T (scatter / (N - C)) v = 1, so ours = +-sqrt((N - C) / N) * sklearn's.
    assert_equal_up_to_column_sign(p.matrix, np.sqrt((n - c) / n) * ref, atol=1e-8 * np.abs(ref).max())
    np.testing.assert_allclose(p.mean, sk.priors_ @ sk.means_, atol=1e-10)
    # Balanced classes: sklearn's LDA classifier is nearest class mean in the C-1 dims.
    pred = nearest_mean(p.apply(x), y, p.apply(x_test))
    np.testing.assert_array_equal(pred, sk.predict(x_test))
    # The pca_dim default (128 >= D) changes nothing here.
    np.testing.assert_allclose(fit_projection(x, y, shrinkage=0.0).matrix, p.matrix, atol=1e-12)


def test_lda_with_shrinkage_uses_sklearns_covariance_but_plain_between_scatter():
    # sklearn (1.9) shrinks each class's biased covariance, (1-s) C_g + s tr(C_g)/d I, and
    # weights them by priors: that equals (1-s) S_w' + s tr(S_w')/d I for the pooled
    # S_w' = scatter / N, i.e. our S times (N - C) / N. So its covariance_ is our S. But its
    # between scatter is S_t(shrunk) - S_w(shrunk), which adds s tr(S_b)/d I to S_b and so
    # changes the eigenvectors; we keep the plain S_b. Hence: S is checked against
    # sklearn's covariance_, the directions against a direct numpy eigenproblem.
    s = 0.3
    x, y = make_data(2, d=12)
    n, c = len(x), 4
    p = fit_projection(x, y, method="lda", shrinkage=s, pca_dim=None)
    z = (x - x.mean(0)) / x.std(0)
    sk = LinearDiscriminantAnalysis(solver="eigen", shrinkage=s).fit(z, y)
    s_ours = sk.covariance_ * n / (n - c)
    # The directions in standardised space: matrix = diag(1/std) A.
    a = p.matrix * x.std(0)[:, None]
    np.testing.assert_allclose(a.T @ s_ours @ a, np.eye(c - 1), atol=1e-9)
    # Direct numpy: S_b v = lambda S v in standardised space (PCA is a rotation here).
    means = np.stack([z[y == k].mean(0) for k in range(c)])
    counts = np.bincount(y)
    s_b = (means.T * counts) @ means / n
    lam, v = scipy.linalg.eigh(s_b, s_ours)
    v = v[:, np.argsort(lam)[::-1][: c - 1]]
    assert_equal_up_to_column_sign(a, v, atol=1e-8 * np.abs(v).max())
    np.testing.assert_allclose(p.steps["eigenvalues"], np.sort(lam)[::-1][: c - 1], rtol=1e-9)


# --- invariants of the output space --------------------------------------------------------


@pytest.mark.parametrize("method", ["lda", "whiten"])
def test_unit_within_class_covariance_without_shrinkage(method):
    x, y = make_data(3)
    p = fit_projection(x, y, method=method, shrinkage=0.0, pca_dim=None)
    np.testing.assert_allclose(pooled_within_cov(p.apply(x), y), np.eye(p.output_dim), atol=1e-8)
    assert p.output_dim == (3 if method == "lda" else x.shape[1])


def step_by_step(x, y, method, pca_dim, s):
    """An independent fit, one step at a time, returning each stage's output on x."""
    z = (x - x.mean(0)) / x.std(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    v = vt[:pca_dim].T
    pz = z @ v
    classes = np.unique(y)
    means = np.stack([pz[y == c].mean(0) for c in classes])
    resid = pz - means[np.searchsorted(classes, y)]
    s_w = resid.T @ resid / (len(x) - len(classes))
    k = pz.shape[1]
    big_s = (1 - s) * s_w + s * np.trace(s_w) / k * np.eye(k)
    if method == "whiten":
        return pz, big_s, pz @ np.real(scipy.linalg.sqrtm(np.linalg.inv(big_s)))
    counts = np.array([(y == c).sum() for c in classes])
    lam, w = scipy.linalg.eigh((means.T * counts) @ means, big_s)
    return pz, big_s, pz @ w[:, np.argsort(lam)[::-1][: len(classes) - 1]]


@pytest.mark.parametrize("method", ["lda", "whiten"])
def test_apply_is_the_composed_steps(method):
    x, y = make_data(4, n_per=30, d=40)
    p = fit_projection(x, y, method=method, pca_dim=15, shrinkage=0.25)
    out = p.apply(x)
    assert np.array_equal(out, (x - p.mean) @ p.matrix)
    pz, big_s, expected = step_by_step(x, y, method, 15, 0.25)
    assert_equal_up_to_column_sign(out, expected, atol=1e-8 * np.abs(expected).max())
    # W^T S W = I in PCA space: recover W from matrix = diag(1/std) V W.
    w = np.linalg.lstsq(pz, out, rcond=None)[0]
    np.testing.assert_allclose(w.T @ big_s @ w, np.eye(p.output_dim), atol=1e-8)
    # One vector projects like a row of a batch.
    np.testing.assert_allclose(p.apply(x[0]), out[0], atol=1e-12)


def test_pca_method_is_standardised_pca():
    x, y = make_data(5, n_per=30, d=40)
    p = fit_projection(x, y, method="pca", pca_dim=7)
    pz, _, _ = step_by_step(x, y, "whiten", 7, 0.0)
    assert p.output_dim == 7 and p.steps["pca_dim"] == 7
    assert_equal_up_to_column_sign(p.apply(x), pz, atol=1e-9)
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(p.steps["explained_variance"], (pz**2).sum() / (z**2).sum(), rtol=1e-10)


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lda", "whiten", "pca"])
def test_refits_and_row_permutations_give_the_same_projection(method):
    x, y = make_data(6, n_per=25, d=60)
    p1 = fit_projection(x, y, method=method, pca_dim=20)
    p2 = fit_projection(x, y, method=method, pca_dim=20)
    assert np.array_equal(p1.matrix, p2.matrix) and np.array_equal(p1.mean, p2.mean)
    assert p1.steps == p2.steps
    perm = np.random.default_rng(0).permutation(len(x))
    p3 = fit_projection(x[perm], y[perm], method=method, pca_dim=20)
    np.testing.assert_allclose(p3.matrix, p1.matrix, atol=1e-8 * np.abs(p1.matrix).max())
    np.testing.assert_allclose(p3.mean, p1.mean, atol=1e-10)
    # The sign rule: each column's largest-|.| entry is positive.
    cols = np.arange(p1.output_dim)
    assert (p1.matrix[np.abs(p1.matrix).argmax(0), cols] > 0).all()
    json.dumps(p1.steps)


# --- behaviour on easy and awkward data ----------------------------------------------------


def test_two_separated_gaussians_split_on_the_1d_output():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(120, 30))
    y = np.array(["sd15"] * 60 + ["dalle3"] * 60)
    x[y == "dalle3", 0] += 8.0
    p = fit_projection(x, y)  # default pca_dim=128 >= D: no truncation
    assert p.output_dim == 1 and p.steps["n_classes"] == 2
    out = p.apply(x)[:, 0]
    a, b = out[y == "sd15"], out[y == "dalle3"]
    assert a.max() < b.min() or b.max() < a.min()
    # The direction lies along the shifted dim.
    assert np.abs(p.matrix[:, 0]).argmax() == 0


def test_constant_dims_do_not_produce_nan_and_are_ignored():
    x, y = make_data(8, n_per=30, d=20)
    x = np.concatenate([x, np.full((len(x), 1), 5.0), np.zeros((len(x), 1))], axis=1)
    for method in ("lda", "whiten", "pca"):
        for s in (0.0, 0.2):
            p = fit_projection(x, y, method=method, shrinkage=s, pca_dim=None)
            assert np.isfinite(p.matrix).all() and np.isfinite(p.apply(x)).all()
            assert p.steps["n_constant_dims"] == 2 and p.steps["pca_dim"] == 20
            np.testing.assert_array_equal(p.matrix[-2:], 0.0)
            moved = x[:3].copy()
            moved[:, -2:] = [1e6, -3.0]
            np.testing.assert_allclose(p.apply(moved), p.apply(x[:3]), atol=1e-12)
    p = fit_projection(x, y, method="whiten", shrinkage=0.0, pca_dim=None)
    np.testing.assert_allclose(pooled_within_cov(p.apply(x), y), np.eye(20), atol=1e-8)


def test_pca_dim_is_capped_by_samples_and_recorded():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 500))
    y = np.repeat(np.arange(4), 10)
    p = fit_projection(x, y, pca_dim=128)
    assert p.steps["pca_dim"] == 39 and p.steps["pca_dim_requested"] == 128
    assert p.input_dim == 500 and p.output_dim == 3
    assert p.steps["explained_variance"] == pytest.approx(1.0)


def test_fit_of_40_by_500_is_fast():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(40, 500))
    y = np.repeat(np.arange(5), 8)
    fit_projection(x, y)  # warm up
    t0 = time.perf_counter()
    for method in ("lda", "whiten"):
        fit_projection(x, y, method=method, pca_dim=128)
    assert time.perf_counter() - t0 < 5.0  # about 15 ms alone; generous for a loaded CI machine


def test_identity_projection():
    p = Projection.identity(6)
    x = np.random.default_rng(0).normal(size=(4, 6))
    np.testing.assert_array_equal(p.apply(x), x)
    assert p.input_dim == p.output_dim == 6 and p.steps["method"] == "identity"
    with pytest.raises(ValueError):
        p.matrix[0, 0] = 2.0  # read-only: a frozen projection cannot be changed in place


# --- refusals ------------------------------------------------------------------------------


def test_class_with_one_sample_is_named():
    x, _ = make_data(11, n_per=10, n_classes=2)
    x = np.concatenate([x, x[:1] + 1.0])
    y = np.array(["sd15"] * 10 + ["dalle3"] * 10 + ["midjourney"])
    with pytest.raises(UsageError, match="'midjourney' \\(1 sample\\)"):
        fit_projection(x, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused(bad):
    x, y = make_data(12, n_per=10)
    x[5, 3] = bad
    with pytest.raises(UsageError, match="NaN or inf.*row 5"):
        fit_projection(x, y)


def test_other_bad_inputs_are_refused():
    x, y = make_data(13, n_per=10)
    with pytest.raises(UsageError, match="at least 2 classes"):
        fit_projection(x, np.zeros(len(x)))
    with pytest.raises(UsageError, match="do not match"):
        fit_projection(x, y[:-1])
    with pytest.raises(UsageError, match="\\(N, D\\)"):
        fit_projection(x[0], y[:1])
    with pytest.raises(UsageError, match="unknown projection method"):
        fit_projection(x, y, method="qda")
    with pytest.raises(UsageError, match="at most 3"):
        fit_projection(x, y, output_dim=4)
    with pytest.raises(UsageError, match="output_dim"):
        fit_projection(x, y, method="whiten", output_dim=2)
    with pytest.raises(UsageError, match="shrinkage"):
        fit_projection(x, y, shrinkage=1.5)
    with pytest.raises(UsageError, match="expects"):
        fit_projection(x, y).apply(np.zeros((2, x.shape[1] + 1)))
    # Unshrunk within-class covariance of 9 PCA dims from 10 samples in 2 classes is singular.
    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="singular"):
        fit_projection(rng.normal(size=(10, 50)), np.repeat([0, 1], 5), shrinkage=0.0)
    fit_projection(rng.normal(size=(10, 50)), np.repeat([0, 1], 5), shrinkage=0.2)  # shrunk: fine
