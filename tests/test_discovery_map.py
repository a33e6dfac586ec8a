"""The 2-D map of the open space: deterministic t-SNE, references from the store, a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from osma_cli.discovery import NOISE, SpaceView
from osma_cli.discovery_map import embed_2d, map_file_name, map_points, write_map
from osma_cli.references import ReferenceStore
from osma_cli.rules import get_rule


def store(rule: str = "fang", dim: int = 60) -> ReferenceStore:
    out = ReferenceStore(
        weights_sha256="0" * 64, architecture="test", embedding_dim=dim, l2_normalize=False, rule=get_rule(rule)
    )
    rng = np.random.default_rng(0)
    for k, name in enumerate(("alpha", "beta")):
        out.enroll(name, rng.normal(k * 5.0, 1.0, (6, dim)))
    return out


def view(of: ReferenceStore) -> SpaceView:
    rng = np.random.default_rng(1)
    dim = of.embedding_dim
    return SpaceView(
        regime=None,
        store=of,
        accepted=rng.normal(0, 1, (8, dim)),
        accepted_as=["alpha"] * 8,
        unknown=np.vstack([rng.normal(20, 1, (7, dim)), rng.normal(-20, 1, (7, dim)), rng.normal(0, 30, (2, dim))]),
        labels=np.r_[np.zeros(7, int), np.ones(7, int), np.full(2, NOISE)],
    )


def test_embed_2d_is_seeded_and_handles_few_points():
    points = np.random.default_rng(2).normal(size=(40, 80))
    first, second = embed_2d(points), embed_2d(points)
    assert first.shape == (40, 2) and np.array_equal(first, second)
    assert embed_2d(np.zeros((0, 5))).shape == (0, 2)
    assert embed_2d(points[:3]).shape == (3, 2)


def test_a_store_without_vectors_is_drawn_by_its_centroids_one_with_by_its_vectors():
    fang = map_points(view(store("fang")))
    assert fang.centroids_only and fang.reference_names == ["alpha", "beta"] and fang.references.shape == (2, 2)
    assert fang.accepted.shape == (8, 2) and fang.unknown.shape == (16, 2)
    gmm = map_points(view(store("gmm")))
    assert not gmm.centroids_only and gmm.references.shape == (12, 2)
    assert gmm.reference_names == ["alpha"] * 6 + ["beta"] * 6


def test_context_is_sampled_and_every_unknown_is_kept():
    seen = view(store("gmm"))
    points = map_points(seen, max_context=5)
    assert len(points.references) == 5 and len(points.accepted) == 5 and len(points.unknown) == 16
    again = map_points(seen, max_context=5)
    assert points.reference_names == again.reference_names and np.array_equal(points.unknown, again.unknown)


def test_the_clusters_stay_apart_on_the_map():
    points = map_points(view(store()))
    a, b = points.unknown[points.labels == 0], points.unknown[points.labels == 1]
    gap = np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))
    assert gap > 2 * max(
        np.linalg.norm(a - a.mean(axis=0), axis=1).max(), np.linalg.norm(b - b.mean(axis=0), axis=1).max()
    )


def test_write_map_writes_a_png(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    path = out / map_file_name(None)
    write_map(path, view(store()))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300
    assert map_file_name("jpeg90") == "map-jpeg90.png"
    assert sorted(p.name for p in out.iterdir()) == ["map.png"]
