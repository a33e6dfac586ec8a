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
weights that made the embeddings, the threshold and how it was chosen, times). A ``fang``
store without extra statistics is written in format 1, which older osma versions read; any
other store in format 2.

Provenance (what a forensic lab must be able to show) is kept in a ``provenance/`` group
that readers of either format which do not know it ignore, so it needs no new format:

- ``provenance/history``: one JSON object per event, in order (``enrol``, ``update``,
  ``build``, ``remove``, ``calibrate``), each with its time, the command, the osma version,
  the generator (null for store-wide events), the number of images, and for ``calibrate``
  the old and new tau. A dataset, not an attribute: attributes are limited to 64 KiB.
- ``provenance/sha256/<i>`` and ``provenance/event/<i>``: the sha256 of the file bytes of
  every image enrolled into the generator at position ``i`` of ``names``, in enrolment order,
  and the index in ``history`` of the event that enrolled it (so: when, and by which command).
- attributes ``since`` and ``since_version``: when (and by which osma) provenance began to
  be recorded. Stores from before have no group: they load with an empty history, and
  their images enrolled before have no recorded hash (``GeneratorReference.unrecorded``).

An osma that does not know the group reads the store as before but drops the group when
it writes the store.

Every write replaces the whole file atomically (``osma_cli.atomic``): the HDF5 file is made
in memory (h5py never writes to disk, so a full disk is one clean ``OSError``), written to
a temporary file in the same folder, fsynced and renamed over the old one, under the
store's lock, which also clears temporaries of dead writers. ``open_store_for_update``
takes the lock around load-modify-save, so concurrent enrolments each land and none is
lost. Loading validates the values (counts, shapes, finite sums, a spread above 0) and
refuses an inconsistent store, naming the generator, rather than scoring with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, TypeVar

import h5py
import numpy as np
from filelock import Timeout

import osma_cli
from osma_cli.atomic import LOCK_TIMEOUT_S, atomic_write, locked
from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.home import lock_timeout_error, refuse_shipped, write_error
from osma_cli.rules import OpenSetRule, get_rule, rule_from_spec
from osma_cli.rules.fang import reference_spread

