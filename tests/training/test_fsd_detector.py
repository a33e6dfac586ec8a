"""The detector's training job: the held-out split, description as the embedder's, the per-copy cache."""

from __future__ import annotations

import numpy as np
import pytest

from osma_cli.data.resave import parse_resaves
from osma_cli.embed import Embedder, embed_all
from osma_cli.training.fsd_detector import describe_photos, photo_groups, split_held_out
from tests.cli.test_detect import save_descriptor
from tests.conftest import write_images


def test_held_out_photos_are_whole_groups_near_the_share():
    groups = [f"camera{i % 10}" for i in range(100)]
    held = split_held_out(groups, 0.2, seed=0)
    held_groups = {g for g, h in zip(groups, held) if h}
    assert all(h == (g in held_groups) for g, h in zip(groups, held))
    assert held.mean() == pytest.approx(0.2)
    np.testing.assert_array_equal(held, split_held_out(list(reversed(groups)), 0.2, seed=0)[::-1])


def test_one_folder_is_split_by_file(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(10)]
    assert photo_groups(paths, tmp_path) == [str(p) for p in paths]
    nested = [tmp_path / "a" / "1.png", tmp_path / "b" / "2.png"]
    assert photo_groups(nested, tmp_path) == ["a", "b"]


def test_originals_are_described_as_the_embedder_does_and_cached(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "real", "smooth", 3, seed=0, size=56)
    embedder = Embedder.from_file(save_descriptor(tmp_path / "fsd.safetensors"), device="cpu")
    copies = parse_resaves("offgrid:3,jpeg:90", ())
    first = describe_photos(embedder, paths, copies)
    direct, _ = embed_all(embedder, paths, features_only=True, workers=0)
    np.testing.assert_allclose(first.raw[first.copy_index == 0], direct, rtol=1e-6)
    assert first.raw.shape == (9, embedder.feature_dim)

    def fail(*args, **kwargs):
        raise AssertionError("described again")

    monkeypatch.setattr(Embedder, "features_of_crops", fail)
    again = describe_photos(embedder, paths, copies)
    np.testing.assert_array_equal(again.raw, first.raw)
    np.testing.assert_array_equal(again.copy_index, first.copy_index)
