"""Benchmark source ``pose``: the annotation files of the POSE benchmark (Yang et al., CVPR 2023).

``load_pose_split`` reads them as released, unchanged; ``write_pose_annotations`` writes the
same layout (the built-in benchmark is written with it). Every line, every label and every
image file is checked before a split is returned. ``docs/benchmarks.md`` describes the
layout and what was found in POSE's release.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from osma_cli.atomic import atomic_write
from osma_cli.errors import DataError, UsageError
from osma_cli.evaluation.metrics import UNKNOWN_LABEL
from osma_cli.evaluation.sources.base import (
    UNKNOWN_KINDS,
    BenchmarkSplit,
    LabeledImage,
    check_disjoint,
    register_source,
)
from osma_cli.progress import Log, ProgressFactory

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
            raise _line_error(file, number, text, f"negative label {label} (known classes are numbered from 0)")
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
        there = "no annotation files (*/annotations/*.txt) under " + " or ".join(str(r) for r in dict.fromkeys(roots))
    looked = "\n    ".join(str(p) for p in dict.fromkeys(wanted))
    return DataError(
        f"{what}; looked for:\n    {looked}\n  {there}",
        hint="give --data-root the folder that holds dataset/ (the POSE "
        "checkout) or dataset/ itself; docs/benchmarks.md shows the layout",
    )


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
        hits = sum(1 for line in probe if (path := candidate(line.text)) is not None and os.path.isfile(path))
        if hits > best_hits:
            best, best_hits = candidate, hits
    if best_hits <= 0 and probe:
        first = probe[0]
        tried = "\n    ".join(dict.fromkeys(path for c in candidates if (path := c(first.text)) is not None))
        raise DataError(
            f"images listed in {first.file} not found: the first, {first.text!r} "
            f"(line {first.number}), is none of:\n    {tried}",
            hint="download the POSE images and unpack them so that the paths in the "
            "annotations exist under --data-root (docs/benchmarks.md), or pass the "
            "folder that holds them as image_root",
        )
    return best


def _common_folders(groups: Mapping[Any, Sequence[str]]) -> dict[Any, str]:
    return {key: os.path.commonpath([os.path.dirname(p) for p in paths]) for key, paths in groups.items()}


def _derived_names(
    commons: Mapping[Any, str], top: str, fallback: Callable[[Any], str], taken: Iterable[str] = ()
) -> dict[Any, str]:
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
    return {
        key: name
        if name and counts[name] == 1 and name.lower() != "unknown" and name not in reserved
        else fallback(key)
        for key, name in names.items()
    }


def _find_annotations(root: Path, name: str) -> dict[str, Path]:
    """The split's annotation files under ``root/dataset`` or ``root``, checked to exist."""
    bases = list(dict.fromkeys([root / "dataset", root]))
    layouts = [pose_annotation_files(base, name) for base in bases]
    found = [files for files in layouts if files["train"].is_file()]
    if not found:
        raise _missing_files_error([files["train"] for files in layouts], bases, f"no training annotations for {name}")
    files = found[0]
    dataset_dir = files["train"].parents[2]
    if not files["test"].is_file():
        raise _missing_files_error([files["test"]], [dataset_dir], f"no closed-set test annotations for {name}")
    unknown_files = ["test_out", *UNKNOWN_KINDS]
    if not any(files[key].is_file() for key in unknown_files):
        raise _missing_files_error(
            [files[key] for key in unknown_files], [dataset_dir], f"no unknown-image annotations for {name}"
        )
    return files


def _resolver_candidates(root: Path, dataset_dir: Path, image_root: Path | str | None) -> list[_Resolver]:
    """The readings of ``./dataset/...`` worth trying, most likely first."""
    if image_root is not None:
        images = Path(image_root).expanduser()
        if not images.is_dir():
            raise DataError(f"no such folder: {images} (the image root)")
        images = images.resolve()
        return [_Resolver(images, False), _Resolver(images, True)]
    return list(
        dict.fromkeys(
            [
                _Resolver(root, False),
                _Resolver(dataset_dir.parent, False),
                _Resolver(dataset_dir, True),
                _Resolver(root, True),
            ]
        )
    )


