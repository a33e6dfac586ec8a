"""The reference store: running statistics per known generator, and the rule that scores them.

A generator's reference is kept as running sums over its images' embeddings ``h``:
the count ``n``, the vector sum ``s = sum h`` and the sum of squared norms
``q = sum ||h||^2``, all in float64, plus what the store's open-set rule needs beyond them
(``osma_cli.rules``: a second moment for ``mahalanobis``, the vectors for ``gmm``). Fang's
centroid and spread come from the three sums (``osma_cli.rules.fang``). Adding images later
adds to every statistic, so an enrolment in several steps gives the same reference as one
batch build. Stores written before rules existed are ``fang`` stores.

On disk the store is one HDF5 file (h5py): plain arrays (names, counts, sums, squared-norm
sums, centroids and sigmas for readers without osma) plus attributes (the hash of the
weights that made the embeddings, the threshold and how it was chosen, times). Every
write replaces the whole file atomically: write a temporary file in the same folder,
fsync it, rename it over the old one. A ``fang`` store without extra statistics is written
in format 1, which older osma versions read; any other store in format 2. ``open_store_for_update`` takes a file lock around
load-modify-save, so concurrent enrolments each land and none is lost.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from filelock import FileLock, Timeout

import osma_cli
from osma_cli.atomic import atomic_write
from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.rules import OpenSetRule, get_rule, rule_from_spec
from osma_cli.rules.fang import reference_spread

STORE_FORMAT = "osma-references"
STORE_FORMAT_VERSION = 2
LOCK_TIMEOUT_S = 120.0
MIN_IMAGES = 2


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class GeneratorReference:
    """One known generator: running sums and when they last changed."""

    name: str
    count: int
    vector_sum: np.ndarray
    sq_norm_sum: float
    created: str
    updated: str
    second_moment: np.ndarray | None = None
    """``sum h h^T`` (D, D), kept when the store's rule needs it."""
    vectors: np.ndarray | None = None
    """The vectors themselves (n, D), in enrolment order, kept when the store's rule needs them."""

    @classmethod
    def empty(cls, name: str, dim: int, requires: frozenset[str]) -> "GeneratorReference":
        stamp = now_iso()
        return cls(name=name, count=0, vector_sum=np.zeros(dim), sq_norm_sum=0.0, created=stamp,
                   updated=stamp,
                   second_moment=np.zeros((dim, dim)) if "second_moment" in requires else None,
                   vectors=np.zeros((0, dim)) if "vectors" in requires else None)

    @property
    def centroid(self) -> np.ndarray:
        return self.vector_sum / self.count

    @property
    def sigma(self) -> float:
        """Fang's spread, which every store can give (it needs only the running sums)."""
        return reference_spread(self.count, self.vector_sum, self.sq_norm_sum)

    def add(self, embeddings: np.ndarray) -> None:
        emb = np.asarray(embeddings, dtype=np.float64)
        self.count += emb.shape[0]
        self.vector_sum = self.vector_sum + emb.sum(axis=0)
        self.sq_norm_sum = float(self.sq_norm_sum + np.einsum("ij,ij->", emb, emb))
        if self.second_moment is not None:
            self.second_moment = self.second_moment + emb.T @ emb
        if self.vectors is not None:
            self.vectors = np.concatenate([self.vectors, emb])
        self.updated = now_iso()


@dataclass(frozen=True)
class Threshold:
    """The rejection threshold tau and how it was chosen (so a user can judge it)."""

    value: float
    method: str
    target: float | None = None
    n_images: int = 0
    chosen: str = ""

    def to_dict(self) -> dict:
        return {"value": self.value, "method": self.method, "target": self.target,
                "n_images": self.n_images, "chosen": self.chosen}

    @classmethod
    def from_dict(cls, data: dict) -> "Threshold":
        return cls(value=float(data["value"]), method=str(data["method"]),
                   target=None if data.get("target") is None else float(data["target"]),
                   n_images=int(data.get("n_images", 0)), chosen=str(data.get("chosen", "")))


