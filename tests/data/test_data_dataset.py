"""Crops through a DataLoader: same crops in order with or without workers, bad files reported."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osma_cli.data.crops import extract_crops
from osma_cli.data.dataset import (
    CropBatch,
    ImageCropDataset,
    collate_crops,
    crop_loader,
    default_workers,
)
from osma_cli.data.decode import load_rgb
from osma_cli.errors import UsageError

CROP = 16


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Good images of several sizes (1 to 6 crops of 16, one smaller than a crop) and bad files."""
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    sizes = [(40, 56), (16, 16), (12, 30), (64, 33), (35, 40), (20, 20), (48, 48)]
    for i, (h, w) in enumerate(sizes):
        path = root / f"good_{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (root / "empty.png").write_bytes(b"")
    (root / "noise.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    paths.insert(1, root / "empty.png")
    paths.insert(4, root / "missing.png")
    paths.insert(5, root / "noise.jpg")
    paths.append(root / "ünïcødé name.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def expected_items(paths, n_crops, small="pad"):
    items = {}
    for i, path in enumerate(paths):
        try:
            items[i] = extract_crops(load_rgb(path), CROP, n_crops, small=small)
        except Exception:
            items[i] = None
    return items


def run_loader(dataset, workers, batch_size=3):
    loader = crop_loader(dataset, batch_size=batch_size, workers=workers)
    return list(loader)


def check_batches(batches, expected, batch_size):
    seen = []
    for b, batch in enumerate(batches):
        assert isinstance(batch, CropBatch)
        start = b * batch_size
        ids = sorted(batch.indices + [i for i, _ in batch.failures])
        assert ids == list(range(start, min(start + batch_size, len(expected))))
        assert batch.indices == sorted(batch.indices)
        assert batch.crops.dtype == torch.uint8 and batch.owners.dtype == torch.int64
        assert batch.crops.shape[1:] == (3, CROP, CROP)
        assert len(batch.owners) == len(batch.crops)
        for k, index in enumerate(batch.indices):
            mine = batch.crops[batch.owners == k].numpy()
            np.testing.assert_array_equal(mine, expected[index])
        for index, reason in batch.failures:
            assert expected[index] is None and isinstance(reason, str) and reason
        seen.extend(ids)
    assert seen == list(range(len(expected)))


@pytest.mark.parametrize("n_crops", [1, 4])
def test_loader_same_crops_in_order_with_and_without_workers(files, n_crops):
    dataset = ImageCropDataset(files, CROP, n_crops)
    expected = expected_items(files, n_crops)
    serial = run_loader(dataset, workers=0)
    parallel = run_loader(dataset, workers=2)
    check_batches(serial, expected, 3)
    check_batches(parallel, expected, 3)
    assert len(serial) == len(parallel)
    for a, b in zip(serial, parallel):
        assert torch.equal(a.crops, b.crops) and torch.equal(a.owners, b.owners)
        assert a.indices == b.indices and a.failures == b.failures


def test_items_and_failure_reasons(files):
    dataset = ImageCropDataset(files, CROP, 2)
    assert len(dataset) == len(files)
    reasons = {
        dataset.path(i).name: item for i, item, _ in (dataset[i] for i in range(len(files))) if isinstance(item, str)
    }
    assert reasons == {
        "empty.png": "empty file (0 bytes)",
        "missing.png": "no such file",
        "noise.jpg": "not an image: unrecognised or unsupported format",
    }
    index, crops, warnings = dataset[0]
    assert warnings == ()
    assert index == 0 and crops.shape == (2, 3, CROP, CROP) and crops.dtype == torch.uint8


def test_small_images_skipped_with_reason(files):
    dataset = ImageCropDataset(files, CROP, small="skip")
    batches = run_loader(dataset, workers=0, batch_size=4)
    failures = dict(f for batch in batches for f in batch.failures)
    small = files.index(files[0].parent / "good_2.png")
    assert failures[small] == ("image is 30x12, smaller than the crop size 16 (small images are skipped)")
    check_batches(batches, expected_items(files, 1, small="skip"), 4)


def test_paths_survive_storage_and_pickling(files):
    dataset = ImageCropDataset(iter(files), CROP)
    assert [dataset.path(i) for i in range(len(files))] == files
    assert dataset.path(-1) == files[-1]
    with pytest.raises(IndexError):
        dataset.path(len(files))
    clone = pickle.loads(pickle.dumps(dataset))
    assert [clone.path(i) for i in range(len(files))] == files


def test_all_failed_batch_and_empty_dataset(tmp_path):
    dataset = ImageCropDataset([tmp_path / "a.png", tmp_path / "b.png"], CROP)
    [batch] = run_loader(dataset, workers=0)
    assert batch.crops.shape == (0, 3, CROP, CROP) and batch.owners.shape == (0,)
    assert batch.indices == [] and [i for i, _ in batch.failures] == [0, 1]
    assert run_loader(ImageCropDataset([], CROP), workers=0) == []


def test_collate_owners():
    items = [
        (5, torch.zeros(2, 3, 4, 4, dtype=torch.uint8)),
        (6, "bad"),
        (7, torch.ones(3, 3, 4, 4, dtype=torch.uint8)),
    ]
    batch = collate_crops(items)
    assert batch.indices == [5, 7] and batch.failures == [(6, "bad")]
    assert batch.owners.tolist() == [0, 0, 1, 1, 1]
    assert batch.crops[2:].eq(1).all() and batch.crops[:2].eq(0).all()


def test_pin_memory_keeps_the_batch_type(monkeypatch):
    pinned = []

    def fake_pin(self):
        pinned.append(self)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batch = collate_crops([(0, torch.ones(2, 3, 4, 4, dtype=torch.uint8)), (1, "bad")])
    out = batch.pin_memory()
    assert isinstance(out, CropBatch) and len(pinned) == 2
    assert torch.equal(out.crops, batch.crops) and torch.equal(out.owners, batch.owners)
    assert out.indices == [0] and out.failures == [(1, "bad")]


@pytest.mark.parametrize("cpus,workers", [(1, 0), (2, 1), (4, 3), (9, 8), (64, 8)])
def test_default_workers(monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert default_workers() == workers


def test_loader_settings_and_bad_arguments(files):
    dataset = ImageCropDataset(files, CROP)
    loader = crop_loader(dataset, batch_size=4, workers=2)
    assert loader.persistent_workers and loader.prefetch_factor == 2 and loader.num_workers == 2
    assert not crop_loader(dataset, batch_size=4, workers=0).persistent_workers
    with pytest.raises(UsageError):
        crop_loader(dataset, batch_size=0, workers=0)
    with pytest.raises(UsageError):
        crop_loader(dataset, batch_size=1, workers=-1)
    with pytest.raises(UsageError):
        ImageCropDataset(files, 0)
    with pytest.raises(UsageError):
        ImageCropDataset(files, CROP, small="grow")
