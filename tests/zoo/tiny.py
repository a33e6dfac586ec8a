"""A tiny zoo for tests: the default plan with 2 seeds, 4-channel networks, a few steps,
a handful of small photos and 16-pixel tiles. Builds end to end in seconds."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from osma_cli.zoo.recipe import (
    DEFAULT_FAMILIES,
    TrainSettings,
    ZooRecipe,
    default_splits,
)

TILE = 16
SETTINGS = TrainSettings(
    steps=2,
    batch=2,
    crop=16,
    lr=1e-3,
    width=4,
    levels=2,
    latent=2,
    disc_width=4,
    threads=1,
    deadleaves_images=2,
    deadleaves_size=32,
)
FIELDS = (
    "id",
    "path",
    "domain",
    "role",
    "part",
    "width",
    "height",
    "sha256",
    "source",
    "original_name",
    "licence",
    "note",
)


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    xx = np.mgrid[0:height, 0:width][1]
    base = 128 + 60 * np.sin(xx[..., None] / rng.uniform(3, 9) + np.array([0.0, 1.0, 2.0]))
    return np.clip(base + rng.normal(0, 8, size=(height, width, 3)), 0, 255).astype(np.uint8)


def make_photos(root: Path) -> Path:
    """Two training photos per photo set, and held-out photos for each benchmark part."""
    rng = np.random.default_rng(0)
    rows = []
    specs = [
        ("cameras", "train", "", 48, 48, "jpg"),
        ("cameras", "train", "", 40, 56, "jpg"),
        ("kair", "train", "", 40, 40, "png"),
        ("kair", "train", "", 36, 44, "png"),
        ("cameras", "heldout", "train", 32, 32, "jpg"),
        ("kair", "heldout", "train", 16, 32, "png"),
        ("cameras", "heldout", "val", 16, 32, "jpg"),
        ("kair", "heldout", "test", 32, 32, "png"),
        ("cameras", "heldout", "test", 16, 16, "jpg"),
    ]
    for i, (domain, role, part, height, width, suffix) in enumerate(specs):
        rel = f"{domain}/{i:02d}.{suffix}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(rng, height, width)).save(path, quality=90) if suffix == "jpg" else Image.fromarray(
            _photo(rng, height, width)
        ).save(path)
        rows.append(
            {
                "id": f"{domain}-{i:02d}",
                "path": rel,
                "domain": domain,
                "role": role,
                "part": part,
                "width": width,
                "height": height,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "source": "tests",
                "original_name": f"{i}.{suffix}",
                "licence": "CC0-1.0",
                "note": "",
            }
        )
    with open(root / "photos.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root


def tiny_recipe(photos: Path) -> ZooRecipe:
    families = tuple(replace(f, seeds=2) for f in DEFAULT_FAMILIES)
    return ZooRecipe(
        families=families,
        splits=default_splits(families, ("resup", "nearest")),
        training=SETTINGS,
        tile=TILE,
        photos=photos,
    )