@dataclass
class ReferenceStore:
    """Known generators' references, tied to the weights whose embeddings made them."""

    weights_sha256: str
    architecture: str
    embedding_dim: int
    l2_normalize: bool
    generators: dict[str, GeneratorReference] = field(default_factory=dict)
    rule: OpenSetRule = field(default_factory=get_rule)
    threshold: Threshold | None = None
    created: str = field(default_factory=now_iso)
    modified: str = field(default_factory=now_iso)
    osma_version: str = osma_cli.__version__

    @classmethod
    def for_weights(cls, meta, rule: OpenSetRule | None = None) -> "ReferenceStore":
        """An empty store for embeddings made by the weights described by ``meta``.

        Without ``rule``, the rule the weights recommend (``WeightsMeta.rule``), else ``fang``.
        """
        if rule is None:
            rule = rule_from_spec(getattr(meta, "rule", None))
        return cls(weights_sha256=meta.sha256, architecture=meta.architecture,
                   embedding_dim=meta.embedding_dim, l2_normalize=meta.l2_normalize, rule=rule)

    @property
    def names(self) -> list[str]:
        return list(self.generators)

    def __len__(self) -> int:
        return len(self.generators)

    def __contains__(self, name: str) -> bool:
        return name in self.generators

    def get(self, name: str) -> GeneratorReference:
        try:
            return self.generators[name]
        except KeyError:
            raise ReferenceStoreError(
                f"no generator named {name!r} in the reference store",
                hint=f"known: {', '.join(self.names) or '(none)'}") from None

    def centroids(self) -> np.ndarray:
        """(K, D) float64 centroids in store order."""
        if not self.generators:
            return np.zeros((0, self.embedding_dim))
        return np.stack([g.centroid for g in self.generators.values()])

    def sigmas(self) -> np.ndarray:
        return np.array([g.sigma for g in self.generators.values()], dtype=np.float64)

    def check_weights(self, meta, *, store_path: Path | str | None = None) -> None:
        """Refuse to compare embeddings from other weights than the store's."""
        if meta.sha256 != self.weights_sha256:
            where = f" {store_path}" if store_path is not None else ""
            raise ReferenceStoreError(
                f"the reference store{where} was made with other weights "
                f"({self.architecture}, sha256 {self.weights_sha256[:12]}) than the model "
                f"in use ({meta.architecture}, sha256 {meta.sha256[:12]})",
                hint="use the model the store was built with, or build a new store for "
                     "this model with `osma build`")

    def enroll(self, name: str, embeddings: np.ndarray, *, update: bool = False) -> GeneratorReference:
        """Add a generator, or with ``update`` add images to an existing one (exact)."""
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise UsageError(f"embeddings have shape {emb.shape}, expected (n, {self.embedding_dim})")
        if not np.isfinite(emb).all():
            raise UsageError(f"embeddings for {name!r} contain NaN or infinity")
        name = self.check_enrollable(name, update=update)
        existing = self.generators.get(name)
        total = emb.shape[0] + (existing.count if existing else 0)
        if total < MIN_IMAGES:
            raise ReferenceStoreError(
                f"{name!r} needs at least {MIN_IMAGES} readable images to have a spread; got {total}",
                hint="add more images of this generator")
        if existing is None:
            existing = GeneratorReference.empty(name, self.embedding_dim, self.rule.requires)
            self.generators[name] = existing
        existing.add(emb)
        self.modified = now_iso()
        return existing

    def check_enrollable(self, name: str, *, update: bool) -> str:
        """The cleaned name, or the error enrolling it would raise (checked before embedding)."""
        name = validate_name(name)
        existing = self.generators.get(name)
        if existing is not None and not update:
            raise ReferenceStoreError(
                f"a generator named {name!r} is already enrolled ({existing.count} images)",
                hint="use --update to add these images to it, or choose another --name")
        if existing is None and update:
            raise ReferenceStoreError(f"cannot --update {name!r}: no such generator",
                                      hint="enroll it without --update first")
        return name

    def remove(self, name: str) -> GeneratorReference:
        ref = self.get(name)
        del self.generators[name]
        self.modified = now_iso()
        return ref

    def fitted_rule(self):
        """The store's rule fitted to its generators (``FittedRule.score`` scores vectors)."""
        return self.rule.fit(list(self.generators.values()))

    def set_threshold(self, threshold: Threshold) -> None:
        if not np.isfinite(threshold.value):
            raise UsageError(f"threshold must be a finite number, got {threshold.value}")
        self.threshold = threshold
        self.modified = now_iso()

    def save(self, path: Path | str) -> None:
        """Write the whole store atomically: the old file survives any failure."""
        atomic_write(path, lambda tmp: _write_hdf5(self, tmp))

    @classmethod
    def load(cls, path: Path | str) -> "ReferenceStore":
        path = Path(path)
        if not path.exists():
            raise ReferenceStoreError(f"no reference store at {path}",
                                      hint="build one with `osma build ROOT --out FILE` or "
                                           "enroll a generator with `osma enroll`")
        try:
            return _read_hdf5(path)
        except ReferenceStoreError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ReferenceStoreError(f"{path} is not a readable osma reference store ({exc})",
                                      hint="rebuild it with `osma build`") from None


def validate_name(name: str) -> str:
    """Generator names are shown in tables and written to CSV: keep them printable."""
    clean = name.strip()
    if not clean or not clean.isprintable() or clean.lower() == "unknown":
        raise UsageError(f"invalid generator name {name!r}",
                         hint="use a non-empty printable name other than 'unknown'")
    return clean


