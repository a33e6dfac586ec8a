"""Where a benchmark's images come from: one typed description, two sources.

An open-set benchmark needs, for one split, the training, validation and closed-set test
images of the known generators, and the images of unknown generators with their kind
(unseen seed, architecture or dataset). Two sources give them, both as a ``BenchmarkSplit``:

- ``load_pose_split``: the annotation files of the POSE benchmark (Yang et al., CVPR 2023),
  read as released, unchanged; ``write_pose_annotations`` writes the same layout.
- ``load_manifest``: a small TOML or JSON file of folders, for a user's own benchmark.

Both check everything before returning: every line, every label and every image file. A
benchmark embeds images for hours; a typo found after that is a wasted day.
``docs/benchmarks.md`` describes both formats and what was found in POSE's release.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from osma_cli.atomic import atomic_write
from osma_cli.data.files import IMAGE_SUFFIXES, iter_image_files
from osma_cli.errors import DataError, UsageError
from osma_cli.evaluation.metrics import UNKNOWN_LABEL

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

UNKNOWN_KINDS: tuple[str, ...] = ("seed", "arch", "dataset")
"""The unknown kinds of the POSE protocol: unseen seed, architecture, training dataset."""

PARTS: tuple[str, ...] = ("train", "val", "test_known", "test_unknown")


# --------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class LabeledImage:
    """One image of a benchmark and what the benchmark says about it."""

    path: Path
    """Absolute and normalised (the root is resolved; links inside it are kept as named)."""
    label: int
    """Known class index ``0..K-1``, or ``-1`` (``UNKNOWN_LABEL``) for an unknown generator."""
    kind: str = ""
    """Unknown kind (``"seed"``, ``"arch"``, ``"dataset"``) or ``""``; always ``""`` when known."""
    generator: str = ""
    """The source's name for the generator that made the image: the class name for a known
    image, a name per unknown generator (a manifest table, a POSE folder) so results can
    also be broken down per unknown generator; ``""`` when the source gives none."""


@dataclass(frozen=True)
class BenchmarkSplit:
    """The images of one benchmark split, by part, with the names of the known classes."""

    name: str
    class_names: tuple[str, ...]
    """Known classes; a known image's label is its index here."""
    train: tuple[LabeledImage, ...]
    """Known images the references are built from."""
    val: tuple[LabeledImage, ...]
    """Known images the threshold is calibrated on; may be empty."""
    test_known: tuple[LabeledImage, ...]
    test_unknown: tuple[LabeledImage, ...]
    source: str
    """Where it was read from, for people: e.g. ``POSE layout at /data/pose (split1)``."""

    def __post_init__(self) -> None:
        """Refuse an inconsistent split, so every consumer can trust labels and kinds."""
        k = len(self.class_names)
        if k == 0:
            raise UsageError(f"benchmark split {self.name!r} has no known classes")
        duplicated = [n for n, c in Counter(self.class_names).items() if c > 1]
        if duplicated:
            raise UsageError(f"benchmark split {self.name!r}: class names repeated: {duplicated}")
        for part in ("train", "val", "test_known"):
            for image in getattr(self, part):
                if not 0 <= image.label < k or image.kind:
                    raise UsageError(
                        f"benchmark split {self.name!r}: {part} holds {image.path} with label "
                        f"{image.label} and kind {image.kind!r}; known images need a label in "
                        f"0..{k - 1} and no kind")
        for image in self.test_unknown:
            if image.label != UNKNOWN_LABEL or image.kind not in ("", *UNKNOWN_KINDS):
                raise UsageError(
                    f"benchmark split {self.name!r}: test_unknown holds {image.path} with label "
                    f"{image.label} and kind {image.kind!r}; unknown images need label "
                    f"{UNKNOWN_LABEL} and a kind among {('', *UNKNOWN_KINDS)}")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def test(self) -> tuple[LabeledImage, ...]:
        """Every test image, known then unknown: the open-set test set."""
        return self.test_known + self.test_unknown

    def summary(self) -> dict[str, Any]:
        """Counts per part, per class, per unknown kind and unknown generator (JSON-able).

        Kind ``""`` (unspecified) is counted under ``""``, as the metrics spell it.
        """
        per_class = {name: {"train": 0, "val": 0, "test": 0} for name in self.class_names}
        for part, key in (("train", "train"), ("val", "val"), ("test_known", "test")):
            for label, count in Counter(i.label for i in getattr(self, part)).items():
                per_class[self.class_names[label]][key] = count
        kinds = Counter(i.kind for i in self.test_unknown)
        generators: dict[str, dict[str, Any]] = {}
        for image in self.test_unknown:
            entry = generators.setdefault(image.generator, {"kind": image.kind, "count": 0})
            entry["count"] += 1
            if entry["kind"] != image.kind:
                entry["kind"] = "mixed"
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.class_names),
            "counts": {part: len(getattr(self, part)) for part in PARTS},
            "per_class": per_class,
            "unknown_kinds": {kind: kinds[kind] for kind in (*UNKNOWN_KINDS, "") if kinds[kind]},
            "unknown_generators": generators,
        }


