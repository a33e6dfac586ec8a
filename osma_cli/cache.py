"""A cache of embeddings, so that re-running a benchmark or a calibration embeds nothing twice.

An embedding depends on the weights, the crop policy and the file's bytes. The cache keeps
the costly stage, the extractor's features (a network's embedding, a descriptor's raw
self-description before its projection: ``Embedder.feature_identity``), so that a refitted
projection re-describes nothing. One HDF5 file per (feature identity, crop policy) under
``$OSMA_HOME/cache/`` and, inside it,
one row per file keyed by the file's identity: its resolved path, size and modification
time (like ``make``). A file that changes gets a new key and is embedded again.

A cache is disposable: if its file cannot be read (a crash during an append, a full disk),
it is set aside and rebuilt, never trusted half-written. Appends happen under a file lock
so concurrent runs do not interleave rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
from filelock import FileLock

from osma_cli.data.compression import is_compression_note, note_for
from osma_cli.embed import EmbeddedImage, Embedder
from osma_cli.home import osma_home
from osma_cli.regimes import file_jpeg_quality

KEY_BYTES = 64  # hex sha256: numpy's fixed-width bytes would strip a trailing NUL of a raw digest


def file_key(path: Path) -> bytes | None:
    """sha256 of (resolved path, size, mtime_ns); None when the file cannot be stat'ed."""
    try:
        resolved = Path(path).resolve()
        st = resolved.stat()
    except OSError:
        return None
    ident = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(ident).hexdigest().encode("ascii")


