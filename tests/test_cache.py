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
