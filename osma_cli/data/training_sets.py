"""Labelled training files, Fang et al.'s class balancing, and a reproducible training dataset.

Training needs every draw to be repeatable: the crop and JPEG quality of item ``i`` in
epoch ``e`` come from a generator seeded with ``(seed, e, i)`` and nothing else, so a run
gives the same batches with any number of loader workers, in any access order, and after
a resume. Training data must be clean: a file that does not decode stops training with a
``DataError`` naming it, and ``check_readable`` finds such files before training starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from osma_cli.data.decode import load_rgb
from osma_cli.data.files import class_folders
from osma_cli.errors import DataError, ImageError, UsageError

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""``(H, W, 3) uint8`` image and a generator to ``(3, c, c) uint8`` CHW (``TrainTransform``)."""


@dataclass(frozen=True, eq=False)
class LabeledFiles:
    """Image files with integer labels ``0..K-1`` and the name of each label.

    ``labels`` is a read-only int64 array. Compared by identity (``eq=False``): element-wise
    equality of arrays has no single truth value.
    """

    paths: tuple[Path, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        paths = tuple(Path(p) for p in self.paths)
        labels = np.array(self.labels, dtype=np.int64).reshape(-1)
        names = tuple(self.class_names)
        if len(paths) != len(labels):
            raise UsageError(f"{len(paths)} paths but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise UsageError(
                f"labels must be in 0..{len(names) - 1} (one per class name), got {labels.min()}..{labels.max()}"
            )
        if len(set(names)) != len(names):
            raise UsageError("class names must be unique")
        labels.setflags(write=False)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", names)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> np.ndarray:
        """``(K,) int64``: files per class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def label_folders(self) -> list[str | None]:
        """Per label, the folder its files share, from the folder just above the one all labels
        share (e.g. ``zoo/tconv-cameras-s0``); None for a label without files.

        Recorded in a classifier's recipe, it says which images a label stood for wherever the
        data lies later, so a benchmark can refuse a split whose label k is another generator.
        """
        folders = {
            k: os.path.commonpath(
                [os.path.dirname(os.path.normpath(self.paths[i])) for i in np.flatnonzero(self.labels == k)]
            )
            for k in np.unique(self.labels).tolist()
        }
        if not folders:
            return [None] * self.num_classes
        top = os.path.dirname(os.path.commonpath(list(folders.values())))
        return [
            None if k not in folders else Path(os.path.relpath(folders[k], top)).as_posix()
            for k in range(self.num_classes)
        ]

    @classmethod
    def from_folders(cls, root: Path | str) -> LabeledFiles:
        """One class per sub-folder of ``root`` (``class_folders``), labels in name order.

        A class folder without images is a ``DataError`` naming every such folder: a class
        that cannot be trained on should be noticed, not silently dropped.
        """
        classes = class_folders(root)
        empty = [name for name, files in classes.items() if not files]
        if empty:
            raise DataError(
                f"class folders without images in {root}: {', '.join(empty)}", hint="add images to them or remove them"
            )
        paths = [path for files in classes.values() for path in files]
        labels = np.repeat(np.arange(len(classes)), [len(f) for f in classes.values()])
        return cls(tuple(paths), labels, tuple(classes))

    @classmethod
    def from_annotations(cls, *files: Path | str, data_root: Path | str | None = None) -> LabeledFiles:
        """Files listed in POSE-style annotation files, one ``relative/path<TAB>label`` a line.

        A minimal reader for a plain list of labelled files (the full POSE split loader,
        with its known/unknown files and unknown kinds, lives elsewhere). Lines of several
        files are concatenated in order. Blank lines are skipped; the label is the last
        field after a tab, or after white space when the line has no tab. Paths resolve
        against ``data_root``, or else against the folder of their annotation file. Labels
        are kept as written, so that files read separately (train, val) agree; class ``k``
        is named ``class{k}``, and there are ``max label + 1`` classes.
        """
        if not files:
            raise UsageError("no annotation files given")
        paths: list[Path] = []
        labels: list[int] = []
        for file in files:
            file = Path(file)
            root = Path(data_root) if data_root is not None else file.parent
            for number, line in enumerate(_read_lines(file), start=1):
                if not line.strip():
                    continue
                relative, label = _parse_line(line, file, number)
                paths.append(root / relative)
                labels.append(label)
        if not paths:
            raise DataError(f"no files listed in {', '.join(str(f) for f in files)}")
        names = tuple(f"class{k}" for k in range(max(labels) + 1))
        return cls(tuple(paths), np.asarray(labels, dtype=np.int64), names)

    def subset(self, indices: Iterable[int] | np.ndarray) -> LabeledFiles:
        """The files at ``indices`` (integers, or a boolean mask), with all class names kept
        so that labels mean the same in every subset."""
        index = np.asarray(indices)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise UsageError(f"mask of shape {index.shape} for {len(self)} files")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False).reshape(-1)
        if len(index) and (index.min() < -len(self) or index.max() >= len(self)):
            raise UsageError(f"index out of range for {len(self)} files")
        return LabeledFiles(tuple(self.paths[i] for i in index), self.labels[index], self.class_names)

    def split(self, val_fraction: float, seed: int) -> tuple[LabeledFiles, LabeledFiles]:
        """(train, val), stratified: each class gives ``round(n * val_fraction)`` of its
        ``n`` files to val, at least one when ``n >= 2`` and ``val_fraction > 0``, and never
        all of them. The same ``seed`` gives the same split; each class's draw depends only
        on ``(seed, class)``. Both parts keep the original file order."""
        if not 0 <= val_fraction < 1:
            raise UsageError(f"val_fraction must be in [0, 1), not {val_fraction}")
        if seed < 0:
            raise UsageError(f"seed must be 0 or more, not {seed}")
        in_val = np.zeros(len(self), dtype=bool)
        for label in range(self.num_classes):
            members = np.flatnonzero(self.labels == label)
            n = len(members)
            take = round(n * val_fraction)
            if val_fraction > 0 and n >= 2:
                take = max(take, 1)
            take = min(take, max(n - 1, 0))
            chosen = np.random.default_rng([seed, label]).permutation(members)[:take]
            in_val[chosen] = True
        return self.subset(~in_val), self.subset(in_val)


def _read_lines(file: Path) -> list[str]:
    try:
        return file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no such annotation file: {file}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file {file}: {exc.strerror or exc}") from None


def _parse_line(line: str, file: Path, number: int) -> tuple[str, int]:
    parts = line.rsplit("\t", 1) if "\t" in line else line.rsplit(None, 1)
    hint = "each line must be 'relative/path<TAB>integer label'"
    if len(parts) != 2 or not parts[0].strip():
        raise DataError(f"{file}, line {number}: expected a path and a label, got {line!r}", hint=hint)
    relative, label = parts[0].strip(), parts[1].strip()
    if not label.isdigit():
        raise DataError(f"{file}, line {number}: label {label!r} is not a non-negative integer", hint=hint)
    return relative, int(label)


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One epoch of Fang et al.'s class balancing: indices into ``labels`` in which every
    class present appears as often as the smallest one, drawn without replacement within
    each class, then shuffled. Classes absent from ``labels`` are ignored."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    smallest = int(counts.min())
    chosen = [rng.choice(np.flatnonzero(labels == c), size=smallest, replace=False) for c in classes]
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


class TrainingDataset(Dataset):
    """``(transform(image), label)`` for each labelled file, reproducibly augmented.

    The generator handed to ``transform`` for item ``i`` is seeded with
    ``(seed, epoch, i)`` (see the module docstring). The epoch lives in shared memory, so
    ``set_epoch`` reaches DataLoader workers that were started before it
    (``persistent_workers=True``); call it before iterating the epoch.

    ``cache_decoded=True`` keeps every decoded image in memory (3 bytes a pixel) so that
    large camera JPEGs are decoded once, not every epoch: for data that fits in memory.
    With DataLoader workers each worker fills its own cache (memory times the worker
    count), and a worker's cache ends with the worker: a loader made anew each epoch
    without ``persistent_workers`` decodes everything again. Fill the cache in the main
    process first (``check_readable``): forked workers then share those images
    (copy-on-write) and decode nothing.
    """

    def __init__(self, files: LabeledFiles, transform: Transform, *, seed: int, cache_decoded: bool = False) -> None:
        if seed < 0:
            raise UsageError(f"seed must be 0 or more, not {seed}")
        self.files = files
        self.transform = transform
        self.seed = seed
        self.cache_decoded = cache_decoded
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of ``epoch`` from now on (here and in the workers)."""
        if epoch < 0:
            raise UsageError(f"epoch must be 0 or more, not {epoch}")
        self._epoch[0] = epoch

    def _image(self, index: int) -> np.ndarray:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        image = load_rgb(self.files.paths[index])
        if self.cache_decoded:
            self._cache[index] = image
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``((3, c, c) uint8, label)``; a file that fails to decode is a ``DataError``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} files")
        try:
            image = self._image(index)
        except ImageError as exc:
            raise DataError(f"training file {exc}", hint="training data must decode; remove or replace it") from None
        rng = np.random.default_rng([self.seed, self.epoch, index])
        crop = self.transform(image, rng)
        return torch.from_numpy(crop), int(self.files.labels[index])

    def check_readable(self) -> list[tuple[Path, str]]:
        """Decode every file once; ``(path, reason)`` for each that fails, in file order.
        With ``cache_decoded`` the images are kept, so training does not decode them again."""
        failures: list[tuple[Path, str]] = []
        for index, path in enumerate(self.files.paths):
            try:
                self._image(index)
            except ImageError as exc:
                failures.append((path, exc.reason))
        return failures
