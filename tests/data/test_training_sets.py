"""Labelled files, class balancing, and the reproducible training dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from osma_cli.data.augment import TrainTransform
from osma_cli.data.training_sets import LabeledFiles, TrainingDataset, balanced_indices
from osma_cli.errors import DataError, UsageError

CROP = 16


def write_tree(root: Path, sizes: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, count in sizes.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "train", {"gan_b": 5, "gan_a": 3, "gan_c": 4})


@pytest.fixture
def files(tree: Path) -> LabeledFiles:
    return LabeledFiles.from_folders(tree)


# --- LabeledFiles ------------------------------------------------------------------------


def test_from_folders(tree: Path, files: LabeledFiles) -> None:
    assert files.class_names == ("gan_a", "gan_b", "gan_c")
    assert files.labels.dtype == np.int64
    assert files.counts().tolist() == [3, 5, 4]
    for path, label in zip(files.paths, files.labels):
        assert path.parent.name == files.class_names[label]
    assert files.paths[0] == tree / "gan_a" / "00.png"


def test_from_folders_names_empty_classes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "train", {"good": 2})
    (root / "empty_one").mkdir()
    (root / "empty_two").mkdir()
    with pytest.raises(DataError, match="empty_one, empty_two"):
        LabeledFiles.from_folders(root)


def test_labels_are_read_only(files: LabeledFiles) -> None:
    with pytest.raises(ValueError):
        files.labels[0] = 2


def test_inconsistent_fields_are_refused() -> None:
    with pytest.raises(UsageError):
        LabeledFiles((Path("a.png"),), np.array([0, 1]), ("x", "y"))
    with pytest.raises(UsageError):
        LabeledFiles((Path("a.png"),), np.array([2]), ("x", "y"))
    with pytest.raises(UsageError):
        LabeledFiles((Path("a.png"),), np.array([0]), ("x", "x"))


def test_from_annotations(tmp_path: Path) -> None:
    folder = tmp_path / "split1_train" / "annotations"
    folder.mkdir(parents=True)
    first = folder / "a.txt"
    first.write_text("imgs/real/0.png\t0\nimgs/gan one/1.png\t2\n\n")
    second = folder / "b.txt"
    second.write_text("imgs/gan/2.png 1\r\n")
    files = LabeledFiles.from_annotations(first, second)
    assert files.paths == (folder / "imgs/real/0.png", folder / "imgs/gan one/1.png", folder / "imgs/gan/2.png")
    assert files.labels.tolist() == [0, 2, 1]
    assert files.class_names == ("class0", "class1", "class2")
    rooted = LabeledFiles.from_annotations(first, data_root=tmp_path / "data")
    assert rooted.paths[0] == tmp_path / "data" / "imgs/real/0.png"


def test_annotation_labels_are_kept_as_written(tmp_path: Path) -> None:
    """A label no line uses still has its class, so separately read files agree."""
    file = tmp_path / "val.txt"
    file.write_text("a.png\t0\nb.png\t3\n")
    files = LabeledFiles.from_annotations(file)
    assert files.labels.tolist() == [0, 3]
    assert files.num_classes == 4


@pytest.mark.parametrize("bad_line", ["just/a/path.png", "x.png\tgan", "x.png\t-1", "\t3", "x.png\t1.5"])
def test_malformed_annotation_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    file = tmp_path / "train.txt"
    file.write_text(f"ok.png\t0\n\n{bad_line}\nok2.png\t1\n")
    with pytest.raises(DataError) as info:
        LabeledFiles.from_annotations(file)
    assert str(file) in str(info.value) and "line 3" in str(info.value)


def test_annotation_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such annotation file"):
        LabeledFiles.from_annotations(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="no files listed"):
        LabeledFiles.from_annotations(empty)
    with pytest.raises(UsageError):
        LabeledFiles.from_annotations()


def test_subset(files: LabeledFiles) -> None:
    part = files.subset([4, 0])
    assert part.paths == (files.paths[4], files.paths[0])
    assert part.labels.tolist() == [files.labels[4], files.labels[0]]
    assert part.class_names == files.class_names
    mask = files.labels == 2
    assert files.subset(mask).labels.tolist() == [2] * 4
    with pytest.raises(UsageError):
        files.subset([len(files)])


def many_files(counts: list[int]) -> LabeledFiles:
    labels = np.repeat(np.arange(len(counts)), counts)
    paths = tuple(Path(f"{i}.png") for i in range(len(labels)))
    return LabeledFiles(paths, labels, tuple(f"c{k}" for k in range(len(counts))))


def test_split_is_stratified_and_deterministic() -> None:
    files = many_files([10, 20, 5, 1, 2])
    train, val = files.split(0.2, seed=3)
    assert val.counts().tolist() == [2, 4, 1, 0, 1]
    assert train.counts().tolist() == [8, 16, 4, 1, 1]
    assert set(train.paths).isdisjoint(val.paths)
    assert set(train.paths) | set(val.paths) == set(files.paths)
    assert list(train.paths) == sorted(train.paths, key=files.paths.index)
    assert train.class_names == val.class_names == files.class_names
    again_train, again_val = files.split(0.2, seed=3)
    assert again_val.paths == val.paths and again_train.paths == train.paths
    assert files.split(0.2, seed=4)[1].paths != val.paths


def test_split_edge_cases() -> None:
    files = many_files([3, 4])
    train, val = files.split(0.0, seed=0)
    assert len(val) == 0 and len(train) == 7
    with pytest.raises(UsageError):
        files.split(1.0, seed=0)
    with pytest.raises(UsageError):
        files.split(-0.1, seed=0)


# --- balanced_indices --------------------------------------------------------------------


def test_balanced_indices() -> None:
    labels = np.array([0] * 3 + [1] * 7 + [2] * 5 + [5] * 4)
    epoch = balanced_indices(labels, np.random.default_rng(0))
    assert epoch.dtype == np.int64
    assert len(epoch) == len(set(epoch.tolist())) == 4 * 3
    assert np.bincount(labels[epoch]).tolist() == [3, 3, 3, 0, 0, 3]
    np.testing.assert_array_equal(epoch, balanced_indices(labels, np.random.default_rng(0)))
    assert not np.array_equal(epoch, balanced_indices(labels, np.random.default_rng(1)))


def test_balanced_indices_draws_different_members_per_epoch() -> None:
    labels = np.array([0] * 2 + [1] * 50)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(10):
        seen.update(i for i in balanced_indices(labels, rng).tolist() if labels[i] == 1)
    assert len(seen) > 10


def test_balanced_indices_empty() -> None:
    assert len(balanced_indices(np.zeros(0, dtype=np.int64), np.random.default_rng(0))) == 0


# --- TrainingDataset ---------------------------------------------------------------------


def items(dataset: TrainingDataset, order) -> dict[int, np.ndarray]:
    return {i: dataset[i][0].numpy() for i in order}


def test_item_shape_and_label(files: LabeledFiles) -> None:
    dataset = TrainingDataset(files, TrainTransform(CROP), seed=0)
    crop, label = dataset[4]
    assert isinstance(crop, torch.Tensor) and crop.dtype == torch.uint8
    assert crop.shape == (3, CROP, CROP)
    assert label == int(files.labels[4]) and isinstance(label, int)
    with pytest.raises(IndexError):
        dataset[len(files)]


def test_items_depend_only_on_seed_epoch_index(files: LabeledFiles) -> None:
    forward = items(TrainingDataset(files, TrainTransform(CROP), seed=5), range(len(files)))
    backward = items(TrainingDataset(files, TrainTransform(CROP), seed=5), reversed(range(len(files))))
    for i in forward:
        np.testing.assert_array_equal(forward[i], backward[i])
    other_seed = items(TrainingDataset(files, TrainTransform(CROP), seed=6), range(len(files)))
    assert any(not np.array_equal(forward[i], other_seed[i]) for i in forward)


def test_set_epoch_changes_the_draw(files: LabeledFiles) -> None:
    dataset = TrainingDataset(files, TrainTransform(CROP), seed=0)
    first = items(dataset, range(len(files)))
    dataset.set_epoch(1)
    second = items(dataset, range(len(files)))
    assert sum(not np.array_equal(first[i], second[i]) for i in first) > len(files) // 2
    dataset.set_epoch(0)
    for i, crop in items(dataset, range(len(files))).items():
        np.testing.assert_array_equal(crop, first[i])
    with pytest.raises(UsageError):
        dataset.set_epoch(-1)


def load_all(dataset, workers: int, persistent: bool = False, epochs=(0,)) -> list[torch.Tensor]:
    loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=workers, persistent_workers=persistent)
    out = []
    for epoch in epochs:
        dataset.set_epoch(epoch)
        for crops, labels in loader:
            out.append(crops)
            out.append(labels)
    return out


def test_same_batches_with_and_without_workers(files: LabeledFiles) -> None:
    dataset = TrainingDataset(files, TrainTransform(CROP), seed=2)
    plain = load_all(dataset, workers=0, epochs=(0, 1))
    workers = load_all(dataset, workers=2, persistent=True, epochs=(0, 1))
    assert len(plain) == len(workers)
    for a, b in zip(plain, workers):
        assert torch.equal(a, b)


def test_cache_gives_the_same_items(files: LabeledFiles) -> None:
    plain = TrainingDataset(files, TrainTransform(CROP), seed=1)
    cached = TrainingDataset(files, TrainTransform(CROP), seed=1, cache_decoded=True)
    assert cached.check_readable() == []
    for i in range(len(files)):
        assert torch.equal(plain[i][0], cached[i][0])


def test_bad_file_is_named(tree: Path) -> None:
    bad = tree / "gan_b" / "zz_broken.png"
    bad.write_bytes(b"not a png at all")
    files = LabeledFiles.from_folders(tree)
    dataset = TrainingDataset(files, TrainTransform(CROP), seed=0)
    index = files.paths.index(bad)
    with pytest.raises(DataError, match="zz_broken.png"):
        dataset[index]
    failures = dataset.check_readable()
    assert [path for path, _ in failures] == [bad]
    assert failures[0][1]


def test_negative_seed_is_refused(files: LabeledFiles) -> None:
    with pytest.raises(UsageError):
        TrainingDataset(files, TrainTransform(CROP), seed=-1)
