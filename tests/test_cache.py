"""The embedding cache: hits return the same vectors, changed files miss, corruption is survived."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from osma_cli.cache import EmbeddingCache, embed_with_cache, file_key
from osma_cli.embed import Embedder
from tests.conftest import write_images


class CountingEmbedder:
    """Wraps an Embedder and counts the files it really embeds."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.embedded = 0
        self.meta = inner.meta
        self.crop_size = inner.crop_size
        self.embedding_dim = inner.embedding_dim

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_files(self, paths, **kwargs):
        for item in self.inner.embed_files(paths, **kwargs):
            self.embedded += 1
            yield item


def test_second_run_hits_and_matches(tmp_path: Path, tiny_weights: Path):
    paths = write_images(tmp_path / "imgs", "smooth", 4, seed=0)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"junk")
    paths.append(tmp_path / "imgs" / "bad.png")
    embedder = CountingEmbedder(Embedder.from_file(tiny_weights, device="cpu"))
    cache = EmbeddingCache(tmp_path / "cache.h5", embedder.embedding_dim)
    first = list(embed_with_cache(embedder, paths, cache, workers=0))
    assert embedder.embedded == 5 and len(cache) == 4
    assert not first[4].ok
    embedder.embedded = 0
    reopened = EmbeddingCache(tmp_path / "cache.h5", embedder.embedding_dim)
    second = list(embed_with_cache(embedder, paths, reopened, workers=0))
    assert embedder.embedded == 1  # only the unreadable file is tried again
    for a, b in zip(first[:4], second[:4]):
        np.testing.assert_array_equal(a.embedding, b.embedding)
        assert a.path == b.path
    assert [s.index for s in second] == list(range(5))


def test_changed_file_misses(tmp_path: Path):
    path = write_images(tmp_path, "smooth", 1, seed=0)[0]
    before = file_key(path)
    os.utime(path, ns=(1, 2))
    assert file_key(path) != before
    assert file_key(tmp_path / "missing.png") is None


def test_corrupt_cache_is_set_aside(tmp_path: Path):
    path = tmp_path / "cache.h5"
    path.write_bytes(b"garbage")
    cache = EmbeddingCache(path, 4)
    assert len(cache) == 0 and not path.exists()
    cache.add([b"k" * 64], np.ones((1, 4)))
    assert EmbeddingCache(path, 4).lookup([b"k" * 64])[0].tolist() == [1, 1, 1, 1]


def test_keys_survive_storage_whatever_their_bytes(tmp_path: Path):
    """Regression: raw digests ending in NUL lost that byte in HDF5 fixed-width strings."""
    keys = [file_key(p) for p in write_images(tmp_path / "imgs", "smooth", 40, seed=3)]
    cache = EmbeddingCache(tmp_path / "cache.h5", 2)
    cache.add(keys, np.arange(80, dtype=float).reshape(40, 2))
    assert len(EmbeddingCache(tmp_path / "cache.h5", 2).lookup(keys)) == 40


def test_a_regime_of_a_model_is_served_its_own_features(tmp_path: Path):
    """One cache made for a model with JPEG regimes: each regime's features from its own file."""
    from osma_cli.regimes import LOSSLESS, Regime
    from tests.test_regimes import routed_model

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    paths = write_images(tmp_path / "imgs", "smooth", 3, size=48, seed=2)
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad", folder=tmp_path / "cache")
    lossless, jpeg = embedder.for_regime(LOSSLESS), embedder.for_regime(Regime(90))
    for member in (lossless, jpeg, lossless, jpeg):  # the second round is served from the cache
        cached = [it.embedding for it in embed_with_cache(member, paths, cache, workers=0, features_only=True)]
        direct = [it.embedding for it in member.embed_files(paths, workers=0, features_only=True)]
        np.testing.assert_allclose(np.stack(cached), np.stack(direct), rtol=1e-6)
    assert cache.serving(lossless) is cache and cache.serving(jpeg).path != cache.path
    assert len(cache) == 3 and len(cache.serving(jpeg)) == 3
    assert not np.allclose(
        np.stack(direct), np.stack([it.embedding for it in lossless.embed_files(paths, workers=0, features_only=True)])
    )


def test_a_routed_benchmark_with_the_cache_equals_one_without(tmp_path: Path):
    from PIL import Image

    from osma_cli.embed import EmbedOptions
    from osma_cli.evaluation.protocol import run_benchmark
    from osma_cli.evaluation.sources import load_pose_split
    from tests.pose_fixture import SPLIT, make_pose_fixture
    from tests.test_regimes import routed_model

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    root = make_pose_fixture(tmp_path / "pose")
    options = EmbedOptions(workers=0)
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad", folder=tmp_path / "cache")
    run_benchmark(embedder, load_pose_split(root, SPLIT), options=options, cache=cache)  # lossless features cached
    split = load_pose_split(root, SPLIT)
    for image in split.test_known + split.test_unknown:  # the test images become JPEGs: the jpeg90 regime
        Image.open(image.path).convert("RGB").save(image.path, format="JPEG", quality=90)
    cached = run_benchmark(embedder, split, options=options, cache=cache)
    direct = run_benchmark(embedder, split, options=options)
    assert cached.regime == direct.regime == "jpeg90"
    np.testing.assert_allclose(cached.scores, direct.scores, rtol=1e-6)


def test_a_damaged_file_keeps_its_warning_on_every_run(tmp_path: Path, tiny_weights: Path):
    """A cache hit has no decode, so a damaged file is never cached: its record says so each time."""
    paths = write_images(tmp_path / "imgs", "checker", 2, seed=4)
    damaged = tmp_path / "imgs" / "cut.png"
    damaged.write_bytes(paths[0].read_bytes()[:-12])  # IEND cut off: decodes, with a warning
    embedder = Embedder.from_file(tiny_weights, device="cpu")
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad", folder=tmp_path / "cache")
    for _ in range(2):
        items = list(embed_with_cache(embedder, [*paths, damaged], cache, workers=0))
        assert all(it.ok for it in items)
        assert items[2].warnings and not items[0].warnings
    assert len(cache) == 2