class EmbeddingCache:
    """Embeddings of one model under one crop policy, keyed by file identity.

    A cache made ``for_embedder`` knows whose features it holds: asked to serve another
    embedder (a compression regime of the same model, whose features are those of the file
    re-encoded), ``serving`` hands over that embedder's own file in the same folder, so a
    file's features in one regime are never served in another.
    """

    def __init__(
        self,
        path: Path | str,
        embedding_dim: int,
        *,
        feature_identity: str | None = None,
        policy: tuple[int, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.embedding_dim = embedding_dim
        self.feature_identity = feature_identity
        self.policy = policy
        self.index: dict[bytes, int] = {}
        self._served: dict[str, EmbeddingCache] = {}
        self._load_index()

    @classmethod
    def for_embedder(
        cls, embedder: Embedder, *, n_crops: int, small: str, folder: Path | None = None
    ) -> EmbeddingCache:
        folder = folder if folder is not None else osma_home() / "cache"
        name = (
            f"embeddings-{embedder.feature_identity[:16]}-c{embedder.crop_size}"
            f"-n{n_crops}-{embedder.small_policy(small)}.h5"
        )
        return cls(
            folder / name, embedder.feature_dim, feature_identity=embedder.feature_identity, policy=(n_crops, small)
        )

    def serving(self, embedder: Embedder) -> EmbeddingCache:
        """This cache, or the one of ``embedder``'s features under the same crop policy and folder."""
        if self.feature_identity is None or self.policy is None or self.feature_identity == embedder.feature_identity:
            return self
        if embedder.feature_identity not in self._served:  # its index is read once, not once per chunk of files
            n_crops, small = self.policy
            self._served[embedder.feature_identity] = EmbeddingCache.for_embedder(
                embedder, n_crops=n_crops, small=small, folder=self.path.parent
            )
        return self._served[embedder.feature_identity]

    def _load_index(self) -> None:
        if not self.path.exists():
            return
        try:
            with h5py.File(self.path, "r") as f:
                keys = f["keys"][()]
                if f["embeddings"].shape != (len(keys), self.embedding_dim):
                    raise ValueError("shape mismatch")
        except (OSError, KeyError, ValueError):
            self.path.replace(self.path.with_name(self.path.name + f".broken-{os.getpid()}"))
            return
        self.index = {bytes(k): i for i, k in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, keys: Sequence[bytes | None]) -> dict[int, np.ndarray]:
        """Cached embeddings for the given keys, by position in ``keys``."""
        rows = {i: self.index[k] for i, k in enumerate(keys) if k is not None and k in self.index}
        if not rows:
            return {}
        order = sorted(set(rows.values()))
        with h5py.File(self.path, "r") as f:
            data = f["embeddings"][order]
        by_row = dict(zip(order, data))
        return {i: by_row[r] for i, r in rows.items()}

    def add(self, keys: Sequence[bytes], embeddings: np.ndarray) -> None:
        """Append new rows (keys already present are skipped)."""
        fresh = [(k, e) for k, e in zip(keys, embeddings) if k not in self.index]
        if not fresh:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            with h5py.File(self.path, "a") as f:
                if "keys" not in f:
                    f.create_dataset("keys", shape=(0,), maxshape=(None,), dtype=f"S{KEY_BYTES}", chunks=(4096,))
                    f.create_dataset(
                        "embeddings",
                        shape=(0, self.embedding_dim),
                        maxshape=(None, self.embedding_dim),
                        dtype=np.float32,
                        chunks=(256, self.embedding_dim),
                    )
                n = f["keys"].shape[0]
                m = len(fresh)
                f["keys"].resize((n + m,))
                f["embeddings"].resize((n + m, self.embedding_dim))
                f["keys"][n:] = np.array([k for k, _ in fresh], dtype=f"S{KEY_BYTES}")
                f["embeddings"][n:] = np.stack([e for _, e in fresh]).astype(np.float32)
                stored = f["keys"][()]
        self.index = {bytes(k): i for i, k in enumerate(stored)}


NOT_CACHED = "not in the embedding cache (--from-cache reads no image: run once with --cache to fill it)"


def embed_with_cache(
    embedder: Embedder, paths: Sequence[Path], cache: EmbeddingCache | None, *, cached_only: bool = False, **options
) -> Iterator[EmbeddedImage]:
    """Like ``Embedder.embed_files`` but serving what the cache has and storing the rest.

    The cache holds features; results are embeddings (the head applied) unless
    ``features_only=True``. Results come in input order. ``on_progress`` (if given) counts
    cached files too. A damaged file (warnings other than the compression note) is never
    stored, so that every run describes it again and its record says what is wrong with it.
    A hit carries the compression note an uncached run would give it (read from the file's
    header), so records are the same with or without the cache. ``cached_only``: decode
    nothing; a file the cache lacks is a failure saying so (``NOT_CACHED``).
    """
    if cache is None:
        yield from embedder.embed_files(paths, **options)
        return
    cache = cache.serving(embedder)
    features_only = options.pop("features_only", False)
    on_progress = options.pop("on_progress", None)
    keys = [file_key(p) for p in paths]
    hits = cache.lookup(keys)
    if on_progress is not None and hits:
        on_progress(len(hits))
    missing = [i for i in range(len(paths)) if i not in hits]
    computed: dict[int, EmbeddedImage] = {}
    if cached_only:
        computed = {i: EmbeddedImage(index=i, path=Path(paths[i]), embedding=None, error=NOT_CACHED) for i in missing}
        if on_progress is not None and missing:
            on_progress(len(missing))
        missing = []
    new_keys: list[bytes] = []
    new_vectors: list[np.ndarray] = []
    for item in embedder.embed_files(
        [paths[i] for i in missing], on_progress=on_progress, features_only=True, **options
    ):
        original = missing[item.index]
        computed[original] = dataclasses.replace(item, index=original)
        key = keys[original]
        if item.ok and key is not None and not is_damaged(item):
            new_keys.append(key)
            new_vectors.append(item.vector)
    if new_keys:
        cache.add(new_keys, np.stack(new_vectors))

    items = [_hit(embedder, i, Path(path), hits[i]) if i in hits else computed[i] for i, path in enumerate(paths)]
    if not features_only:
        items = _with_head(embedder, items)
    yield from items


def _hit(embedder: Embedder, index: int, path: Path, features: np.ndarray) -> EmbeddedImage:
    """A cached file's item, with the compression note its decoding would have given."""
    note = note_for(file_jpeg_quality(path)) if embedder.notes_compression else None
    return EmbeddedImage(index=index, path=path, embedding=features, warnings=(note,) if note else ())


def is_damaged(item: EmbeddedImage) -> bool:
    """A file whose record carries damage warnings is not cached: a cache hit would lose them."""
    return any(not is_compression_note(w) for w in item.warnings)


def _with_head(embedder: Embedder, items: list[EmbeddedImage]) -> list[EmbeddedImage]:
    """The head applied once to every cached or computed feature (a matrix product, not one per file)."""
    good = [i for i, item in enumerate(items) if item.ok]
    if not good:
        return items
    vectors = embedder.head(np.stack([items[i].vector for i in good])).cpu().numpy()
    for row, i in enumerate(good):
        items[i] = dataclasses.replace(items[i], embedding=vectors[row])
    return items
