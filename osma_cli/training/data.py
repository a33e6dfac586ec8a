"""Training data, prepared once for every training: files, splits, readable datasets, digests.

Metric learning and POSE read their data with ``load_data`` (a folder tree, one sub-folder
per generator, or POSE annotation files; validation images from ``--val-annotations`` or a
stratified ``--val-fraction``); pre-training builds its camera-model data from the same
pieces (``readable_dataset``, ``check_classes``, the digests). Unreadable files are
reported and left out before training starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osma_cli.data.augment import TrainTransform, eval_transform
from osma_cli.data.training_sets import LabeledFiles, TrainingDataset
from osma_cli.errors import DataError, UsageError
from osma_cli.references import MIN_IMAGES
from osma_cli.training.config import TrainConfig


@dataclass(frozen=True)
class TrainingData:
    train: LabeledFiles
    val: LabeledFiles | None
    dataset: TrainingDataset
    """The training files as a dataset, already checked readable (its decode cache filled if asked)."""
    skipped: list[tuple[Path, str]]
    description: dict
    notes: list[str] = field(default_factory=list)


def load_data(config: TrainConfig) -> TrainingData:
    """Training and validation files (unreadable ones left out and listed), checked for use."""
    if config.data is not None and config.annotations:
        raise UsageError("give either a DATA folder or --annotations, not both")
    if config.data is None and not config.annotations:
        raise UsageError(
            "no training data", hint="give a folder with one sub-folder per generator, or --annotations FILE"
        )
    if config.data is not None:
        files = LabeledFiles.from_folders(config.data)
        description: dict[str, Any] = {"source": "folders", "root": str(config.data)}
    else:
        files = LabeledFiles.from_annotations(*config.annotations, data_root=config.data_root)
        description = {
            "source": "annotations",
            "annotation_files": [str(p) for p in config.annotations],
            "data_root": None if config.data_root is None else str(config.data_root),
        }
    if config.val_annotations:
        train = files
        val = validation_of(files, LabeledFiles.from_annotations(*config.val_annotations, data_root=config.data_root))
        description["validation"] = {"annotation_files": [str(p) for p in config.val_annotations]}
    elif config.val_fraction > 0:
        if not 0 < config.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        train, val = files.split(config.val_fraction, config.seed)
        description["validation"] = {"fraction": config.val_fraction, "split_seed": config.seed}
    else:
        train, val = files, None
        description["validation"] = None
    notes: list[str] = []
    train, val = drop_absent_classes(train, val, notes)
    dataset, train, skipped = readable_dataset(
        train, config.train_transform(), seed=config.seed, cache_decoded=config.cache_decoded
    )
    if val is not None:
        _, val, val_skipped = readable_dataset(val, TrainTransform(crop=config.crop), seed=config.seed)
        skipped += val_skipped
        if len(val.paths) == 0:
            val = None
    check_classes(train)
    return TrainingData(train=train, val=val, dataset=dataset, skipped=skipped, description=description, notes=notes)


def validation_of(train: LabeledFiles, val: LabeledFiles) -> LabeledFiles:
    """Validation files whose label ``k`` means the training files' class ``k``.

    Annotation files carry numbers, not names; with training folders (classes in name
    order) the numbers must still mean the same generators, so the names are taken from the
    training side.
    """
    if len(val) and int(val.labels.max()) >= len(train.class_names):
        raise DataError(
            f"validation label {int(val.labels.max())} but only {len(train.class_names)} training classes",
            hint="label k of --val-annotations is the k-th training class (folders in name order)",
        )
    return LabeledFiles(val.paths, val.labels, train.class_names)


def drop_absent_classes(
    train: LabeledFiles, val: LabeledFiles | None, notes: list[str]
) -> tuple[LabeledFiles, LabeledFiles | None]:
    """Keep the classes that have training files (annotation labels may have gaps); relabel both.

    Validation files of other classes are left out (they would be unknowns, not known
    generators), and ``notes`` says so.
    """
    counts = np.bincount(train.labels, minlength=len(train.class_names))
    kept = [name for name, n in zip(train.class_names, counts) if n > 0]
    if len(kept) < len(train.class_names):
        absent = [name for name, n in zip(train.class_names, counts) if n == 0]
        notes.append(
            f"classes without training files left out: {', '.join(absent[:8])}" + (" ..." if len(absent) > 8 else "")
        )
        train = relabel(train, tuple(kept))
    if val is not None:
        names = np.array(val.class_names, dtype=object)[val.labels] if len(val) else np.array([], dtype=object)
        inside = np.isin(names, np.array(train.class_names, dtype=object))
        if not inside.all():
            notes.append(f"{int((~inside).sum())} validation file(s) of classes without training files left out")
        val = relabel(val.subset(np.flatnonzero(inside)), train.class_names)
    return train, val


def relabel(files: LabeledFiles, class_names: tuple[str, ...]) -> LabeledFiles:
    """The same files with labels renumbered by name onto ``class_names`` (every name must be there)."""
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[files.class_names[k]] for k in files.labels], dtype=np.int64)
    return LabeledFiles(paths=tuple(files.paths), labels=labels, class_names=tuple(class_names))


def readable_dataset(
    files: LabeledFiles, transform, *, seed: int, cache_decoded: bool = False
) -> tuple[TrainingDataset, LabeledFiles, list[tuple[Path, str]]]:
    """A ``TrainingDataset`` of the files that decode, those files, and (path, reason) of the others.

    The check decodes every file once in this process; with ``cache_decoded`` the images stay
    in memory and forked loader workers share them.
    """
    dataset = TrainingDataset(files, transform, seed=seed, cache_decoded=cache_decoded)
    bad = dataset.check_readable()
    if not bad:
        return dataset, files, []
    bad_paths = {Path(p) for p, _ in bad}
    files = files.subset(np.array([i for i, p in enumerate(files.paths) if Path(p) not in bad_paths], dtype=np.int64))
    dataset = TrainingDataset(files, transform, seed=seed, cache_decoded=cache_decoded)
    if cache_decoded:
        dataset.check_readable()
    return dataset, files, [(Path(p), reason) for p, reason in bad]


def check_classes(train: LabeledFiles) -> None:
    counts = np.bincount(train.labels, minlength=len(train.class_names))
    if len(train.class_names) < 2:
        raise DataError(
            f"training needs at least 2 classes, got {len(train.class_names)}",
            hint="give one sub-folder (or annotation label) per generator",
        )
    short = [f"{name} ({n})" for name, n in zip(train.class_names, counts) if n < MIN_IMAGES]
    if short:
        raise DataError(
            f"classes with fewer than {MIN_IMAGES} readable training images: {', '.join(short)}",
            hint="add images, lower --val-fraction, or remove those classes",
        )


def files_digest(files: LabeledFiles | None) -> str | None:
    """sha256 over (path, label) pairs: identifies a split in the fingerprint and the recipe."""
    if files is None:
        return None
    return paths_digest(files.paths, files.labels)


def paths_digest(paths, labels=None) -> str:
    """sha256 over paths (and labels, when given), in order."""
    digest = hashlib.sha256()
    labels = [None] * len(paths) if labels is None else labels
    for path, label in zip(paths, labels):
        tail = "" if label is None else str(int(label))
        digest.update(f"{path}\0{tail}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def reference_sample(files: LabeledFiles, per_class: int | None, seed: int) -> LabeledFiles:
    """Up to ``per_class`` files of each class, drawn once with ``seed`` (all with None)."""
    if per_class is None:
        return files
    rng = np.random.default_rng([seed, 0x5EED])
    chosen = []
    for k in range(len(files.class_names)):
        idx = np.flatnonzero(files.labels == k)
        chosen.append(idx if len(idx) <= per_class else np.sort(rng.choice(idx, per_class, replace=False)))
    return files.subset(np.sort(np.concatenate(chosen)))


class CentreCrop:
    """``transform(image, rng)`` giving the deterministic centre crop (validation images)."""

    def __init__(self, crop: int) -> None:
        self.crop = crop

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return eval_transform(image, self.crop)
