"""The real photographs the zoo is made from, shipped with osma in ``osma_cli/zoo/photos/``.

``photos.csv`` lists each file with its role: ``train`` photos are a generator training
set (``cameras`` or ``kair``); ``heldout`` photos are what the benchmark's generators
re-synthesise and its ``real`` class, cut into square tiles, each photo's tiles going to
one benchmark part (``train``, ``val``, ``test``). ``SOURCES`` beside it gives sources and
licences. Files are checked against the sha256 in ``photos.csv`` when loaded for a build.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osma_cli.data.decode import load_rgb
from osma_cli.errors import DataError

PHOTOS_DIR = Path(__file__).resolve().parent / "photos"
"""The shipped photo folder (package data)."""
INDEX = "photos.csv"
PARTS = ("train", "val", "test")
ROLES = ("train", "heldout")
TILE_GRID = 16
"""Tile origins are multiples of this (the JPEG MCU), so real tiles keep their block phase."""


@dataclass(frozen=True)
class Photo:
    id: str
    path: str
    """Relative to the photo folder, with ``/``."""
    domain: str
    role: str
    part: str
    sha256: str
    source: str = ""
    original_name: str = ""
    licence: str = ""


@dataclass(frozen=True)
class Tile:
    """One square of a held-out photo: the content a benchmark image is made from."""

    photo: Photo
    top: int
    left: int
    size: int

    @property
    def id(self) -> str:
        return f"{self.photo.id}-y{self.top:04d}-x{self.left:04d}"

    @property
    def part(self) -> str:
        return self.photo.part


@dataclass(frozen=True)
class PhotoSet:
    """The photos of a folder with a ``photos.csv`` index."""

    root: Path
    photos: tuple[Photo, ...]

    @classmethod
    def open(cls, root: Path | str | None = None) -> PhotoSet:
        root = Path(root) if root is not None else PHOTOS_DIR
        index = root / INDEX
        if not index.is_file():
            raise DataError(
                f"no photo index {index}",
                hint="the zoo's photos ship with osma in osma_cli/zoo/photos; "
                "reinstall osma (pip install -e .) if they are missing",
            )
        with open(index, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        photos = []
        for number, row in enumerate(rows, start=2):
            try:
                photo = Photo(
                    id=row["id"],
                    path=row["path"],
                    domain=row["domain"],
                    role=row["role"],
                    part=row["part"],
                    sha256=row["sha256"],
                    source=row.get("source", ""),
                    original_name=row.get("original_name", ""),
                    licence=row.get("licence", ""),
                )
            except (KeyError, TypeError):
                raise DataError(f"{index}, line {number}: missing columns") from None
            if photo.role not in ROLES or (photo.role == "heldout") != (photo.part in PARTS):
                raise DataError(
                    f"{index}, line {number}: role {photo.role!r} with part {photo.part!r}",
                    hint="held-out photos need a part (train, val, test); training photos none",
                )
            photos.append(photo)
        ids = [p.id for p in photos]
        if len(set(ids)) != len(ids):
            raise DataError(f"{index}: photo ids repeat")
        return cls(root.resolve(), tuple(photos))

    def file(self, photo: Photo) -> Path:
        return self.root / photo.path

    def training(self, domain: str) -> list[Photo]:
        return [p for p in self.photos if p.role == "train" and p.domain == domain]

    def heldout(self) -> list[Photo]:
        return [p for p in self.photos if p.role == "heldout"]

    def check(self) -> None:
        """Every file present with the sha256 of the index; a ``DataError`` otherwise."""
        for photo in self.photos:
            path = self.file(photo)
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise DataError(
                    f"cannot read zoo photo {path}: {exc.strerror or exc}",
                    hint="reinstall osma; the photos ship with it",
                ) from None
            if digest != photo.sha256:
                raise DataError(
                    f"zoo photo {path} does not match its sha256 in {INDEX}",
                    hint="the file was changed; restore it from the osma sources",
                )

    def digest(self) -> str:
        """One sha256 over the index (which holds every file's sha256)."""
        return hashlib.sha256((self.root / INDEX).read_bytes()).hexdigest()

    def read(self, photo: Photo) -> np.ndarray:
        return load_rgb(self.file(photo))

    def tiles(self, size: int) -> list[Tile]:
        """The tiles of every held-out photo, photo by photo (index order), row-major.

        A photo gives the largest grid of ``size`` squares that fits, centred, with its
        origin on the ``TILE_GRID``; a photo smaller than ``size`` gives none.
        """
        tiles = []
        for photo in self.heldout():
            with_size = _image_size(self.file(photo))
            height, width = with_size
            rows, cols = height // size, width // size
            top0 = ((height - rows * size) // 2) // TILE_GRID * TILE_GRID
            left0 = ((width - cols * size) // 2) // TILE_GRID * TILE_GRID
            tiles += [Tile(photo, top0 + r * size, left0 + c * size, size) for r in range(rows) for c in range(cols)]
        return tiles


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as exc:
        raise DataError(f"cannot read zoo photo {path}: {exc}") from None
    return height, width


def cut(image: np.ndarray, tile: Tile) -> np.ndarray:
    """The pixels of ``tile`` from its photo's decoded ``image``."""
    return np.ascontiguousarray(image[tile.top : tile.top + tile.size, tile.left : tile.left + tile.size])
