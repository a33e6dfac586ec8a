"""Purity, NMI and ARI of a clustering; planted clusters recovered by both clustering methods."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from osma_cli.discovery import AGGLOMERATIVE, HDBSCAN_METHOD, NOISE, cluster_embeddings, distance_cut, group_labels
from osma_cli.discovery_metrics import clustering_scores, purity
from osma_cli.errors import UsageError
from osma_cli.references import ReferenceStore


def test_purity_known_answer():
    # cluster 0 holds {a, a}: 2 of its majority; cluster 1 holds {a, b, b, c}: 2 -> 4 of 6
    assert purity(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 1]) == pytest.approx(4 / 6)
    assert purity([0, 1, 2], [5, 5, 5]) == pytest.approx(1 / 3)
    assert purity([0, 0, 1], [0, 1, 2]) == 1.0
    assert purity([], []) == 0.0


def test_purity_matches_a_loop_over_clusters():
    rng = np.random.default_rng(0)
    truth, found = rng.integers(0, 4, 200), rng.integers(-1, 6, 200)
    direct = sum(np.bincount(truth[found == c]).max() for c in np.unique(found)) / len(truth)
    assert purity(truth, found) == pytest.approx(direct)


def test_noise_counts_as_one_more_cluster():
    scores = clustering_scores([0, 0, 1, 1], [NOISE, NOISE, NOISE, NOISE])
    assert (scores.purity, scores.n_clusters, scores.clustered) == (0.5, 0, 0.0)
    assert scores.nmi == pytest.approx(0.0) and scores.ari == pytest.approx(0.0)


def test_mismatched_labels_are_refused():
    with pytest.raises(UsageError):
        clustering_scores([0, 1], [0])


def planted(rng: np.random.Generator, sizes=(40, 30, 20), dim: int = 16, spread: float = 0.5):
    """Gaussian clusters around far-apart centres, and their true labels."""
    centres = rng.normal(0, 10, (len(sizes), dim))
    points = np.vstack([c + rng.normal(0, spread, (n, dim)) for c, n in zip(centres, sizes)])
    return points, np.repeat(np.arange(len(sizes)), sizes)


def store_of(points: np.ndarray, truth: np.ndarray) -> ReferenceStore:
    """A store whose generators are spread as the planted clusters are (a distance cut's unit)."""
    store = ReferenceStore(
        weights_sha256="0" * 64, architecture="test", embedding_dim=points.shape[1], l2_normalize=False
    )
    for label in np.unique(truth):
        store.enroll(f"g{label}", points[truth == label] + 100.0)
    return store


@pytest.mark.parametrize("method", [HDBSCAN_METHOD, AGGLOMERATIVE])
def test_planted_clusters_are_recovered_and_scored_as_scikit_learn_scores_them(method):
    rng = np.random.default_rng(1)
    points, truth = planted(rng)
    labels = group_labels(points, store_of(points, truth), min_cluster_size=5, method=method)
    scores = clustering_scores(truth, labels)
    assert scores.nmi == pytest.approx(normalized_mutual_info_score(truth, labels))
    assert scores.ari == pytest.approx(adjusted_rand_score(truth, labels))
    assert scores.purity > 0.95 and scores.nmi > 0.9 and scores.ari > 0.9
    assert scores.n_clusters == 3 and list(np.bincount(labels[labels >= 0])) == sorted(
        np.bincount(labels[labels >= 0]), reverse=True
    )


def test_agglomerative_cut_is_the_scale_times_the_median_sigma_and_small_groups_are_noise():
    rng = np.random.default_rng(2)
    points, truth = planted(rng, sizes=(20, 20, 3))
    store = store_of(points, truth)
    assert distance_cut(store, 1.5) == pytest.approx(1.5 * np.median(store.sigmas()))
    labels = cluster_embeddings(points, 5, method=AGGLOMERATIVE, distance_cut=distance_cut(store))
    assert (labels[truth == 2] == NOISE).all() and set(labels[truth < 2]) == {0, 1}


def test_agglomerative_without_a_cut_or_an_unknown_method_is_refused():
    points = np.random.default_rng(3).normal(size=(10, 4))
    with pytest.raises(UsageError):
        cluster_embeddings(points, 3, method=AGGLOMERATIVE)
    with pytest.raises(UsageError, match="kmeans"):
        cluster_embeddings(points, 3, method="kmeans")