# --------------------------------------------------------------------------- POSE layout

AnnotationLine = tuple["str | PurePath", int]
"""One line of an annotation file as a builder gives it: (image path, integer label)."""

_LABEL = re.compile(r"-?[0-9]+")
_LINE_HINT = 'each line is "relative/path<TAB>integer label" (a space also separates)'
_SHOW = 200
_PROBE = 50


@dataclass(frozen=True)
class PoseAnnotations:
    """The lines of one split in the POSE layout, as a benchmark builder produces them.

    Paths are relative to the folder that holds ``dataset/`` (POSE writes them as
    ``./dataset/...``) or absolute. ``unknown`` maps a kind (``seed``, ``arch``,
    ``dataset``, or ``""`` for none) to its lines; a label there numbers the unknown
    generators within that kind from 0, as POSE's per-kind files do.
    """

    train: Sequence[AnnotationLine]
    test: Sequence[AnnotationLine]
    val: Sequence[AnnotationLine] = ()
    unknown: Mapping[str, Sequence[AnnotationLine]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Line:
    text: str
    label: int
    file: Path
    number: int

    @property
    def where(self) -> str:
        return f"line {self.number} of {self.file}"


def pose_split_name(split: str | int) -> str:
    """``1``, ``"1"`` and ``"split1"`` all name ``split1``; other names are kept as given."""
    name = str(split).strip()
    if name.isdigit():
        name = f"split{int(name)}"
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise UsageError(f"invalid split name {split!r}", hint="use e.g. split1 or 1")
    return name


def pose_annotation_files(dataset_dir: Path, split: str | int) -> dict[str, Path]:
    """The annotation files of ``split`` under ``dataset_dir`` (the POSE ``dataset/`` folder).

    Keys: ``train``, ``val``, ``test`` (closed-set test), ``test_out`` (all unknowns) and
    one per unknown kind.
    """
    name = pose_split_name(split)
    test_dir = dataset_dir / f"{name}_test" / "annotations"
    files = {
        "train": dataset_dir / f"{name}_train" / "annotations" / f"{name}_train.txt",
        "val": dataset_dir / f"{name}_val" / "annotations" / f"{name}_val.txt",
        "test": test_dir / f"{name}_test.txt",
        "test_out": test_dir / f"{name}_test_out.txt",
    }
    files.update({kind: test_dir / f"{name}_test_out_{kind}.txt" for kind in UNKNOWN_KINDS})
    return files


def _line_error(file: Path, number: int, text: str, reason: str) -> DataError:
    shown = text.rstrip("\r\n")
    shown = shown if len(shown) <= _SHOW else shown[:_SHOW] + "..."
    return DataError(f"{file}, line {number}: {reason}: {shown!r}", hint=_LINE_HINT)


def _read_annotation(file: Path, *, known: bool) -> list[_Line]:
    """The (path, label) lines of one annotation file; a malformed line is a ``DataError``.

    A line is ``path<TAB>label``; without a tab, the last whitespace separates, since
    POSE's paths contain spaces (``real/summer/2011-06-26 19:33:40_real.png``). Blank lines
    and surrounding whitespace are ignored. Labels of known images must be >= 0; those of
    unknown images number unknown generators and may be anything.
    """
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {file}: {exc.strerror or exc}") from None
    lines = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _line_error(file, number, repr(raw)[2:-1], "not UTF-8 text") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        stripped = text.rstrip()
        if not stripped.strip():
            continue
        if "\t" in stripped:
            image, _, label_text = stripped.rpartition("\t")
        else:
            pieces = stripped.strip().rsplit(None, 1)
            if len(pieces) < 2:
                raise _line_error(file, number, text, "no label after the image path")
            image, label_text = pieces
        image, label_text = image.strip(), label_text.strip()
        if not image:
            raise _line_error(file, number, text, "empty image path")
        if not _LABEL.fullmatch(label_text):
            raise _line_error(file, number, text, f"label {label_text!r} is not an integer")
        label = int(label_text)
        if known and label < 0:
            raise _line_error(file, number, text,
                              f"negative label {label} (known classes are numbered from 0)")
        lines.append(_Line(image, label, file, number))
    return lines


def _present_annotations(roots: Sequence[Path]) -> list[str]:
    found: list[str] = []
    for root in roots:
        if root.is_dir():
            found.extend(str(p) for p in sorted(root.glob("*/annotations/*.txt")))
    return list(dict.fromkeys(found))


def _missing_files_error(wanted: Iterable[Path], roots: Sequence[Path], what: str) -> DataError:
    present = _present_annotations(roots)
    if present:
        listed = present[:30] + ([f"... and {len(present) - 30} more"] if len(present) > 30 else [])
        there = "annotation files present:\n    " + "\n    ".join(listed)
    else:
        there = ("no annotation files (*/annotations/*.txt) under "
                 + " or ".join(str(r) for r in dict.fromkeys(roots)))
    looked = "\n    ".join(str(p) for p in dict.fromkeys(wanted))
    return DataError(f"{what}; looked for:\n    {looked}\n  {there}",
                     hint="give --data-root the folder that holds dataset/ (the POSE "
                          "checkout) or dataset/ itself; docs/benchmarks.md shows the layout")


def _relative_parts(text: str) -> tuple[str, ...] | None:
    """The components of a relative annotation path (``./`` dropped), None if absolute."""
    if text.startswith("/"):
        return None
    return tuple(part for part in text.split("/") if part not in ("", "."))


@dataclass(frozen=True)
class _Resolver:
    """How relative annotation paths become files: a base folder, maybe without ``dataset/``."""

    base: Path
    strip_dataset: bool

    def __str__(self) -> str:
        return f"{self.base}/{'<path without dataset/>' if self.strip_dataset else '<path>'}"

    def __call__(self, text: str) -> str | None:
        parts = _relative_parts(text)
        if parts is None:
            return os.path.normpath(text)
        if self.strip_dataset:
            if not parts or parts[0] != "dataset":
                return None
            parts = parts[1:]
        return os.path.normpath(os.path.join(self.base, *parts))


def _choose_resolver(candidates: Sequence[_Resolver], probe: Sequence[_Line]) -> _Resolver:
    """The candidate under which most of the first lines' images exist (the first on ties)."""
    best, best_hits = candidates[0], -1
    for candidate in candidates:
        hits = sum(1 for line in probe
                   if (path := candidate(line.text)) is not None and os.path.isfile(path))
        if hits > best_hits:
            best, best_hits = candidate, hits
    if best_hits <= 0 and probe:
        first = probe[0]
        tried = "\n    ".join(dict.fromkeys(
            path for c in candidates if (path := c(first.text)) is not None))
        raise DataError(
            f"images listed in {first.file} not found: the first, {first.text!r} "
            f"(line {first.number}), is none of:\n    {tried}",
            hint="download the POSE images and unpack them so that the paths in the "
                 "annotations exist under --data-root (docs/benchmarks.md), or pass the "
                 "folder that holds them as image_root")
    return best


def _common_folders(groups: Mapping[Any, Sequence[str]]) -> dict[Any, str]:
    return {key: os.path.commonpath([os.path.dirname(p) for p in paths])
            for key, paths in groups.items()}


def _derived_names(commons: Mapping[Any, str], top: str, fallback: Callable[[Any], str],
                   taken: Iterable[str] = ()) -> dict[Any, str]:
    """A readable name per group of images: its common folder (``commons``) below ``top``.

    POSE has no class-name file; its folders name the generators
    (``OSMA/fake/styleGAN/cat/...``). A leading ``fake`` (POSE's real/fake split) is dropped.
    A group whose folder says nothing (``top`` itself, a clash with another group or with
    ``taken``, ``unknown``) gets ``fallback(key)``.
    """
    names: dict[Any, str] = {}
    for key, common in commons.items():
        parts = PurePath(os.path.relpath(common, top)).parts
        parts = tuple(p for p in parts if p not in (".", ".."))
        if len(parts) > 1 and parts[0].lower() == "fake":
            parts = parts[1:]
        names[key] = "/".join(parts)
    counts = Counter(names.values())
    reserved = set(taken)
    return {key: name if name and counts[name] == 1 and name.lower() != "unknown"
            and name not in reserved else fallback(key)
            for key, name in names.items()}


def _check_disjoint(entries: Iterable[tuple[str, str]], source: str) -> None:
    """Refuse an image listed twice (in one part or two): it would be counted twice or leak
    training images into the test."""
    seen: dict[str, str] = {}
    for path, where in entries:
        if path in seen:
            raise DataError(f"{source}: {path} is listed twice: {seen[path]} and {where}",
                            hint="each image may appear once across train, val, test and unknown")
        seen[path] = where


def _find_annotations(root: Path, name: str) -> dict[str, Path]:
    """The split's annotation files under ``root/dataset`` or ``root``, checked to exist."""
    bases = list(dict.fromkeys([root / "dataset", root]))
    layouts = [pose_annotation_files(base, name) for base in bases]
    found = [files for files in layouts if files["train"].is_file()]
    if not found:
        raise _missing_files_error([files["train"] for files in layouts], bases,
                                   f"no training annotations for {name}")
    files = found[0]
    dataset_dir = files["train"].parents[2]
    if not files["test"].is_file():
        raise _missing_files_error([files["test"]], [dataset_dir],
                                   f"no closed-set test annotations for {name}")
    unknown_files = ["test_out", *UNKNOWN_KINDS]
    if not any(files[key].is_file() for key in unknown_files):
        raise _missing_files_error([files[key] for key in unknown_files], [dataset_dir],
                                   f"no unknown-image annotations for {name}")
    return files


def _resolver_candidates(root: Path, dataset_dir: Path,
                         image_root: Path | str | None) -> list[_Resolver]:
    """The readings of ``./dataset/...`` worth trying, most likely first."""
    if image_root is not None:
        images = Path(image_root).expanduser()
        if not images.is_dir():
            raise DataError(f"no such folder: {images} (the image root)")
        images = images.resolve()
        return [_Resolver(images, False), _Resolver(images, True)]
    return list(dict.fromkeys([
        _Resolver(root, False), _Resolver(dataset_dir.parent, False),
        _Resolver(dataset_dir, True), _Resolver(root, True)]))


def _unknown_lines(files: Mapping[str, Path],
                   resolve: Callable[[_Line], str]) -> list[tuple[str, _Line, str]]:
    """(path, line, kind) of every unknown image: those of ``_test_out``, then those only
    in a kind file; the kind is that of the kind file listing the image, or ``""``."""
    kind_of: dict[str, tuple[str, _Line]] = {}
    for kind in UNKNOWN_KINDS:
        if not files[kind].is_file():
            continue
        for line in _read_annotation(files[kind], known=False):
            path = resolve(line)
            if path in kind_of and kind_of[path][0] != kind:
                raise DataError(f"{path} is listed as two unknown kinds: "
                                f"{kind_of[path][1].where} and {line.where}")
            kind_of.setdefault(path, (kind, line))
    unknown: list[tuple[str, _Line, str]] = []
    if files["test_out"].is_file():
        for line in _read_annotation(files["test_out"], known=False):
            path = resolve(line)
            unknown.append((path, line, kind_of.pop(path, ("", line))[0]))
    unknown.extend((path, line, kind) for path, (kind, line) in kind_of.items())
    if not unknown:
        raise DataError(f"{files['test_out']} and the per-kind files list no unknown images",
                        hint="an open-set benchmark needs images of unknown generators")
    return unknown


def _check_labels(files: Mapping[str, Path], known: Mapping[str, list[_Line]]) -> int:
    """The number of known classes K, once labels are seen to run 0..K-1 in training and
    to stay within it elsewhere: a class without training images has no reference."""
    train = known["train"]
    if not train:
        raise DataError(f"{files['train']} lists no images")
    k = 1 + max(line.label for line in train)
    present = {line.label for line in train}
    absent = [label for label in range(k) if label not in present]
    if absent:
        raise DataError(f"{files['train']}: no training image has label {absent[0]}, yet labels "
                        f"run up to {k - 1}",
                        hint="known classes must be numbered 0..K-1 without gaps")
    for part in ("val", "test_known"):
        for line in known[part]:
            if line.label >= k:
                raise DataError(f"{line.file}, line {line.number}: label {line.label} has no "
                                f"training images (the training labels run 0..{k - 1})")
    return k


def load_pose_split(data_root: Path | str, split: str | int, *,
                    image_root: Path | str | None = None) -> BenchmarkSplit:
    """One split of the POSE benchmark, from its annotation files as released.

    ``data_root`` is the folder holding ``dataset/`` (the POSE checkout) or ``dataset/``
    itself. Image paths in the files (``./dataset/OSMA/...``) are resolved against it,
    trying the sensible readings and keeping the one under which the files exist;
    ``image_root`` says where the images are when they are not beside the annotations.
    Known classes are the labels ``0..K-1`` of the training file (0 is "real"), named from
    their folders. Unknown images are those of ``{split}_test_out.txt`` and of the per-kind
    files, each with the kind of the per-kind file that lists it (``""`` if none does).
    """
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"no such folder: {root}",
                        hint="give the folder that holds POSE's dataset/ or dataset/ itself")
    root = root.resolve()
    name = pose_split_name(split)
    files = _find_annotations(root, name)
    dataset_dir = files["train"].parents[2]
    known_lines = {
        "train": _read_annotation(files["train"], known=True),
        "val": _read_annotation(files["val"], known=True) if files["val"].is_file() else [],
        "test_known": _read_annotation(files["test"], known=True),
    }
    k = _check_labels(files, known_lines)

    candidates = _resolver_candidates(root, dataset_dir, image_root)
    resolver = _choose_resolver(candidates, known_lines["train"][:_PROBE])

    def resolve(line: _Line) -> str:
        path = resolver(line.text)
        if path is None:
            raise DataError(f"{line.file}, line {line.number}: {line.text!r} does not start "
                            f"with dataset/, unlike the other paths",
                            hint=f"image paths are read as {resolver}")
        return path

    known = {part: [(resolve(line), line) for line in lines]
             for part, lines in known_lines.items()}
    unknown = _unknown_lines(files, resolve)
    everything = [entry for part in known.values() for entry in part]
    everything += [(path, line) for path, line, _ in unknown]
    missing = [(path, line) for path, line in everything if not os.path.isfile(path)]
    if missing:
        path, line = missing[0]
        raise DataError(
            f"{len(missing)} of {len(everything)} images listed for {name} are missing; the "
            f"first, {line.text!r} ({line.where}), is not at {path}",
            hint=f"image paths were read as {resolver} (chosen among: "
                 f"{', '.join(str(c) for c in candidates)}); check that the download is complete")
    source = f"POSE layout at {dataset_dir.parent} ({name})"
    _check_disjoint(((path, line.where) for path, line in everything), source)

    by_label: dict[int, list[str]] = defaultdict(list)
    for path, line in (entry for part in known.values() for entry in part):
        by_label[line.label].append(path)
    by_generator: dict[tuple[str, int], list[str]] = defaultdict(list)
    for path, line, kind in unknown:
        by_generator[_unknown_key(line, kind, files)].append(path)
    label_folders, generator_folders = _common_folders(by_label), _common_folders(by_generator)
    top = os.path.commonpath([*label_folders.values(), *generator_folders.values()])
    class_names = _derived_names(label_folders, top, lambda label: f"class{label}")
    generator_names = _derived_names(
        generator_folders, top, lambda key: f"unknown-{key[0] or 'out'}{key[1]}",
        taken=class_names.values())

    def known_images(part: str) -> tuple[LabeledImage, ...]:
        return tuple(LabeledImage(Path(path), line.label, "", class_names[line.label])
                     for path, line in known[part])

    return BenchmarkSplit(
        name=name,
        class_names=tuple(class_names[label] for label in range(k)),
        train=known_images("train"),
        val=known_images("val"),
        test_known=known_images("test_known"),
        test_unknown=tuple(
            LabeledImage(Path(path), UNKNOWN_LABEL, kind,
                         generator_names[_unknown_key(line, kind, files)])
            for path, line, kind in unknown),
        source=source,
    )


