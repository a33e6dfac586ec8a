"""Grouping unknown images: HDBSCAN on the unknowns' embeddings, nearest known generator per cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from osma_cli.contact_sheet import contact_sheet
from osma_cli.discovery import NOISE, cluster_embeddings, group_unknowns, nearest_centroids
from osma_cli.references import ReferenceStore


def blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """30 points around (10, 0, ...), 20 around (-10, 0, ...), 5 far scattered points; true labels (-1: noise)."""
    dim = 8
    a = rng.normal(0, 0.3, (30, dim)) + np.r_[10.0, np.zeros(dim - 1)]
    b = rng.normal(0, 0.3, (20, dim)) + np.r_[-10.0, np.zeros(dim - 1)]
    noise = rng.uniform(-40, 40, (5, dim)) + np.r_[0.0, 60.0, np.zeros(dim - 2)]
    return np.vstack([a, b, noise]), np.r_[np.zeros(30, int), np.ones(20, int), np.full(5, NOISE)]


def test_two_blobs_and_noise_give_two_clusters_largest_first():
    points, truth = blobs(np.random.default_rng(0))
    labels = cluster_embeddings(points, min_cluster_size=5)
    assert set(labels) - {NOISE} == {0, 1}
    assert (labels[truth == 0] == 0).all() and (labels[truth == 1] == 1).all()
    assert (labels[truth == NOISE] == NOISE).all()


def test_one_blob_is_one_cluster_of_its_densest_points():
    points = np.random.default_rng(4).normal(0, 0.3, (12, 8))
    labels = cluster_embeddings(points, min_cluster_size=5)
    assert set(labels) == {0, NOISE} and (labels == 0).sum() >= 5
    centre = np.linalg.norm(points - points.mean(axis=0), axis=1)
    assert centre[labels == 0].mean() < centre[labels == NOISE].mean()


def test_too_few_points_are_noise_and_empty_input_is_no_cluster():
    assert cluster_embeddings(np.zeros((0, 4)), 5).shape == (0,)
    assert (cluster_embeddings(np.ones((3, 4)), 5) == NOISE).all()


def test_nearest_centroids_match_a_direct_computation():
    rng = np.random.default_rng(1)
    points, centroids = rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    index, distance = nearest_centroids(points, centroids)
    for i, p in enumerate(points):
        direct = [np.linalg.norm(p - c) for c in centroids]
        assert index[i] == int(np.argmin(direct))
        assert np.isclose(distance[i], min(direct))


def store_with(centroids: dict[str, np.ndarray]) -> ReferenceStore:
    store = ReferenceStore(weights_sha256="0" * 64, architecture="test", embedding_dim=8, l2_normalize=False)
    rng = np.random.default_rng(2)
    for name, centre in centroids.items():
        store.enroll(name, centre + rng.normal(0, 0.1, (4, 8)))
    return store


def test_group_unknowns_names_each_clusters_nearest_generator_at_its_means_distance():
    points, truth = blobs(np.random.default_rng(3))
    store = store_with({"near_a": np.r_[12.0, np.zeros(7)], "near_b": np.r_[-13.0, np.zeros(7)]})
    files = [Path(f"f{i}.png") for i in range(len(points))]
    clusters, rest, ids = group_unknowns(
        points, files, store, regime=None, min_cluster_size=5, first_id=3, method="hdbscan"
    )
    assert [c.id for c in clusters] == [3, 4] and [c.size for c in clusters] == [30, 20]
    assert [c.nearest for c in clusters] == ["near_a", "near_b"]
    for cluster, label in zip(clusters, (0, 1)):
        mean = points[truth == label].mean(axis=0)
        centroid = store.get(cluster.nearest).centroid
        assert np.isclose(cluster.distance, np.linalg.norm(mean - centroid))
        assert list(cluster.files) == [f for f, t in zip(files, truth) if t == label]
    assert rest == [f for f, t in zip(files, truth) if t == NOISE]
    assert (ids == np.where(truth == NOISE, NOISE, truth + 3)).all()


def test_group_unknowns_of_nothing_is_nothing():
    store = store_with({"a": np.zeros(8)})
    clusters, rest, ids = group_unknowns(np.zeros((0, 8)), [], store, regime=None, min_cluster_size=5)
    assert (clusters, rest, ids.shape) == ([], [], (0,))


def test_contact_sheet_has_one_thumbnail_per_image_up_to_the_limit(tmp_path: Path):
    paths = []
    for i in range(20):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (200, 100), (255, 0, 0)).save(path)
        paths.append(path)
    assert contact_sheet(paths[:3], thumb=96).size == (3 * 96, 96)
    sheet = contact_sheet(paths, thumb=96)
    assert sheet.size == (4 * 96, 4 * 96)
    assert sheet.getpixel((48, 48)) == (255, 0, 0)


def test_all_known_and_no_files_give_no_clusters(tiny_weights: Path, image_tree: Path):
    from osma_cli.api import build_references
    from osma_cli.discovery import discover_files
    from osma_cli.embed import Embedder, EmbedOptions

    embedder = Embedder.from_file(tiny_weights, device="cpu")
    store = build_references(embedder, image_tree, options=EmbedOptions(workers=0)).store
    paths = sorted(image_tree.rglob("*.png"))
    known = discover_files(embedder, store, paths, threshold=1e9, options=EmbedOptions(workers=0))
    assert (known.n_files, known.n_unknown, known.clusters, known.unclustered) == (10, 0, [], [])
    empty = discover_files(embedder, store, [], threshold=1e9, options=EmbedOptions(workers=0))
    assert (empty.n_files, empty.clusters, empty.failures) == (0, [], [])


def test_a_routed_model_clusters_each_regime_in_its_own_space(tmp_path: Path):
    from osma_cli.api import build_references
    from osma_cli.discovery import discover_files
    from osma_cli.embed import Embedder, EmbedOptions, embed_all
    from osma_cli.regimes import LOSSLESS, Regime
    from tests.conftest import pattern_image
    from tests.test_regimes import routed_model, write

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    options = EmbedOptions(workers=0)
    rng = np.random.default_rng(5)
    for kind in ("checker", "smooth"):
        for i in range(5):
            write(tmp_path / "train" / f"{kind}gan" / f"{i}.png", pattern_image(kind, rng, 48))
    store = build_references(embedder, tmp_path / "train", options=options).store
    paths = [write(tmp_path / "new" / f"{i}.png", pattern_image("stripes", rng, 48)) for i in range(6)] + [
        write(tmp_path / "new" / f"{i}.jpg", pattern_image("stripes", rng, 48), quality=90) for i in range(6)
    ]
    found = discover_files(
        embedder,
        store,
        paths,
        threshold={name: 1e-9 for name in store.stores},
        min_cluster_size=3,
        method="hdbscan",
        options=options,
    )
    assert found.n_unknown == 12 and found.clusters
    assert sorted([f for c in found.clusters for f in c.files] + found.unclustered) == sorted(paths)
    regimes = {"lossless": LOSSLESS, "jpeg90": Regime(90)}
    assert sorted(view.regime for view in found.views) == ["jpeg90", "lossless"]
    for view in found.views:
        mine = {c.id for c in found.clusters if c.regime == view.regime}
        assert set(view.labels.tolist()) - {-1} == mine and len(view.labels) == 6 and len(view.accepted) == 0
    for cluster in found.clusters:
        assert {f.suffix for f in cluster.files} == {".png" if cluster.regime == "lossless" else ".jpg"}
        single = store.store_for(regimes[cluster.regime])
        vectors, _ = embed_all(embedder.for_regime(regimes[cluster.regime]), list(cluster.files), workers=0)
        direct = np.linalg.norm(vectors.mean(axis=0) - single.centroids(), axis=1)
        assert cluster.nearest == single.names[int(direct.argmin())]
        assert np.isclose(cluster.distance, direct.min(), rtol=1e-5)
