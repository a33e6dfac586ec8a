"""The references of a model with compression regimes: one store per regime, in one file.

A model with JPEG regimes (``osma_cli.regimes``) scores each image in the regime of its
compression, against references made from images re-encoded for that regime and with that
regime's tau. ``RegimeStores`` keeps one ordinary ``ReferenceStore`` per regime (the same
generators in each, each with its own statistics, threshold and history) and writes them as
one HDF5 file: the root says format version 3 and lists the regimes, and group
``regimes/<name>`` holds each store exactly as a single-store file holds it at its root. An
osma that predates regimes refuses the file as newer than it understands, rather than
reading one regime as if it were the store.

Every write replaces the whole file atomically, as for a single store, so the regimes can
never disagree on which generators are enrolled.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import h5py

from osma_cli.atomic import atomic_write
from osma_cli.errors import ReferenceStoreError
from osma_cli.home import refuse_shipped, write_error
from osma_cli.references import (
    REGIME_FORMAT_VERSION,
    STORE_FORMAT,
    GeneratorReference,
    ReferenceStore,
    read_store_file,
    read_store_group,
    refuse_inconsistent,
    write_store_group,
)
from osma_cli.regimes import LOSSLESS, Regime
from osma_cli.rules import OpenSetRule

GROUP = "regimes"


@dataclass
class RegimeStores:
    """One reference store per compression regime, keyed by regime name, in the model's order."""

    stores: dict[str, ReferenceStore]

    @classmethod
    def for_weights(cls, meta, rule: OpenSetRule | None = None) -> RegimeStores:
        return cls({r.name: ReferenceStore.for_weights(meta, rule) for r in meta.regimes})

    def store_for(self, regime: Regime) -> ReferenceStore:
        try:
            return self.stores[regime.name]
        except KeyError:
            raise ReferenceStoreError(
                f"the reference store has no {regime.name} regime", hint=f"its regimes: {', '.join(self.stores)}"
            ) from None

    @property
    def primary(self) -> ReferenceStore:
        """The lossless regime's store: what listings show (every regime holds the same generators)."""
        return self.stores[LOSSLESS.name]

    @property
    def names(self) -> list[str]:
        return self.primary.names

    def __len__(self) -> int:
        return len(self.primary)

    def __contains__(self, name: str) -> bool:
        return name in self.primary

    def get(self, name: str) -> GeneratorReference:
        return self.primary.get(name)

    def remove(self, name: str, *, command: str | None = None) -> GeneratorReference:
        """Remove ``name`` from every regime (recorded in each history); the lossless reference."""
        removed = [store.remove(name, command=command) for store in self.stores.values()]
        return removed[0]

    def check_weights(self, meta, *, store_path: Path | str | None = None) -> None:
        """Refuse other weights, and a model whose regimes are not the store's."""
        wanted = [r.name for r in meta.regimes]
        if list(self.stores) != wanted:
            where = f" {store_path}" if store_path is not None else ""
            raise ReferenceStoreError(
                f"the reference store{where} has regimes {', '.join(self.stores)}; the model has {', '.join(wanted)}",
                hint="use the model the store was built with, or build a new store with `osma build`",
            )
        for store in self.stores.values():
            store.check_weights(meta, store_path=store_path)

    def problems(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for regime, store in self.stores.items():
            for name, problem in store.problems().items():
                out.setdefault(name, f"{problem} (in the {regime} regime)")
        return out

    def save(self, path: Path | str) -> None:
        """Write every regime's store atomically in one file (no lock: see ``open_store_for_update``)."""
        refuse_shipped(path)
        names = {regime: store.names for regime, store in self.stores.items()}
        if len({tuple(n) for n in names.values()}) > 1:
            raise ReferenceStoreError(f"not writing {path}: the regimes hold different generators ({names})")
        bad = self.problems()
        if bad:
            name, problem = next(iter(bad.items()))
            raise ReferenceStoreError(
                f"not writing {path}: generator {name!r} is inconsistent ({problem})",
                hint=f"remove it with `osma refs remove {name}`",
            )
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            f.attrs["format"] = STORE_FORMAT
            f.attrs["format_version"] = REGIME_FORMAT_VERSION
            f.attrs["regimes"] = json.dumps(list(self.stores))
            group = f.create_group(GROUP)
            for regime, store in self.stores.items():
                write_store_group(group.create_group(regime), store)
        data = buffer.getvalue()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                handle.write(data)

        try:
            atomic_write(path, write)
        except OSError as exc:
            raise write_error(path, exc, f"cannot write the reference store {path}") from None

    @classmethod
    def load(cls, path: Path | str, *, allow_invalid: Collection[str] = ()) -> RegimeStores:
        path = Path(path)

        def read(source: Path) -> dict[str, tuple[ReferenceStore, dict[str, str]]]:
            with h5py.File(source, "r") as f:
                return {name: read_store_group(f[GROUP][name], source) for name in json.loads(f.attrs["regimes"])}

        found = read_store_file(path, read)
        stores = cls({name: store for name, (store, _) in found.items()})
        problems = {
            name: f"{problem} (in the {regime} regime)"
            for regime, (_, each) in found.items()
            for name, problem in each.items()
        }
        problems.update(stores.problems())
        refuse_inconsistent(path, problems, allow_invalid)
        return stores


AnyStore = ReferenceStore | RegimeStores


def is_regime_file(path: Path | str) -> bool:
    """Whether ``path`` is a store file with one store per regime (False for anything else)."""
    try:
        with h5py.File(path, "r") as f:
            return (
                f.attrs.get("format") == STORE_FORMAT
                and int(f.attrs.get("format_version", 0)) == REGIME_FORMAT_VERSION
                and "regimes" in f.attrs
            )
    except (OSError, ValueError, TypeError):
        return False


def load_store(path: Path | str, *, allow_invalid: Collection[str] = ()) -> AnyStore:
    """The store at ``path``, with one store per regime or a single one, as the file holds it."""
    if Path(path).is_file() and is_regime_file(path):
        return RegimeStores.load(path, allow_invalid=allow_invalid)
    return ReferenceStore.load(path, allow_invalid=allow_invalid)


def store_for_weights(meta, rule: OpenSetRule | None = None) -> AnyStore:
    """An empty store for these weights: one per regime when the model has JPEG regimes."""
    if len(getattr(meta, "regimes", ())) > 1:
        return RegimeStores.for_weights(meta, rule)
    return ReferenceStore.for_weights(meta, rule)


def each_store(store: AnyStore) -> list[ReferenceStore]:
    """The single stores a store is made of (itself, or one per regime)."""
    return list(store.stores.values()) if isinstance(store, RegimeStores) else [store]


def store_identity(store: AnyStore) -> str:
    """sha256 of every regime's ``ReferenceStore.content_identity``, in the model's regime order."""
    if isinstance(store, ReferenceStore):
        return store.content_identity()
    digest = hashlib.sha256()
    for name, single in store.stores.items():
        digest.update(f"{name}\0{single.content_identity()}\0".encode())
    return digest.hexdigest()
