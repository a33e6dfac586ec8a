"""The simulated-camera dataset: deterministic items whose crops are crops of whole-photo renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from osma_cli.data.camera_pipeline import ALIGN, CameraPipeline, make_pipelines
from osma_cli.data.camera_sim import SimulatedCameraDataset
from osma_cli.data.decode import load_rgb
from osma_cli.errors import DataError, UsageError
from tests.data.test_camera_pipeline import textured_image


@pytest.fixture
def photo_files(tmp_path: Path) -> list[Path]:
    paths = []
    for k, size in enumerate((160, 144)):
        path = tmp_path / f"photo{k}.png"
        Image.fromarray(textured_image(size, seed=k)).save(path)
        paths.append(path)
    return paths


def test_dataset_items(photo_files: list[Path]) -> None:
    pipelines = make_pipelines(3, seed=0)
    dataset = SimulatedCameraDataset(photo_files, pipelines, 32, seed=0)
    assert len(dataset) == 6
    assert dataset.labels.tolist() == [0, 1, 2, 0, 1, 2]
    names = dataset.class_names
    assert len(set(names)) == 3
    assert names[1] == f"sim1-{pipelines[1].cfa}-{pipelines[1].demosaic}"
    crop, label = dataset[4]
    assert crop.dtype == torch.uint8 and crop.shape == (3, 32, 32) and label == 1
    with pytest.raises(IndexError):
        dataset[6]
    assert len(SimulatedCameraDataset(photo_files, pipelines, 32, seed=0, samples_per_epoch=50)) == 50


def test_crops_are_crops_of_whole_photo_renders(photo_files: list[Path]) -> None:
    """Rendering only a region around the crop changes no pixel of the crop, including
    with chroma subsampling and the widest filters allowed."""
    widest = CameraPipeline(
        seed=9, cfa="GBRG", demosaic="menon2007", denoise=3.0, sharpen=2.0, gamma=2.4, tone=1.0, jpeg_quality=70
    )
    pipelines = [*make_pipelines(6, seed=5), widest]
    photo = load_rgb(photo_files[0])
    dataset = SimulatedCameraDataset(photo_files[:1], pipelines, 24, seed=1, samples_per_epoch=14)
    for index in range(len(dataset)):
        crop, label = dataset[index]
        pipeline = pipelines[label]
        full, margin = pipeline.render(photo), pipeline.margin
        crop = crop.numpy().transpose(1, 2, 0)
        windows = [
            full[top + margin : top + margin + 24, left + margin : left + margin + 24]
            for top in range(0, 160, ALIGN)
            for left in range(0, 160, ALIGN)
        ]
        assert any(np.array_equal(crop, w) for w in windows if w.shape == crop.shape), index


def test_dataset_is_deterministic_and_epochs_differ(photo_files: list[Path]) -> None:
    def draw(dataset, order):
        return {i: dataset[i][0] for i in order}

    pipelines = make_pipelines(2, seed=0)
    one = SimulatedCameraDataset(photo_files, pipelines, 32, seed=3, samples_per_epoch=8)
    two = SimulatedCameraDataset(photo_files, make_pipelines(2, seed=0), 32, seed=3, samples_per_epoch=8)
    forward, backward = draw(one, range(8)), draw(two, reversed(range(8)))
    assert all(torch.equal(forward[i], backward[i]) for i in range(8))
    one.set_epoch(1)
    later = draw(one, range(8))
    assert sum(not torch.equal(forward[i], later[i]) for i in range(8)) >= 4
    other = SimulatedCameraDataset(photo_files, pipelines, 32, seed=4, samples_per_epoch=8)
    assert any(not torch.equal(forward[i], other[i][0]) for i in range(8))


def test_dataset_same_with_workers(photo_files: list[Path]) -> None:
    dataset = SimulatedCameraDataset(
        photo_files, make_pipelines(3, seed=0), 32, seed=0, samples_per_epoch=6, cache_decoded=True
    )
    assert dataset.check_readable() == []
    results = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=3, num_workers=workers, persistent_workers=workers > 0)
        batches = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            batches.extend(crops for crops, _ in loader)
        results.append(batches)
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert not torch.equal(results[0][0], results[0][2])


def test_small_photo_is_padded(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(textured_image(40)).save(path)
    dataset = SimulatedCameraDataset([path], make_pipelines(2, seed=0), 64, seed=0)
    assert dataset[0][0].shape == (3, 64, 64)


def test_bad_photo_is_named(tmp_path: Path, photo_files: list[Path]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    dataset = SimulatedCameraDataset([bad], make_pipelines(2, seed=0), 32, seed=0)
    with pytest.raises(DataError, match="broken.jpg"):
        dataset[0]
    mixed = SimulatedCameraDataset([photo_files[0], bad], make_pipelines(2, seed=0), 32, seed=0)
    assert [path for path, _ in mixed.check_readable()] == [bad]


def test_dataset_refuses_bad_arguments(photo_files: list[Path]) -> None:
    pipelines = make_pipelines(2, seed=0)
    with pytest.raises(DataError):
        SimulatedCameraDataset([], pipelines, 32, seed=0)
    with pytest.raises(UsageError):
        SimulatedCameraDataset(photo_files, [], 32, seed=0)
    with pytest.raises(UsageError):
        SimulatedCameraDataset(photo_files, pipelines, 0, seed=0)
    with pytest.raises(UsageError):
        SimulatedCameraDataset(photo_files, pipelines, 32, seed=0, samples_per_epoch=0)