T = TypeVar("T")
STORE_FORMAT = "osma-references"
STORE_FORMAT_VERSION = 2
REGIME_FORMAT_VERSION = 3
"""A file of one store per compression regime (``osma_cli.regime_store``); each is version 1 or 2."""
MIN_IMAGES = 2
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
NO_PROVENANCE_NOTE = (
    "provenance not recorded: the store was last written by an osma that did not "
    "keep it (before osma recorded image hashes and history)"
)


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
    image_sha256: list[str] = field(default_factory=list)
    """sha256 of the file bytes of each image enrolled since provenance was recorded, in order."""
    image_event: list[int] = field(default_factory=list)
    """For each of ``image_sha256``, the index in the store's history of the event that enrolled it."""

    @classmethod
    def empty(cls, name: str, dim: int, requires: frozenset[str]) -> GeneratorReference:
        stamp = now_iso()
        return cls(
            name=name,
            count=0,
            vector_sum=np.zeros(dim),
            sq_norm_sum=0.0,
            created=stamp,
            updated=stamp,
            second_moment=np.zeros((dim, dim)) if "second_moment" in requires else None,
            vectors=np.zeros((0, dim)) if "vectors" in requires else None,
        )

    @property
    def unrecorded(self) -> int:
        """Images enrolled before provenance was recorded: counted, but with no hash."""
        return self.count - len(self.image_sha256)

    @property
    def centroid(self) -> np.ndarray:
        return self.vector_sum / self.count

    @property
    def sigma(self) -> float:
        """Fang's spread, which every store can give (it needs only the running sums)."""
        return reference_spread(self.count, self.vector_sum, self.sq_norm_sum)

    def add(self, embeddings: np.ndarray, image_sha256: Sequence[str] = (), event: int = -1) -> None:
        emb = np.asarray(embeddings, dtype=np.float64)
        self.image_sha256 = [*self.image_sha256, *image_sha256]
        self.image_event = [*self.image_event, *([event] * len(image_sha256))]
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
        return {
            "value": self.value,
            "method": self.method,
            "target": self.target,
            "n_images": self.n_images,
            "chosen": self.chosen,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Threshold:
        return cls(
            value=float(data["value"]),
            method=str(data["method"]),
            target=None if data.get("target") is None else float(data["target"]),
            n_images=int(data.get("n_images", 0)),
            chosen=str(data.get("chosen", "")),
        )


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
    history: list[dict] = field(default_factory=list)
    """Provenance events in order (module docstring); append-only."""
    provenance_since: str | None = field(default_factory=now_iso)
    """When provenance began to be recorded; None for a store loaded from before that."""
    provenance_since_version: str = osma_cli.__version__

    @classmethod
    def for_weights(cls, meta, rule: OpenSetRule | None = None) -> ReferenceStore:
        """An empty store for embeddings made by the weights described by ``meta``.

        Without ``rule``, the rule the weights recommend (``WeightsMeta.rule``), else ``fang``.
        """
        if rule is None:
            rule = rule_from_spec(getattr(meta, "rule", None))
        return cls(
            weights_sha256=meta.sha256,
            architecture=meta.architecture,
            embedding_dim=meta.embedding_dim,
            l2_normalize=meta.l2_normalize,
            rule=rule,
        )

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
            removed = [e for e in self.history if e.get("event") == "remove" and e.get("generator") == name]
            was = (
                f"{name!r} was removed on {removed[-1]['time']} ({removed[-1].get('n_images')} images); "
                if removed
                else ""
            )
            raise ReferenceStoreError(
                f"no generator named {name!r} in the reference store",
                hint=f"{was}known: {', '.join(self.names) or '(none)'}",
            ) from None

    def centroids(self) -> np.ndarray:
        """(K, D) float64 centroids in store order."""
        if not self.generators:
            return np.zeros((0, self.embedding_dim))
        return np.stack([g.centroid for g in self.generators.values()])

    def sigmas(self) -> np.ndarray:
        return np.array([g.sigma for g in self.generators.values()], dtype=np.float64)

    def content_identity(self) -> str:
        """sha256 of what decides a verdict: the weights, the rule, tau and each generator's statistics.

        Not the history or the timestamps: a store re-saved unchanged keeps its identity, and any
        enrolment, removal or new tau changes it. Results files record it (``results_file``), so
        that a run is never resumed against other references.
        """
        digest = hashlib.sha256()
        head = {
            "weights": self.weights_sha256,
            "rule": self.rule.spec(),
            "tau": None if self.threshold is None else self.threshold.value,
        }
        digest.update(json.dumps(head, sort_keys=True).encode("utf-8"))
        for name, ref in self.generators.items():
            digest.update(json.dumps([name, ref.count, float(ref.sq_norm_sum)]).encode("utf-8"))
            for array in (ref.vector_sum, ref.second_moment, ref.vectors):
                if array is not None:
                    digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def check_weights(self, meta, *, store_path: Path | str | None = None) -> None:
        """Refuse to compare embeddings from other weights than the store's."""
        if meta.sha256 != self.weights_sha256:
            where = f" {store_path}" if store_path is not None else ""
            raise ReferenceStoreError(
                f"the reference store{where} was made with other weights "
                f"({self.architecture}, sha256 {self.weights_sha256[:12]}) than the model "
                f"in use ({meta.architecture}, sha256 {meta.sha256[:12]})",
                hint="use the model the store was built with, or build a new store for this model with `osma build`",
            )

    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        update: bool = False,
        image_sha256: Sequence[str] | None = None,
        command: str | None = None,
        event: str | None = None,
    ) -> GeneratorReference:
        """Add a generator, or with ``update`` add images to an existing one (exact).

        ``image_sha256`` (one per row) records which files were enrolled; an image already
        enrolled in this generator is refused (``new_images`` tells them apart beforehand).
        The enrolment is recorded in the history as ``event`` (default ``enrol``/``update``).
        """
        emb = np.asarray(embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[1] != self.embedding_dim:
            raise UsageError(f"embeddings have shape {emb.shape}, expected (n, {self.embedding_dim})")
        if not np.isfinite(emb).all():
            raise UsageError(f"embeddings for {name!r} contain NaN or infinity")
        hashes = [] if image_sha256 is None else [str(h).lower() for h in image_sha256]
        if image_sha256 is not None and len(hashes) != emb.shape[0]:
            raise UsageError(f"{len(hashes)} image hashes for {emb.shape[0]} embeddings")
        if any(not SHA256_HEX.match(h) for h in hashes):
            raise UsageError("image hashes must be sha256 hex digests")
        name = self.check_enrollable(name, update=update)
        if not all(self.new_images(name, hashes)):
            raise ReferenceStoreError(
                f"some of these images are already enrolled in {name!r}",
                hint="leave them out (osma enroll skips them itself)",
            )
        existing = self.generators.get(name)
        total = emb.shape[0] + (existing.count if existing else 0)
        if total < MIN_IMAGES:
            raise ReferenceStoreError(
                f"{name!r} needs at least {MIN_IMAGES} readable images to have a spread; got {total}",
                hint="add more images of this generator",
            )
        base = existing or GeneratorReference.empty(name, self.embedding_dim, frozenset())
        spread = reference_spread(
            total, base.vector_sum + emb.sum(axis=0), base.sq_norm_sum + float(np.einsum("ij,ij->", emb, emb))
        )
        if not spread > 0:
            raise ReferenceStoreError(
                f"the {total} images of {name!r} have no spread (identical embeddings)",
                hint="enroll several different images of this generator",
            )
        if existing is None:
            existing = GeneratorReference.empty(name, self.embedding_dim, self.rule.requires)
            self.generators[name] = existing
        index = self.record(
            event or ("update" if update else "enrol"),
            generator=name,
            command=command,
            n_images=int(emb.shape[0]),
            count=total,
            n_hashed=len(hashes),
        )
        existing.add(emb, hashes, index)
        self.modified = now_iso()
        return existing

    def new_images(self, name: str, image_sha256: Sequence[str]) -> list[bool]:
        """For each hash, whether it is new to generator ``name`` (and not repeated before it)."""
        ref = self.generators.get(name.strip())
        seen = set(ref.image_sha256) if ref is not None else set()
        out = []
        for h in image_sha256:
            out.append(h not in seen)
            seen.add(h)
        return out

    def record(self, event: str, *, generator: str | None = None, command: str | None = None, **fields) -> int:
        """Append one event to the history; returns its index."""
        self.history.append(
            {
                "event": event,
                "time": now_iso(),
                "generator": generator,
                "command": command,
                "osma_version": osma_cli.__version__,
                **fields,
            }
        )
        return len(self.history) - 1

    def events_for(self, name: str) -> list[tuple[int, dict]]:
        """(index, event) of the history about generator ``name`` or the whole store."""
        return [(i, e) for i, e in enumerate(self.history) if e.get("generator") in (None, name)]

    def check_enrollable(self, name: str, *, update: bool) -> str:
        """The cleaned name, or the error enrolling it would raise (checked before embedding)."""
        name = validate_name(name)
        existing = self.generators.get(name)
        if existing is not None and not update:
            raise ReferenceStoreError(
                f"a generator named {name!r} is already enrolled ({existing.count} images)",
                hint="use --update to add these images to it, or choose another --name",
            )
        if existing is None and update:
            raise ReferenceStoreError(
                f"cannot --update {name!r}: no such generator", hint="enroll it without --update first"
            )
        return name

    def remove(self, name: str, *, command: str | None = None) -> GeneratorReference:
        ref = self.get(name)
        del self.generators[name]
        self.record("remove", generator=name, command=command, n_images=ref.count, n_hashed=len(ref.image_sha256))
        self.modified = now_iso()
        return ref

    def fitted_rule(self):
        """The store's rule fitted to its generators (``FittedRule.score`` scores vectors)."""
        return self.rule.fit(list(self.generators.values()))

    def set_threshold(self, threshold: Threshold, *, command: str | None = None) -> None:
        if not np.isfinite(threshold.value):
            raise UsageError(f"threshold must be a finite number, got {threshold.value}")
        old = self.threshold
        self.threshold = threshold
        self.record(
            "calibrate",
            command=command,
            old_tau=None if old is None else old.value,
            new_tau=threshold.value,
            method=threshold.method,
            target=threshold.target,
            n_images=threshold.n_images,
        )
        self.modified = now_iso()

    def problems(self) -> dict[str, str]:
        """What is inconsistent in each generator (empty when the store can be used)."""
        out = {}
        for ref in self.generators.values():
            problem = reference_problem(ref, self.embedding_dim, self.rule.requires, len(self.history))
            if problem:
                out[ref.name] = problem
        return out

    def save(self, path: Path | str) -> None:
        """Write the whole store atomically: the old file survives any failure.

        Takes no lock (``open_store_for_update`` and ``replace_store`` hold it around this).
        Refuses a shipped file and an inconsistent store; an ``OSError`` (full disk,
        read-only folder) becomes a ``StoreWriteError`` that says so.
        """
        refuse_shipped(path)
        bad = self.problems()
        if bad:
            name, problem = next(iter(bad.items()))
            raise ReferenceStoreError(
                f"not writing {path}: generator {name!r} is inconsistent ({problem})",
                hint=f"remove it with `osma refs remove {name}`",
            )
        if self.provenance_since is None:
            self.provenance_since, self.provenance_since_version = now_iso(), osma_cli.__version__
        try:
            atomic_write(path, lambda tmp: _write_hdf5(self, tmp))
        except OSError as exc:
            raise write_error(path, exc, f"cannot write the reference store {path}") from None

    @classmethod
    def load(cls, path: Path | str, *, allow_invalid: Collection[str] = ()) -> ReferenceStore:
        """Read and validate a store; generators named in ``allow_invalid`` may be inconsistent
        (so that ``osma refs remove`` can drop them), any other problem is refused."""
        path = Path(path)
        if not path.exists():
            raise ReferenceStoreError(
                f"no reference store at {path}",
                hint="build one with `osma build ROOT --out FILE` or enroll a generator with `osma enroll`",
            )
        store, problems = read_store_file(path, _read_hdf5)
        problems.update(store.problems())  # a value that cannot be right says more than a mismatch
        refuse_inconsistent(path, problems, allow_invalid)
        return store


def read_store_file(path: Path, reader: Callable[[Path], T]) -> T:
    """``reader(path)``, with any failure to read the file as a store said as one."""
    try:
        return reader(path)
    except ReferenceStoreError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise ReferenceStoreError(
            f"{path} is not a readable osma reference store ({exc})", hint="rebuild it with `osma build`"
        ) from None


def refuse_inconsistent(path: Path, problems: dict[str, str], allow_invalid: Collection[str]) -> None:
    """Refuse a store with an inconsistent generator, unless it is one ``allow_invalid`` names."""
    for name, problem in problems.items():
        if name not in allow_invalid:
            raise ReferenceStoreError(
                f"{path}: generator {name!r} is inconsistent ({problem}); the store is not used",
                hint=f"rebuild the store with `osma build`, or remove the generator with "
                f"`osma refs remove {name} --refs {path}`",
            )


def validate_name(name: str) -> str:
    """Generator names are shown in tables and written to CSV: keep them printable."""
    clean = name.strip()
    if not clean or not clean.isprintable() or clean.lower() == "unknown":
        raise UsageError(f"invalid generator name {name!r}", hint="use a non-empty printable name other than 'unknown'")
    return clean


def _shape(values: np.ndarray | None) -> tuple[int, ...]:
    """``np.shape``, with ``()`` for an array that is not there (what ``np.shape(None)`` gives)."""
    return () if values is None else np.shape(values)


def reference_problem(ref: GeneratorReference, dim: int, requires: frozenset[str], n_events: int) -> str | None:
    """Why ``ref`` cannot be scored with (a count, shape or value that cannot be right), or None."""
    if ref.count < MIN_IMAGES:
        return f"its count is {ref.count}, a generator needs at least {MIN_IMAGES} images"
    if np.shape(ref.vector_sum) != (dim,):
        return f"its vector sum has shape {np.shape(ref.vector_sum)}, expected ({dim},)"
    if not (np.isfinite(ref.vector_sum).all() and np.isfinite(ref.sq_norm_sum)):
        return "its running sums are not finite"
    sigma = ref.sigma
    if not (np.isfinite(sigma) and sigma > 0):
        return f"its spread sigma is {sigma:.4g}, it must be above 0"
    if "second_moment" in requires:
        if ref.second_moment is None or np.shape(ref.second_moment) != (dim, dim):
            return f"its second moment has shape {_shape(ref.second_moment)}, expected ({dim}, {dim})"
        if not np.isfinite(ref.second_moment).all():
            return "its second moment is not finite"
    if "vectors" in requires:
        if ref.vectors is None or np.shape(ref.vectors) != (ref.count, dim):
            return f"its vectors have shape {_shape(ref.vectors)}, expected ({ref.count}, {dim})"
        if not np.isfinite(ref.vectors).all():
            return "its vectors are not finite"
    if len(ref.image_sha256) != len(ref.image_event) or len(ref.image_sha256) > ref.count:
        return (
            f"its provenance lists {len(ref.image_sha256)} image hashes and {len(ref.image_event)} "
            f"events for {ref.count} images"
        )
    if any(not SHA256_HEX.match(h) for h in ref.image_sha256):
        return "its provenance holds a malformed image hash"
    if any(not 0 <= e < n_events for e in ref.image_event):
        return "its provenance refers to events the history does not have"
    return None


def _write_hdf5(store: ReferenceStore, path: Path) -> None:
    """The store's HDF5 file, made in memory and written to ``path`` with plain writes."""
    data = _hdf5_bytes(store)
    with open(path, "wb") as handle:
        handle.write(data)


def _hdf5_bytes(store: ReferenceStore) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write_store_group(f, store)
    return buffer.getvalue()


def write_store_group(f: h5py.Group, store: ReferenceStore) -> None:
    """The store's arrays and attributes into ``f`` (a file's root, or one regime's group)."""
    refs = list(store.generators.values())
    k, d = len(refs), store.embedding_dim
    text = h5py.string_dtype("utf-8")
    extras = sorted(store.rule.requires)
    legacy = store.rule.name == "fang" and not store.rule.params() and not extras
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
        f.create_dataset(
            "second_moments", data=np.array([r.second_moment for r in refs], dtype=np.float64).reshape(k, d, d)
        )
    if "vectors" in extras:
        group = f.create_group("vectors")
        for i, r in enumerate(refs):
            group.create_dataset(str(i), data=np.asarray(r.vectors, dtype=np.float64).reshape(-1, d))
    prov = f.create_group("provenance")
    prov.attrs["since"] = store.provenance_since or now_iso()
    prov.attrs["since_version"] = store.provenance_since_version
    prov.create_dataset(
        "history", dtype=text, data=np.array([json.dumps(e, sort_keys=True) for e in store.history], dtype=object)
    )
    hashes, events = prov.create_group("sha256"), prov.create_group("event")
    for i, r in enumerate(refs):
        hashes.create_dataset(str(i), data=np.array(r.image_sha256, dtype="S64").reshape(-1))
        events.create_dataset(str(i), data=np.array(r.image_event, dtype=np.int64).reshape(-1))


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _shape_error(path: Path, what: str, shape, expected) -> ReferenceStoreError:
    return ReferenceStoreError(
        f"{path}: {what} has shape {tuple(shape)}, expected {tuple(expected)}; the store is not used",
        hint="rebuild it with `osma build`",
    )


def _read_hdf5(path: Path) -> tuple[ReferenceStore, dict[str, str]]:
    """The store in ``path`` and the problems of generators whose values the file contradicts.

    Shapes that make the file unreadable as a whole raise; a generator whose values are
    wrong is returned with its problem, so that it can be removed.
    """
    with h5py.File(path, "r") as f:
        return read_store_group(f, path)


def read_store_group(f: h5py.Group, path: Path) -> tuple[ReferenceStore, dict[str, str]]:
    """One store from ``f`` (a file's root, or one regime's group); ``path`` names it in errors."""
    problems: dict[str, str] = {}
    if f.attrs.get("format") != STORE_FORMAT:
        raise ReferenceStoreError(f"{path} is an HDF5 file but not an osma reference store")
    version = int(f.attrs["format_version"])
    if version == REGIME_FORMAT_VERSION and "regimes" in f.attrs:
        raise ReferenceStoreError(
            f"{path} holds references per compression regime", hint="read it with osma_cli.regime_store.load_store"
        )
    if version > STORE_FORMAT_VERSION:
        raise ReferenceStoreError(
            f"{path} has store format {version}, newer than this osma understands ({STORE_FORMAT_VERSION})",
            hint="upgrade osma",
        )
    threshold = json.loads(f.attrs["threshold"])
    rule = rule_from_spec(json.loads(f.attrs["rule"]) if "rule" in f.attrs else None)
    store = ReferenceStore(
        rule=rule,
        weights_sha256=str(f.attrs["weights_sha256"]),
        architecture=str(f.attrs["architecture"]),
        embedding_dim=int(f.attrs["embedding_dim"]),
        l2_normalize=bool(f.attrs["l2_normalize"]),
        threshold=None if threshold is None else Threshold.from_dict(threshold),
        created=str(f.attrs["created"]),
        modified=str(f.attrs["modified"]),
        osma_version=str(f.attrs["osma_version"]),
        provenance_since=None,
    )
    if store.threshold is not None and not np.isfinite(store.threshold.value):
        raise ReferenceStoreError(
            f"{path}: the threshold is {store.threshold.value}, not a finite number",
            hint="set it again with `osma calibrate`",
        )
    names = _text(f["names"][()])
    k, d = len(names), store.embedding_dim
    if len(set(names)) != k:
        raise ReferenceStoreError(f"{path}: a generator name appears twice", hint="rebuild it with `osma build`")
    expected = {
        "counts": (k,),
        "vector_sums": (k, d),
        "sq_norm_sums": (k,),
        "created": (k,),
        "updated": (k,),
        "centroids": (k, d),
        "sigmas": (k,),
    }
    if "second_moment" in rule.requires:
        expected["second_moments"] = (k, d, d)
    for key, shape in expected.items():
        if key in f and f[key].shape != shape:
            raise _shape_error(path, key, f[key].shape, shape)
    counts, sums, sq = f["counts"][()], f["vector_sums"][()], f["sq_norm_sums"][()]
    created, updated = _text(f["created"][()]), _text(f["updated"][()])
    centroids = f["centroids"][()] if "centroids" in f else None
    sigmas = f["sigmas"][()] if "sigmas" in f else None
    moments = f["second_moments"][()] if "second_moment" in rule.requires else None
    vectors = [f["vectors"][str(i)][()] for i in range(k)] if "vectors" in rule.requires else None
    hashes: list[list[str]] = [[] for _ in range(k)]
    events: list[list[int]] = [[] for _ in range(k)]
    if "provenance" in f:
        prov = f["provenance"]
        store.provenance_since = str(prov.attrs.get("since", store.created))
        store.provenance_since_version = str(prov.attrs.get("since_version", store.osma_version))
        store.history = [json.loads(e) for e in _text(prov["history"][()])]
        hashes = [_text(prov["sha256"][str(i)][()]) for i in range(k)]
        events = [[int(e) for e in prov["event"][str(i)][()]] for i in range(k)]
    for i, name in enumerate(names):
        ref = GeneratorReference(
            name=name,
            count=int(counts[i]),
            vector_sum=np.array(sums[i], dtype=np.float64),
            sq_norm_sum=float(sq[i]),
            created=created[i],
            updated=updated[i],
            second_moment=None if moments is None else np.array(moments[i], dtype=np.float64),
            vectors=None if vectors is None else np.array(vectors[i], dtype=np.float64),
            image_sha256=hashes[i],
            image_event=events[i],
        )
        store.generators[name] = ref
        if ref.count >= MIN_IMAGES and centroids is not None and sigmas is not None:
            with np.errstate(all="ignore"):
                if not (
                    np.allclose(ref.centroid, centroids[i], rtol=1e-9, atol=1e-12)
                    and np.isclose(ref.sigma, sigmas[i], rtol=1e-9, atol=1e-12)
                ):
                    problems[name] = (
                        "its centroid or sigma do not match its count and running sums (was the file edited?)"
                    )
    return store, problems


@contextlib.contextmanager
def store_lock(path: Path | str, *, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """The lock every writer of the store at ``path`` holds (a shipped store is refused first)."""
    refuse_shipped(path)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(path, timeout=timeout))
        except Timeout:
            raise lock_timeout_error(path) from None
        except OSError as exc:
            raise write_error(path, exc, f"cannot lock the reference store {path} for writing") from None
        yield


@contextlib.contextmanager
def open_store_for_update(
    path: Path | str, *, create_for=None, timeout: float = LOCK_TIMEOUT_S, allow_invalid: Collection[str] = ()
) -> Iterator:
    """Lock, load (or create for the weights ``create_for``), yield, then save atomically.

    The store is a ``ReferenceStore``, or ``RegimeStores`` for a model with JPEG regimes.

    Nothing is written when the body raises. Embedding images is slow and belongs before
    this block; only the read-modify-write happens under the lock. ``allow_invalid``: see
    ``ReferenceStore.load``.
    """
    from osma_cli.regime_store import load_store, store_for_weights

    path = Path(path)
    with store_lock(path, timeout=timeout):
        if path.exists():
            store = load_store(path, allow_invalid=allow_invalid)
            if create_for is not None:
                store.check_weights(create_for, store_path=path)
        elif create_for is not None:
            store = store_for_weights(create_for)
        else:
            store = ReferenceStore.load(path)
        yield store
        store.save(path)


class SavableStore(Protocol):
    """A store that writes itself to a file: a ``ReferenceStore`` or a ``RegimeStores``."""

    def save(self, path: Path | str) -> None: ...


def replace_store(store: SavableStore, path: Path | str, *, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Write ``store`` over whatever is at ``path`` (``osma build``), under the store's lock."""
    with store_lock(path, timeout=timeout):
        store.save(path)