def _unknown_key(line: _Line, kind: str, files: Mapping[str, Path]) -> tuple[str, int]:
    """Which unknown generator a line belongs to: labels number them per file in POSE
    (``_test_out`` over all kinds, each kind file from 0), so the file is part of the key."""
    return ("", line.label) if line.file == files["test_out"] else (kind, line.label)


def _annotation_text(path: str | PurePath) -> str:
    text = path.as_posix() if isinstance(path, PurePath) else str(path)
    if not text.strip() or any(c in text for c in "\t\r\n"):
        raise UsageError(f"cannot write image path {text!r} in an annotation file",
                         hint="paths must be non-empty and contain no tab or line break")
    if PurePosixPath(text).is_absolute() or text.startswith(("./", "../")):
        return text
    return f"./{text}"


def _annotation_lines(lines: Iterable[AnnotationLine], offset: int = 0) -> str:
    out = []
    for path, label in lines:
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise UsageError(f"label of {path} must be an integer >= 0, not {label!r}")
        out.append(f"{_annotation_text(path)}\t{label + offset}\n")
    return "".join(out)


def write_pose_annotations(root: Path | str, split: str | int, parts: PoseAnnotations) -> None:
    """Write ``parts`` as split ``split`` in the POSE layout under ``root/dataset/``.

    The inverse of ``load_pose_split(root, split)``. Every file of the layout is written,
    empty where there are no lines, so POSE's own code reads the result too. The
    ``_test_out`` file lists the unknowns of every kind, in the order seed, arch, dataset,
    none, their labels shifted past the previous kinds' (as in POSE's files); each kind file
    keeps the labels given. Files are replaced atomically.
    """
    unknown_kinds = set(parts.unknown) - {"", *UNKNOWN_KINDS}
    if unknown_kinds:
        raise UsageError(f"unknown kinds {sorted(unknown_kinds)}",
                         hint=f"use {', '.join(UNKNOWN_KINDS)} or \"\" for none")
    files = pose_annotation_files(Path(root) / "dataset", split)
    contents = {key: _annotation_lines(getattr(parts, key)) for key in ("train", "val", "test")}
    out, offset = [], 0
    for kind in (*UNKNOWN_KINDS, ""):
        lines = list(parts.unknown.get(kind, ()))
        text = _annotation_lines(lines)
        if kind:
            contents[kind] = text
        out.append(_annotation_lines(lines, offset))
        offset += 1 + max((label for _, label in lines), default=-1)
    contents["test_out"] = "".join(out)
    for key, text in contents.items():
        atomic_write(files[key], lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))


