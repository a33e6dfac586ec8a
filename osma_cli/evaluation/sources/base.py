"""What every benchmark source returns, and the registry the sources are found in.

An open-set benchmark needs, for one split, the training, validation and closed-set test
images of the known generators, and the images of unknown generators with their kind
(unseen seed, architecture or dataset): a ``BenchmarkSplit``. A source is a function that
builds one from a location (a folder, a file) and a split name, registered under its name
with ``@register_source``; ``osma_cli.evaluation.sources`` imports every source module, so
``open_split(name, ...)`` finds them all. A source checks everything before returning: a
benchmark embeds images for hours, and a typo found after that is a wasted day.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from osma_cli.errors import DataError, UsageError
from osma_cli.evaluation.metrics import UNKNOWN_LABEL
from osma_cli.names import unknown_name
from osma_cli.progress import Log, ProgressFactory, no_log, no_progress

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
                        f"0..{k - 1} and no kind"
                    )
        for image in self.test_unknown:
            if image.label != UNKNOWN_LABEL or image.kind not in ("", *UNKNOWN_KINDS):
                raise UsageError(
                    f"benchmark split {self.name!r}: test_unknown holds {image.path} with label "
                    f"{image.label} and kind {image.kind!r}; unknown images need label "
                    f"{UNKNOWN_LABEL} and a kind among {('', *UNKNOWN_KINDS)}"
                )

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


def check_disjoint(entries: Iterable[tuple[str, str]], source: str) -> None:
    """Refuse an image listed twice (in one part or two): it would be counted twice or leak
    training images into the test."""
    seen: dict[str, str] = {}
    for path, where in entries:
        if path in seen:
            raise DataError(
                f"{source}: {path} is listed twice: {seen[path]} and {where}",
                hint="each image may appear once across train, val, test and unknown",
            )
        seen[path] = where


# --------------------------------------------------------------------------- registry


class SourceLoader(Protocol):
    """How a source reads one split: ``location`` and ``split`` as its command-line options give
    them (either may be None where the source does not need it); ``progress`` and ``log`` for
    a source that has work to do first (building the built-in benchmark)."""

    def __call__(
        self, location: Path | None, split: str | None, *, progress: ProgressFactory, log: Log
    ) -> BenchmarkSplit: ...


_SOURCES: dict[str, SourceLoader] = {}


def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    """Register a loader under ``name``; a second source of the same name is refused."""

    def register(loader: SourceLoader) -> SourceLoader:
        if name in _SOURCES:
            raise UsageError(f"a benchmark source named {name!r} is already registered")
        _SOURCES[name] = loader
        return loader

    return register


def list_sources() -> list[str]:
    """The registered sources' names, sorted."""
    return sorted(_SOURCES)


def get_source(name: str) -> SourceLoader:
    """The loader registered under ``name``; an unknown name is answered with the close ones."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise unknown_name("benchmark source", name, _SOURCES, listing="sources") from None


def open_split(
    source: str,
    location: Path | None = None,
    split: str | None = None,
    *,
    progress: ProgressFactory = no_progress,
    log: Log = no_log,
) -> BenchmarkSplit:
    """One split read by the source registered as ``source``."""
    return get_source(source)(location, split, progress=progress, log=log)
