"""The shipped photo set: complete, compact, licensed, and held-out content kept apart."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from osma_cli.errors import DataError
from osma_cli.zoo.photos import PHOTOS_DIR, PhotoSet, cut
from tests.zoo.tiny import make_photos

SHIPPED = PhotoSet.open()


def test_every_shipped_photo_is_there_with_its_digest():
    SHIPPED.check()
    listed = {SHIPPED.file(p) for p in SHIPPED.photos}
    on_disk = {p for p in PHOTOS_DIR.rglob("*") if p.is_file() and p.name not in ("photos.csv", "SOURCES")}
    assert listed == on_disk


def test_shipped_set_is_compact_and_documented():
    size = sum(p.stat().st_size for p in PHOTOS_DIR.rglob("*") if p.is_file())
    assert size < 25 * 2**20
    sources = (PHOTOS_DIR / "SOURCES").read_text()
    assert "CC0" in sources and "MIT License" in sources and "Kai Zhang" in sources
    assert {p.licence for p in SHIPPED.photos} <= {"CC0-1.0", "MIT"}
    assert all(p.source and p.original_name for p in SHIPPED.photos)


def test_held_out_photos_share_no_source_with_training_photos():
    train = [p for p in SHIPPED.photos if p.role == "train"]
    heldout = SHIPPED.heldout()
    assert heldout and train

    def camera(p):
        return p.path.split("/")[1] if p.domain == "cameras" else ""

    def source(p):
        return (p.source, camera(p), p.original_name)

    assert not {source(p) for p in train} & {source(p) for p in heldout}
    assert not {camera(p) for p in train if p.domain == "cameras"} & {
        camera(p) for p in heldout if p.domain == "cameras"
    }
    assert {p.part for p in heldout} == {"train", "val", "test"}


def test_shipped_tiles_are_256_pixel_squares_on_the_mcu_grid():
    tiles = SHIPPED.tiles(256)
    assert len(tiles) == 64
    assert all(t.top % 16 == 0 and t.left % 16 == 0 for t in tiles)
    assert len({t.id for t in tiles}) == len(tiles)
    parts = {part: sum(t.part == part for t in tiles) for part in ("train", "val", "test")}
    assert parts["train"] >= 24 and parts["test"] >= 24 and parts["val"] >= 8


def test_tiles_cut_the_decoded_photo(tmp_path: Path):
    photos = PhotoSet.open(make_photos(tmp_path))
    tile = photos.tiles(16)[0]
    image = photos.read(tile.photo)
    assert np.array_equal(cut(image, tile), image[tile.top : tile.top + 16, tile.left : tile.left + 16])


def test_a_changed_photo_is_caught(tmp_path: Path):
    root = make_photos(tmp_path)
    photos = PhotoSet.open(root)
    path = photos.file(photos.photos[0])
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(DataError, match="does not match its sha256"):
        photos.check()


def test_index_errors(tmp_path: Path):
    with pytest.raises(DataError, match="no photo index"):
        PhotoSet.open(tmp_path)
    root = make_photos(tmp_path / "p")
    with open(root / "photos.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["part"] = "train"  # a training photo with a benchmark part
    with open(root / "photos.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="role"):
        PhotoSet.open(root)