def _write_hdf5(store: ReferenceStore, path: Path) -> None:
    refs = list(store.generators.values())
    k, d = len(refs), store.embedding_dim
    text = h5py.string_dtype("utf-8")
    extras = sorted(store.rule.requires)
    legacy = store.rule.name == "fang" and not store.rule.params() and not extras
    with h5py.File(path, "w") as f:
        f.attrs["format"] = STORE_FORMAT
        f.attrs["format_version"] = 1 if legacy else STORE_FORMAT_VERSION
        if not legacy:
            f.attrs["rule"] = json.dumps(store.rule.spec(), sort_keys=True)
        f.attrs["weights_sha256"] = store.weights_sha256
        f.attrs["architecture"] = store.architecture
        f.attrs["embedding_dim"] = d
        f.attrs["l2_normalize"] = store.l2_normalize
        f.attrs["threshold"] = json.dumps(None if store.threshold is None else store.threshold.to_dict())
        f.attrs["created"] = store.created
        f.attrs["modified"] = store.modified
        f.attrs["osma_version"] = store.osma_version
        f.create_dataset("names", data=np.array([r.name for r in refs], dtype=object), dtype=text)
        f.create_dataset("counts", data=np.array([r.count for r in refs], dtype=np.int64))
        f.create_dataset("vector_sums", data=np.array([r.vector_sum for r in refs], dtype=np.float64).reshape(k, d))
        f.create_dataset("sq_norm_sums", data=np.array([r.sq_norm_sum for r in refs], dtype=np.float64))
        f.create_dataset("centroids", data=store.centroids().reshape(k, d))
        f.create_dataset("sigmas", data=store.sigmas())
        f.create_dataset("created", data=np.array([r.created for r in refs], dtype=object), dtype=text)
        f.create_dataset("updated", data=np.array([r.updated for r in refs], dtype=object), dtype=text)
        if "second_moment" in extras:
            f.create_dataset("second_moments", data=np.array([r.second_moment for r in refs],
                                                             dtype=np.float64).reshape(k, d, d))
        if "vectors" in extras:
            group = f.create_group("vectors")
            for i, r in enumerate(refs):
                group.create_dataset(str(i), data=np.asarray(r.vectors, dtype=np.float64).reshape(-1, d))


def _read_hdf5(path: Path) -> ReferenceStore:
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != STORE_FORMAT:
            raise ReferenceStoreError(f"{path} is an HDF5 file but not an osma reference store")
        version = int(f.attrs["format_version"])
        if version > STORE_FORMAT_VERSION:
            raise ReferenceStoreError(f"{path} has store format {version}, newer than this osma "
                                      f"understands ({STORE_FORMAT_VERSION})", hint="upgrade osma")
        threshold = json.loads(f.attrs["threshold"])
        rule = rule_from_spec(json.loads(f.attrs["rule"]) if "rule" in f.attrs else None)
        store = ReferenceStore(rule=rule,
            weights_sha256=str(f.attrs["weights_sha256"]), architecture=str(f.attrs["architecture"]),
            embedding_dim=int(f.attrs["embedding_dim"]), l2_normalize=bool(f.attrs["l2_normalize"]),
            threshold=None if threshold is None else Threshold.from_dict(threshold),
            created=str(f.attrs["created"]), modified=str(f.attrs["modified"]),
            osma_version=str(f.attrs["osma_version"]))
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][()]]
        counts, sums, sq = f["counts"][()], f["vector_sums"][()], f["sq_norm_sums"][()]
        created = [c.decode() if isinstance(c, bytes) else str(c) for c in f["created"][()]]
        updated = [u.decode() if isinstance(u, bytes) else str(u) for u in f["updated"][()]]
        moments = f["second_moments"][()] if "second_moment" in rule.requires else None
        vectors = [f["vectors"][str(i)][()] for i in range(len(names))] if "vectors" in rule.requires else None
    for i, name in enumerate(names):
        store.generators[name] = GeneratorReference(
            name=name, count=int(counts[i]), vector_sum=np.array(sums[i], dtype=np.float64),
            sq_norm_sum=float(sq[i]), created=created[i], updated=updated[i],
            second_moment=None if moments is None else np.array(moments[i], dtype=np.float64),
            vectors=None if vectors is None else np.array(vectors[i], dtype=np.float64))
    return store


@contextlib.contextmanager
def open_store_for_update(path: Path | str, *, create_for=None,
                          timeout: float = LOCK_TIMEOUT_S) -> Iterator[ReferenceStore]:
    """Lock, load (or create for the weights ``create_for``), yield, then save atomically.

    Nothing is written when the body raises. Embedding images is slow and belongs before
    this block; only the read-modify-write happens under the lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(path.name + ".lock")))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ReferenceStoreError(f"{path} is locked by another osma process",
                                  hint="wait for it to finish, or remove the stale "
                                       f"{path.name}.lock if no osma is running") from None
    try:
        if path.exists():
            store = ReferenceStore.load(path)
            if create_for is not None:
                store.check_weights(create_for, store_path=path)
        elif create_for is not None:
            store = ReferenceStore.for_weights(create_for)
        else:
            store = ReferenceStore.load(path)
        yield store
        store.save(path)
    finally:
        lock.release()
