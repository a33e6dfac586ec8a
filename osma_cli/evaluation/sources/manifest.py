"""Benchmark source ``manifest``: a small TOML or JSON file of folders, for a user's own benchmark.

One table per known generator and per unknown generator (``docs/benchmarks.md``, section
Manifest); every key, folder and image is checked before the split is returned.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from osma_cli.data.files import IMAGE_SUFFIXES, iter_image_files
from osma_cli.errors import DataError, UsageError
from osma_cli.evaluation.metrics import UNKNOWN_LABEL
from osma_cli.evaluation.sources.base import (
    PARTS,
    UNKNOWN_KINDS,
    BenchmarkSplit,
    LabeledImage,
    check_disjoint,
    register_source,
)
from osma_cli.progress import Log, ProgressFactory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

_TOP_KEYS = ("name", "root", "known", "unknown")
_KNOWN_KEYS = ("train", "val", "test")
_UNKNOWN_KEYS = ("kind", "test")
_MANIFEST_HINT = "docs/benchmarks.md (section Manifest) shows a complete example"


class _Manifest:
    """Error messages that name the manifest and the key, for every check."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, reason: str, hint: str | None = _MANIFEST_HINT) -> DataError:
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        return DataError(where + reason, hint=hint)

    def check_keys(self, key: str, table: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for name in table:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed here: {', '.join(allowed)}"
                raise self.error(f"{key}.{name}" if key else name, "unknown key", hint=hint)

    def table(self, key: str, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table (JSON object), not {type(value).__name__}")
        return value

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        return value.strip()

    def generator_name(self, key: str, name: str) -> str:
        clean = name.strip()
        if not clean or not clean.isprintable() or clean.lower() == "unknown":
            raise self.error(
                key, f"invalid generator name {name!r}", hint="use a non-empty printable name other than 'unknown'"
            )
        return clean

    def images(self, key: str, value: Any, base: Path) -> list[Path]:
        """The images of one entry: a folder (searched recursively), a file, or a list."""
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list) or not entries:
            raise self.error(key, f"must be a path or a non-empty list of paths, not {value!r}")
        found: list[Path] = []
        for entry in entries:
            path = Path(self.text(key, entry)).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.exists():
                raise self.error(key, f"no such folder or file: {path}", hint=f"relative paths are read from {base}")
            path = path.resolve()
            images = list(iter_image_files([path]))
            if not images:
                raise self.error(
                    key,
                    f"no images in {path}",
                    hint="images are files ending in " + ", ".join(sorted(IMAGE_SUFFIXES)) + ", found recursively",
                )
            found.extend(images)
        return found


def _parse_manifest(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise DataError(f"{path}: a manifest must be a .toml or a .json file", hint=_MANIFEST_HINT)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no such manifest: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if tomllib is None:
        raise DataError(
            f"{path}: reading TOML on Python 3.10 needs the tomli package",
            hint="pip install tomli, or write the manifest as JSON",
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: invalid TOML: {exc}") from None


def load_manifest(path: Path | str) -> BenchmarkSplit:
    """A user's benchmark from a manifest (TOML or JSON, by suffix; docs/benchmarks.md).

    One table per known generator (``train``, ``test``, optional ``val``) and per unknown
    generator (``test``, optional ``kind``); each value is a folder searched recursively, an
    image file, or a list of them. Relative paths are read from ``root`` (default: the
    manifest's folder). Known class order is the order in the file.
    """
    path = Path(path).expanduser()
    m = _Manifest(path)
    data = _parse_manifest(path)
    top = m.table("", data)
    m.check_keys("", top, _TOP_KEYS)
    name = m.text("name", top["name"]) if "name" in top else path.stem
    base = path.resolve().parent
    if "root" in top:
        root = Path(m.text("root", top["root"])).expanduser()
        base = root if root.is_absolute() else base / root
        if not base.is_dir():
            raise m.error("root", f"no such folder: {base}")
        base = base.resolve()
    for section in ("known", "unknown"):
        if section not in top:
            raise m.error(section, f"missing: a benchmark needs at least one {section} generator")
        if not m.table(section, top[section]):
            raise m.error(section, f"no {section} generators")

    known = m.table("known", top["known"])
    unknown = m.table("unknown", top["unknown"])
    class_names: list[str] = []
    parts: dict[str, list[LabeledImage]] = {part: [] for part in PARTS}
    where: list[tuple[str, str]] = []
    for raw_name, entry in known.items():
        key = f"known.{raw_name}"
        name_k = m.generator_name(key, raw_name)
        if name_k in class_names:
            raise m.error(key, f"generator {name_k!r} is listed twice")
        entry = m.table(key, entry)
        m.check_keys(key, entry, _KNOWN_KEYS)
        for required in ("train", "test"):
            if required not in entry:
                raise m.error(
                    f"{key}.{required}",
                    "missing",
                    hint="a known generator needs train and test images (val is optional)",
                )
        label = len(class_names)
        class_names.append(name_k)
        for field_name, part in (("train", "train"), ("val", "val"), ("test", "test_known")):
            if field_name in entry:
                images = m.images(f"{key}.{field_name}", entry[field_name], base)
                parts[part].extend(LabeledImage(p, label, "", name_k) for p in images)
                where.extend((str(p), f"{key}.{field_name}") for p in images)

    folded = {n.casefold(): n for n in class_names}
    seen_unknown: set[str] = set()
    for raw_name, entry in unknown.items():
        key = f"unknown.{raw_name}"
        name_u = m.generator_name(key, raw_name)
        if name_u.casefold() in folded:
            raise m.error(
                key,
                f"{name_u!r} is also a known generator (known.{folded[name_u.casefold()]})",
                hint="a generator is either known or unknown in one benchmark",
            )
        if name_u in seen_unknown:
            raise m.error(key, f"generator {name_u!r} is listed twice")
        seen_unknown.add(name_u)
        entry = m.table(key, entry)
        m.check_keys(key, entry, _UNKNOWN_KEYS)
        if "test" not in entry:
            raise m.error(f"{key}.test", "missing", hint="an unknown generator needs test images")
        kind = entry.get("kind", "")
        if not isinstance(kind, str) or kind.strip() not in ("", *UNKNOWN_KINDS):
            raise m.error(
                f"{key}.kind",
                f"{kind!r} is not an unknown kind",
                hint=f"use one of {', '.join(UNKNOWN_KINDS)}, or leave it out",
            )
        images = m.images(f"{key}.test", entry["test"], base)
        parts["test_unknown"].extend(LabeledImage(p, UNKNOWN_LABEL, kind.strip(), name_u) for p in images)
        where.extend((str(p), f"{key}.test") for p in images)

    check_disjoint(where, str(path))
    return BenchmarkSplit(
        name=name,
        class_names=tuple(class_names),
        train=tuple(parts["train"]),
        val=tuple(parts["val"]),
        test_known=tuple(parts["test_known"]),
        test_unknown=tuple(parts["test_unknown"]),
        source=f"manifest {path.resolve()}",
    )


@register_source("manifest")
def open_manifest(location: Path | None, split: str | None, *, progress: ProgressFactory, log: Log) -> BenchmarkSplit:
    """``osma benchmark --manifest FILE``: the manifest names its one split itself."""
    if location is None:
        raise UsageError(
            "a manifest source needs the manifest's path", hint="e.g. `osma benchmark --manifest bench.toml`"
        )
    return load_manifest(location)
