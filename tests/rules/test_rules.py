"""Open-set rules: each against an independent computation, exact enrolment, store round trips."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from osma_cli.attribution import ReferenceScorer, check_tau, resolve_threshold
from osma_cli.calibration import leave_one_out_scores
from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.references import ReferenceStore, Threshold
from osma_cli.rules import get_rule, list_rules, rule_from_spec

DIM = 4
ALL_RULES = [
    ("fang", {}),
    ("mahalanobis", {"shrinkage": 0.2}),
    ("gmm", {"components": 2, "covariance": "tied"}),
    ("gmm", {"components": 1, "covariance": "diag"}),
]


def data(seed: int = 0, n: int = 24, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(k, DIM))
    labels = np.repeat(np.arange(k), n)
    x = means[labels] + rng.normal(size=(k * n, DIM)) * rng.uniform(0.5, 1.5, size=DIM)
    return x, labels


def store_for(rule, x, labels) -> ReferenceStore:
    store = ReferenceStore(
        weights_sha256="0" * 64, architecture="test", embedding_dim=DIM, l2_normalize=False, rule=rule
    )
    for k in np.unique(labels):
        store.enroll(f"g{k}", x[labels == k])
    return store


def test_registry_names_and_close_matches():
    assert {"fang", "mahalanobis", "gmm"} <= set(list_rules())
    with pytest.raises(UsageError, match="mahalanobis"):
        get_rule("mahalanobs")
    with pytest.raises(UsageError):
        get_rule("gmm", covariance="spherical-ish")
    assert rule_from_spec(None).name == "fang"
    assert rule_from_spec(get_rule("gmm", components=3).spec()) == get_rule("gmm", components=3)


def test_mahalanobis_matches_a_direct_computation():
    x, labels = data()
    queries = np.random.default_rng(5).normal(scale=4.0, size=(7, DIM))
    shrink = 0.2
    scored = store_for(get_rule("mahalanobis", shrinkage=shrink), x, labels).fitted_rule().score(queries)
    means = np.stack([x[labels == k].mean(0) for k in range(3)])
    centred = x - means[labels]
    s_w = centred.T @ centred / (len(x) - 3)
    cov = (1 - shrink) * s_w + shrink * np.trace(s_w) / DIM * np.eye(DIM)
    inv = np.linalg.inv(cov)
    direct = np.array([[np.sqrt((q - m) @ inv @ (q - m)) for m in means] for q in queries])
    np.testing.assert_allclose(scored.distances, direct, rtol=1e-6)
    np.testing.assert_array_equal(scored.candidates, direct.argmin(1))
    np.testing.assert_allclose(scored.scores, direct.min(1), rtol=1e-6)


def test_gmm_matches_scikit_learn():
    from sklearn.mixture import GaussianMixture

    x, labels = data(1)
    queries = np.random.default_rng(6).normal(scale=4.0, size=(9, DIM))
    rule = get_rule("gmm", components=2, covariance="tied", reg_covar=1e-3)
    scored = store_for(rule, x, labels).fitted_rule().score(queries)
    direct = np.stack(
        [
            -GaussianMixture(2, covariance_type="tied", reg_covar=1e-3, random_state=0)
            .fit(x[labels == k])
            .score_samples(queries)
            for k in range(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(scored.distances, direct, rtol=1e-6)
    np.testing.assert_array_equal(scored.candidates, direct.argmin(1))


def test_fang_matches_the_paper_rule():
    x, labels = data(2)
    q = np.random.default_rng(7).normal(scale=4.0, size=(5, DIM))
    scored = store_for(get_rule("fang"), x, labels).fitted_rule().score(q)
    means = np.stack([x[labels == k].mean(0) for k in range(3)])
    sigmas = np.array([np.sqrt(((x[labels == k] - means[k]) ** 2).sum() / (24 - 1)) for k in range(3)])
    d = np.linalg.norm(q[:, None, :] - means[None], axis=2)
    np.testing.assert_array_equal(scored.candidates, d.argmin(1))
    nearest = d.argmin(1)
    np.testing.assert_allclose(scored.scores, d[np.arange(5), nearest] / sigmas[nearest], rtol=1e-9)


@pytest.mark.parametrize("name,params", ALL_RULES)
def test_enrolling_later_equals_building_at_once(name, params):
    x, labels = data(3)
    rule = get_rule(name, **params)
    at_once = store_for(rule, x, labels)
    stepwise = ReferenceStore(
        weights_sha256="0" * 64, architecture="test", embedding_dim=DIM, l2_normalize=False, rule=rule
    )
    for k in range(3):
        mine = x[labels == k]
        stepwise.enroll(f"g{k}", mine[:10])
        stepwise.enroll(f"g{k}", mine[10:17], update=True)
        stepwise.enroll(f"g{k}", mine[17:], update=True)
    q = np.random.default_rng(8).normal(scale=4.0, size=(11, DIM))
    a, b = at_once.fitted_rule().score(q), stepwise.fitted_rule().score(q)
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_allclose(a.normalized, b.normalized, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,params", ALL_RULES)
def test_store_round_trip_keeps_rule_and_scores(tmp_path, name, params):
    x, labels = data(4)
    store = store_for(get_rule(name, **params), x, labels)
    store.set_threshold(Threshold(value=1.5, method="test"))
    store.save(tmp_path / "refs.h5")
    loaded = ReferenceStore.load(tmp_path / "refs.h5")
    assert loaded.rule == store.rule
    q = np.random.default_rng(9).normal(scale=4.0, size=(6, DIM))
    np.testing.assert_allclose(
        loaded.fitted_rule().score(q).normalized, store.fitted_rule().score(q).normalized, rtol=1e-12
    )
    with h5py.File(tmp_path / "refs.h5") as f:
        assert int(f.attrs["format_version"]) == (1 if name == "fang" else 2)


def test_a_store_without_a_rule_is_fang(tmp_path):
    x, labels = data(5)
    store_for(get_rule("fang"), x, labels).save(tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5") as f:
        assert "rule" not in f.attrs
    assert ReferenceStore.load(tmp_path / "old.h5").rule.name == "fang"


def brute_force_held_out(rule, x, labels, i):
    keep = np.ones(len(x), dtype=bool)
    keep[i] = False
    return store_for(rule, x[keep], labels[keep]).fitted_rule().score(x[i : i + 1]).scores[0]


@pytest.mark.parametrize("name,params", ALL_RULES[:2])
def test_leave_one_out_equals_refitting_without_the_image(name, params):
    x, labels = data(6, n=8)
    rule = get_rule(name, **params)
    loo = leave_one_out_scores(x, labels, rule)
    for i in (0, 9, 23):
        assert loo[i] == pytest.approx(brute_force_held_out(rule, x, labels, i), rel=1e-9)


def test_gmm_held_out_scores_are_k_fold():
    x, labels = data(7, n=10)
    rule = get_rule("gmm", components=1, covariance="diag", folds=5)
    held = rule.held_out_scores(x, labels)
    assert np.isfinite(held).all()
    rows = np.flatnonzero(labels == 1)
    fold = rows[2::5]
    keep = np.ones(len(x), dtype=bool)
    keep[fold] = False
    expected = store_for(rule, x[keep], labels[keep]).fitted_rule().score(x[fold])
    others = store_for(rule, x, labels).fitted_rule().score(x[fold]).normalized
    per = others.copy()
    per[:, 1] = expected.normalized[:, 1]
    np.testing.assert_allclose(held[fold], per.min(1), rtol=1e-9)
    assert "fold" in rule.held_out_method()


def test_missing_statistics_are_refused():
    x, labels = data(8)
    store = store_for(get_rule("fang"), x, labels)
    store.rule = get_rule("mahalanobis")
    with pytest.raises(ReferenceStoreError, match="second moments"):
        ReferenceScorer(store)


def test_gmm_accepts_a_negative_threshold_and_fang_does_not():
    x, labels = data(9)
    gmm_store = store_for(get_rule("gmm"), x, labels)
    assert resolve_threshold(gmm_store, -3.0) == -3.0
    with pytest.raises(UsageError):
        resolve_threshold(store_for(get_rule("fang"), x, labels), -3.0)
    with pytest.raises(UsageError):
        check_tau(float("nan"), nonnegative_scores=False)
