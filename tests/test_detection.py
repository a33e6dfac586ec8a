"""The detector's maths: mixture scores, standardisation, threshold, file round trip, descriptor check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2, multivariate_normal
from sklearn.mixture import GaussianMixture

from osma_cli.detection import (
    COVARIANCES,
    Detector,
    MixtureDensity,
    Standardisation,
    fit_detector,
    fit_mixture_density,
    verdict_of,
)
from osma_cli.detector_file import check_descriptor, load_detector, read_detector_meta, save_detector
from osma_cli.errors import UsageError, WeightsError

DESCRIPTOR = {"feature_identity": "f" * 64, "sha256": "s" * 64, "architecture": "fsd", "name": "tiny"}


def gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_mixture_density_agrees_with_scikit_learn(covariance):
    x = np.concatenate([gaussian(150, 5, 0), gaussian(150, 5, 1, shift=4.0)])
    model = GaussianMixture(n_components=3, covariance_type=covariance, random_state=0).fit(x)
    queries = gaussian(40, 5, 2, shift=1.0)
    np.testing.assert_allclose(
        MixtureDensity.from_sklearn(model).log_density(queries), model.score_samples(queries), rtol=1e-10, atol=1e-10
    )


def test_one_gaussian_is_scipys_normal_log_density():
    mean = np.array([1.0, -2.0, 0.5])
    cov = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])
    chol = np.linalg.cholesky(np.linalg.inv(cov))  # lower: P = L L^T, so |(y - m) @ L|^2 is the Mahalanobis form
    density = MixtureDensity(np.ones(1), mean[None], chol[None])
    y = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(density.log_density(y), multivariate_normal(mean, cov).logpdf(y), rtol=1e-12)


def test_standardisation_is_a_robust_z_score():
    nll = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    s = Standardisation.of(nll)
    assert s.centre == 3.0 and s.scale == pytest.approx(1.4826 * 1.0)
    assert s.apply(np.array([3.0, 4.4826]))[1] == pytest.approx(1.0 / 1.0)


@pytest.mark.parametrize("acceptance", [0.9, 0.95, 0.99])
def test_threshold_passes_the_stated_share_of_held_out_real_scores(acceptance):
    fit, held = gaussian(2000, 6, 0), gaussian(1000, 6, 1)
    detector = fit_detector(
        fit, held, pca_dim=6, components=1, covariance="full", acceptance=acceptance, descriptor=DESCRIPTOR
    )
    held_scores = detector.score_raw(held)
    assert np.mean(held_scores < detector.threshold) == pytest.approx(acceptance, abs=1e-3)
    assert np.median(held_scores) == pytest.approx(0.0, abs=1e-9)
    fresh = np.mean(detector.score_raw(gaussian(4000, 6, 2)) < detector.threshold)
    assert fresh == pytest.approx(acceptance, abs=0.02)
    # Known answer: one full Gaussian in 6 dims, nll = chi2_6 / 2 + const, so the threshold on the
    # nll sits near the chi-square quantile (the held-out nll quantile estimates it).
    nll_threshold = detector.threshold * detector.standardisation.scale + detector.standardisation.centre
    nll_median = detector.standardisation.centre
    assert 2 * (nll_threshold - nll_median) == pytest.approx(chi2.ppf(acceptance, 6) - chi2.ppf(0.5, 6), rel=0.1)


def test_images_unlike_the_real_ones_are_synthetic():
    detector = fit_detector(gaussian(500, 4, 0), gaussian(200, 4, 1), pca_dim=4, descriptor=DESCRIPTOR)
    far = detector.detect_raw(gaussian(50, 4, 3, shift=6.0))
    assert all(d.verdict == "synthetic" and d.margin < 0 for d in far)
    near = detector.detect_raw(gaussian(400, 4, 4))
    assert np.mean([d.verdict == "real" for d in near]) > 0.9
    assert verdict_of(1.0, 1.0) == "synthetic" and verdict_of(0.99, 1.0) == "real"


def test_pca_keeps_the_requested_dimensions_and_scores_in_them():
    raw = gaussian(300, 20, 0)
    detector = fit_detector(
        raw, gaussian(100, 20, 1), pca_dim=5, components=2, covariance="diag", descriptor=DESCRIPTOR
    )
    assert detector.projection.output_dim == 5 and detector.density.dim == 5 and detector.raw_dim == 20
    direct = -detector.density.log_density(detector.projection.apply(raw[:7]))
    np.testing.assert_allclose(detector.nll(raw[:7]), direct)


def test_bad_settings_are_refused_with_a_reason():
    with pytest.raises(UsageError, match="covariance"):
        fit_detector(gaussian(50, 3, 0), gaussian(10, 3, 1), pca_dim=3, covariance="round")
    with pytest.raises(UsageError, match="at least 2 held-out"):
        fit_detector(gaussian(50, 3, 0), gaussian(1, 3, 1), pca_dim=3)
    with pytest.raises(UsageError, match="components need at least"):
        fit_detector(gaussian(5, 3, 0), gaussian(10, 3, 1), pca_dim=2, components=4)


def saved(tmp_path, detector: Detector):
    path = tmp_path / "detector.safetensors"
    save_detector(path, detector, recipe={"copies": ["original", "jpeg:90"]}, metrics={"a": 1.0})
    return path


def test_save_and_load_round_trip(tmp_path):
    raw = gaussian(300, 8, 0)
    detector = fit_detector(raw, gaussian(100, 8, 1), pca_dim=4, components=2, covariance="full", descriptor=DESCRIPTOR)
    path = saved(tmp_path, detector)
    loaded, meta = load_detector(path)
    queries = gaussian(30, 8, 5, shift=0.5)
    np.testing.assert_allclose(loaded.score_raw(queries), detector.score_raw(queries), rtol=1e-12)
    assert loaded.threshold == detector.threshold and loaded.descriptor == DESCRIPTOR
    assert meta.mixture["components"] == 2 and meta.mixture["covariance"] == "full"
    assert meta.fit["pca_dim"] == 4 and meta.recipe["copies"] == ["original", "jpeg:90"]
    assert read_detector_meta(path).sha256 == meta.sha256 and len(meta.sha256) == 64


def test_a_modified_detector_is_refused(tmp_path):
    path = saved(tmp_path, fit_detector(gaussian(100, 4, 0), gaussian(40, 4, 1), pca_dim=3, descriptor=DESCRIPTOR))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="modified or corrupt"):
        load_detector(path)


def test_a_weights_file_is_not_a_detector(tmp_path, tiny_weights):
    with pytest.raises(WeightsError, match="pass it to --model"):
        load_detector(tiny_weights)


def test_another_descriptor_is_refused(tmp_path):
    detector = fit_detector(gaussian(100, 4, 0), gaussian(40, 4, 1), pca_dim=3, descriptor=DESCRIPTOR)
    check_descriptor("d.safetensors", detector, DESCRIPTOR["feature_identity"], 4)
    with pytest.raises(WeightsError, match="fitted on the raw descriptions of tiny"):
        check_descriptor("d.safetensors", detector, "e" * 64, 4, "other.safetensors")


def clustered(n: int, seed: int) -> np.ndarray:
    """Six well-apart clusters in 3-D: a 3-component mixture's fit depends on its k-means start."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6], [6, 6, 0], [6, 0, 6]], float)
    return centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.5, (n, 3))


