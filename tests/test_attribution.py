"""The attribution rule and threshold choice against direct computations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from osma_cli.attribution import UNKNOWN, attribute_embeddings, l2_distances, score_embeddings
from osma_cli.calibration import leave_one_out_scores, threshold_for_acceptance
from osma_cli.references import ReferenceStore


@dataclass(frozen=True)
class FakeMeta:
    sha256: str = "a" * 64
    architecture: str = "mislnet"
    embedding_dim: int = 2
    l2_normalize: bool = False


def test_l2_distances_match_direct_loop():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(7, 5)), rng.normal(size=(3, 5))
    direct = np.array([[np.linalg.norm(a - b) for b in c] for a in q])
    np.testing.assert_allclose(l2_distances(q, c), direct, atol=1e-12)


def make_store() -> ReferenceStore:
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("a", np.array([[0.0, 1.0], [0.0, -1.0]]))  # centroid (0,0), sigma sqrt(2)
    store.enroll("b", np.array([[10.0, 0.0], [10.0, 4.0]]))  # centroid (10,2), sigma sqrt(8)
    return store


def test_known_answers():
    store = make_store()
    assert store.sigmas() == pytest.approx([np.sqrt(2), np.sqrt(8)])
    x = np.array([[1.0, 0.0], [10.0, 5.0], [5.2, 1.0], [40.0, 40.0]])
    res = attribute_embeddings(x, store, threshold=2.0, top_k=2)
    assert [r.candidate for r in res] == ["a", "b", "b", "b"]
    assert res[0].score == pytest.approx(1 / np.sqrt(2))
    assert res[0].verdict == "a" and res[0].accepted
    assert res[1].score == pytest.approx(3 / np.sqrt(8))
    assert res[1].verdict == "b"
    # (5.2, 1): distance to a = sqrt(27.04 + 1), to b = sqrt(23.04 + 1) -> candidate b
    assert res[2].score == pytest.approx(np.sqrt(24.04) / np.sqrt(8))
    assert res[3].verdict == UNKNOWN and not res[3].accepted
    assert res[3].margin == pytest.approx(2.0 - res[3].score)
    assert [c.name for c in res[0].top] == ["a", "b"]
    assert res[0].top[1].normalized_distance == pytest.approx(np.sqrt(81 + 4) / np.sqrt(8))


def test_candidate_is_nearest_raw_distance_not_normalized():
    """Fang's S rule ranks by raw distance; the normalized distance only decides acceptance."""
    store = make_store()
    x = np.array([[4.0, 0.0]])  # raw: a=4, b=sqrt(40)=6.32 ; normalized: a=2.83, b=2.24
    batch = score_embeddings(x, store.centroids(), store.sigmas())
    assert store.names[batch.candidates[0]] == "a"
    assert batch.scores[0] == pytest.approx(4 / np.sqrt(2))


def test_threshold_boundary_is_strict():
    store = make_store()
    x = np.array([[1.0, 0.0]])
    score = 1 / np.sqrt(2)
    assert attribute_embeddings(x, store, threshold=score)[0].verdict == UNKNOWN
    assert attribute_embeddings(x, store, threshold=np.nextafter(score, 10))[0].verdict == "a"


def test_threshold_for_acceptance_accepts_the_target_fraction():
    rng = np.random.default_rng(3)
    for n in (1, 2, 19, 20, 101):
        s = rng.exponential(size=n)
        for rate in (0.5, 0.9, 0.95, 1.0):
            tau = threshold_for_acceptance(s, rate)
            accepted = (s < tau).mean()
            assert accepted >= rate - 1e-12
            # smallest such tau: any lower candidate accepts fewer than the target
            below = s[s < tau].max()
            assert (s < below).mean() < rate


def test_threshold_for_acceptance_with_ties():
    s = np.array([1.0, 1.0, 1.0, 2.0])
    assert (s < threshold_for_acceptance(s, 0.5)).mean() == 0.75


def test_leave_one_out_scores_match_rebuilding_without_the_image():
    rng = np.random.default_rng(4)
    emb = np.concatenate([rng.normal(0, 1, (6, 2)), rng.normal(3, 1, (5, 2))])
    labels = np.array([0] * 6 + [1] * 5)
    fast = leave_one_out_scores(emb, labels)
    for i in range(len(emb)):
        keep = np.arange(len(emb)) != i
        store = ReferenceStore.for_weights(FakeMeta())
        for c in (0, 1):
            store.enroll(str(c), emb[keep & (labels == c)])
        slow = score_embeddings(emb[i : i + 1], store.centroids(), store.sigmas()).scores[0]
        assert fast[i] == pytest.approx(slow, rel=1e-9)


def test_threshold_for_crr_rejects_the_target_fraction():
    from osma_cli.calibration import threshold_for_crr

    rng = np.random.default_rng(5)
    for n in (1, 3, 20, 101):
        u = rng.exponential(size=n)
        for target in (0.5, 0.8, 0.95, 1.0):
            tau = threshold_for_crr(u, target)
            assert (u >= tau).mean() >= target - 1e-12
            # largest such tau: nudging it up rejects fewer than the target
            assert (u >= np.nextafter(tau, np.inf)).mean() < target or tau > u.max()


def test_threshold_for_crr_known_answer():
    from osma_cli.calibration import threshold_for_crr

    u = np.array([4.0, 1.0, 3.0, 2.0])
    assert threshold_for_crr(u, 1.0) == 1.0  # everything rejected: tau at the smallest score
    assert threshold_for_crr(u, 0.75) == 2.0  # one may pass (the 1.0)
    assert threshold_for_crr(u, 0.5) == 3.0
