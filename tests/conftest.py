"""Shared fixtures: a tiny model saved as osma weights, tiny image trees, an isolated home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CROP = 32


@pytest.fixture(scope="session", autouse=True)
def isolated_session_home(tmp_path_factory) -> Iterator[Path]:
    """Module- and session-scoped fixtures run before ``isolated_home``: without this they
    would write their embedding caches into the real ``~/.osma`` of whoever runs the suite."""
    root = tmp_path_factory.mktemp("session_osma_home")
    empty = root / "no_shipped_weights"
    empty.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OSMA_HOME", str(root / "osma_home"))
        patch.setenv("OSMA_WEIGHTS_DIR", str(empty))
        yield root / "osma_home"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch) -> Path:
    """Every test gets its own $OSMA_HOME and no shipped defaults."""
    home = tmp_path / "osma_home"
    monkeypatch.setenv("OSMA_HOME", str(home))
    empty = tmp_path / "no_shipped_weights"
    empty.mkdir()
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(empty))
    return home


def save_tiny_model(path: Path, *, seed: int = 0, arch: str = "mislnet") -> Path:
    from osma_cli.nets import get_model
    from osma_cli.weights import WeightsMeta, save_weights

    torch.manual_seed(seed)
    model = get_model(arch)
    crop = max(CROP, model.min_input_size)
    save_weights(
        path,
        model,
        WeightsMeta(
            architecture=arch, embedding_dim=model.embedding_dim, crop_size=crop, l2_normalize=False, arch_kwargs={}
        ),
    )
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("weights2") / "other.safetensors", seed=1)


def pattern_image(kind: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Images whose traces differ by construction (smooth vs. checkerboard-textured)."""
    yy, xx = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi)
    base = 128 + 50 * np.sin(xx / 7.0 + phase)[..., None] * np.ones(3)
    if kind == "checker":
        base = base + 40 * (((xx + yy) % 2) * 2 - 1)[..., None]
    elif kind == "stripes":
        base = base + 40 * ((xx % 4 < 2) * 2 - 1)[..., None]
    elif kind == "dots":
        base = base + 60 * (((xx % 3) == 0) & ((yy % 3) == 0))[..., None]
    noise = rng.normal(0, 3, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_images(folder: Path, kind: str, n: int, seed: int, size: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{kind}_{i:02d}.png"
        Image.fromarray(pattern_image(kind, rng, size)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def two_class_tree(tmp_path_factory) -> Path:
    """train/checkergan and train/smoothgan, 6 images of 40 px each; shared: never write in it."""
    root = tmp_path_factory.mktemp("two_class") / "train"
    write_images(root / "checkergan", "checker", 6, seed=2, size=40)
    write_images(root / "smoothgan", "smooth", 6, seed=1, size=40)
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """root/<generator>/ with 5 images each of two easily told-apart kinds."""
    root = tmp_path / "train"
    write_images(root / "smoothgan", "smooth", 5, seed=1)
    write_images(root / "checkergan", "checker", 5, seed=2)
    return root


def deny_listing(monkeypatch, folder: Path) -> None:
    """Make listing ``folder`` fail as a permission error would (tests run as root, where chmod does not)."""
    import os

    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