def test_restarts_keep_the_fit_the_held_out_photos_are_likeliest_under():
    fit, held = clustered(300, 0), clustered(120, 1)
    detector = fit_detector(fit, held, pca_dim=3, components=3, seed=5, restarts=6, descriptor=DESCRIPTOR)
    # independently: the same projection, one mixture per seed, the held-out mean log-density of each
    projection = detector.projection
    by_seed = {
        s: float(
            np.mean(
                fit_mixture_density(projection.apply(fit), components=3, covariance="full", seed=s).log_density(
                    projection.apply(held)
                )
            )
        )
        for s in range(5, 11)
    }
    assert len({round(v, 6) for v in by_seed.values()}) > 1  # the starts do differ here
    best = max(by_seed, key=lambda s: (by_seed[s], -s))
    assert detector.fit["seed"] == best and detector.fit["restarts"] == 6
    assert detector.fit["restart_seeds"] == list(range(5, 11))
    np.testing.assert_allclose(detector.fit["held_out_mean_log_density"], [by_seed[s] for s in range(5, 11)])
    one = fit_detector(fit, held, pca_dim=3, components=3, seed=best, descriptor=DESCRIPTOR)
    np.testing.assert_allclose(detector.score_raw(held), one.score_raw(held))
    assert detector.threshold == one.threshold


def test_restarts_must_be_positive():
    with pytest.raises(UsageError, match="restarts"):
        fit_detector(gaussian(50, 3, 0), gaussian(10, 3, 1), pca_dim=3, restarts=0)