def _unknown_lines(files: Mapping[str, Path], resolve: Callable[[_Line], str]) -> list[tuple[str, _Line, str]]:
    """(path, line, kind) of every unknown image: those of ``_test_out``, then those only
    in a kind file; the kind is that of the kind file listing the image, or ``""``."""
    kind_of: dict[str, tuple[str, _Line]] = {}
    for kind in UNKNOWN_KINDS:
        if not files[kind].is_file():
            continue
        for line in _read_annotation(files[kind], known=False):
            path = resolve(line)
            if path in kind_of and kind_of[path][0] != kind:
                raise DataError(f"{path} is listed as two unknown kinds: {kind_of[path][1].where} and {line.where}")
            kind_of.setdefault(path, (kind, line))
    unknown: list[tuple[str, _Line, str]] = []
    if files["test_out"].is_file():
        for line in _read_annotation(files["test_out"], known=False):
            path = resolve(line)
            unknown.append((path, line, kind_of.pop(path, ("", line))[0]))
    unknown.extend((path, line, kind) for path, (kind, line) in kind_of.items())
    if not unknown:
        raise DataError(
            f"{files['test_out']} and the per-kind files list no unknown images",
            hint="an open-set benchmark needs images of unknown generators",
        )
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
        raise DataError(
            f"{files['train']}: no training image has label {absent[0]}, yet labels run up to {k - 1}",
            hint="known classes must be numbered 0..K-1 without gaps",
        )
    for part in ("val", "test_known"):
        for line in known[part]:
            if line.label >= k:
                raise DataError(
                    f"{line.file}, line {line.number}: label {line.label} has no "
                    f"training images (the training labels run 0..{k - 1})"
                )
    return k


def load_pose_split(data_root: Path | str, split: str | int, *, image_root: Path | str | None = None) -> BenchmarkSplit:
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
        raise DataError(f"no such folder: {root}", hint="give the folder that holds POSE's dataset/ or dataset/ itself")
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
            raise DataError(
                f"{line.file}, line {line.number}: {line.text!r} does not start with dataset/, unlike the other paths",
                hint=f"image paths are read as {resolver}",
            )
        return path

    known = {part: [(resolve(line), line) for line in lines] for part, lines in known_lines.items()}
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
            f"{', '.join(str(c) for c in candidates)}); check that the download is complete",
        )
    source = f"POSE layout at {dataset_dir.parent} ({name})"
    check_disjoint(((path, line.where) for path, line in everything), source)

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
        generator_folders, top, lambda key: f"unknown-{key[0] or 'out'}{key[1]}", taken=class_names.values()
    )

    def known_images(part: str) -> tuple[LabeledImage, ...]:
        return tuple(LabeledImage(Path(path), line.label, "", class_names[line.label]) for path, line in known[part])

    return BenchmarkSplit(
        name=name,
        class_names=tuple(class_names[label] for label in range(k)),
        train=known_images("train"),
        val=known_images("val"),
        test_known=known_images("test_known"),
        test_unknown=tuple(
            LabeledImage(Path(path), UNKNOWN_LABEL, kind, generator_names[_unknown_key(line, kind, files)])
            for path, line, kind in unknown
        ),
        source=source,
    )


def _unknown_key(line: _Line, kind: str, files: Mapping[str, Path]) -> tuple[str, int]:
    """Which unknown generator a line belongs to: labels number them per file in POSE
    (``_test_out`` over all kinds, each kind file from 0), so the file is part of the key."""
    return ("", line.label) if line.file == files["test_out"] else (kind, line.label)


def _annotation_text(path: str | PurePath) -> str:
    text = path.as_posix() if isinstance(path, PurePath) else str(path)
    if not text.strip() or any(c in text for c in "\t\r\n"):
        raise UsageError(
            f"cannot write image path {text!r} in an annotation file",
            hint="paths must be non-empty and contain no tab or line break",
        )
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
        raise UsageError(
            f"unknown kinds {sorted(unknown_kinds)}", hint=f'use {", ".join(UNKNOWN_KINDS)} or "" for none'
        )
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
        atomic_write(files[key], functools.partial(Path.write_text, data=text, encoding="utf-8"))


@register_source("pose")
def open_pose_split(location: Path | None, split: str | None, *, progress: ProgressFactory, log: Log) -> BenchmarkSplit:
    """``osma benchmark SPLIT --data-root DIR``: one split of a folder in the POSE layout."""
    if location is None or split is None:
        raise UsageError(
            "the POSE layout needs a data root and a split name", hint="e.g. `osma benchmark split1 --data-root DIR`"
        )
    return load_pose_split(location, split)