# --------------------------------------------------------------------------- manifests

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
                hint = (f"did you mean {close[0]!r}?" if close else
                        f"allowed here: {', '.join(allowed)}")
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
            raise self.error(key, f"invalid generator name {name!r}",
                             hint="use a non-empty printable name other than 'unknown'")
        return clean

    def images(self, key: str, value: Any, base: Path) -> list[Path]:
        """The images of one entry: a folder (searched recursively), a file, or a list."""
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list) or not entries:
            raise self.error(key, f"must be a path or a non-empty list of paths, not {value!r}")
        found: list[Path] = []
        for entry in entries:
            path = Path(self.text(key, entry)).expanduser()
            path = (path if path.is_absolute() else base / path)
            if not path.exists():
                raise self.error(key, f"no such folder or file: {path}",
                                 hint=f"relative paths are read from {base}")
            path = path.resolve()
            images = list(iter_image_files([path]))
            if not images:
                raise self.error(key, f"no images in {path}",
                                 hint="images are files ending in "
                                      + ", ".join(sorted(IMAGE_SUFFIXES)) + ", found recursively")
            found.extend(images)
        return found


def _parse_manifest(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise DataError(f"{path}: a manifest must be a .toml or a .json file",
                        hint=_MANIFEST_HINT)
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
            raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}") from None
    if tomllib is None:
        raise DataError(f"{path}: reading TOML on Python 3.10 needs the tomli package",
                        hint="pip install tomli, or write the manifest as JSON")
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
        base = (root if root.is_absolute() else base / root)
        if not base.is_dir():
            raise m.error("root", f"no such folder: {base}")
        base = base.resolve()
    for section in ("known", "unknown"):
        if section not in top:
            raise m.error(section, "missing: a benchmark needs at least one "
                                   f"{section} generator")
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
                raise m.error(f"{key}.{required}", "missing",
                              hint="a known generator needs train and test images (val is optional)")
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
            raise m.error(key, f"{name_u!r} is also a known generator "
                               f"(known.{folded[name_u.casefold()]})",
                          hint="a generator is either known or unknown in one benchmark")
        if name_u in seen_unknown:
            raise m.error(key, f"generator {name_u!r} is listed twice")
        seen_unknown.add(name_u)
        entry = m.table(key, entry)
        m.check_keys(key, entry, _UNKNOWN_KEYS)
        if "test" not in entry:
            raise m.error(f"{key}.test", "missing", hint="an unknown generator needs test images")
        kind = entry.get("kind", "")
        if not isinstance(kind, str) or kind.strip() not in ("", *UNKNOWN_KINDS):
            raise m.error(f"{key}.kind", f"{kind!r} is not an unknown kind",
                          hint=f"use one of {', '.join(UNKNOWN_KINDS)}, or leave it out")
        images = m.images(f"{key}.test", entry["test"], base)
        parts["test_unknown"].extend(
            LabeledImage(p, UNKNOWN_LABEL, kind.strip(), name_u) for p in images)
        where.extend((str(p), f"{key}.test") for p in images)

    _check_disjoint(where, str(path))
    return BenchmarkSplit(
        name=name,
        class_names=tuple(class_names),
        train=tuple(parts["train"]),
        val=tuple(parts["val"]),
        test_known=tuple(parts["test_known"]),
        test_unknown=tuple(parts["test_unknown"]),
        source=f"manifest {path.resolve()}",
    )
