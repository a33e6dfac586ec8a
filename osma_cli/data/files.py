"""Finding image files: explicit paths and folder trees.

Listing is separate from decoding: a file is yielded here and judged there, so every bad
input is reported once, in one way, by ``load_rgb``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from osma_cli.errors import DataError

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"}
)
"""Suffixes (compared in lower case) of the files taken from a folder walk."""

HASH_CHUNK = 1 << 20


def file_sha256(path: Path | str) -> str | None:
    """sha256 of a file's bytes, streamed (provenance, ``--hash``); None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


ListingErrorHandler = Callable[[Path, str], None]
"""Told (folder, reason) for a folder that cannot be listed, when the walk is to go on."""


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(directory: Path, seen: set[tuple[int, int]], on_error: ListingErrorHandler | None = None) -> Iterator[Path]:
    """Image files under ``directory``, depth first, each folder's entries sorted by name.

    ``seen`` holds the (device, inode) of the folders already entered, so a symbolic link
    back to an ancestor (or to a folder walked before) is not followed twice. A folder that
    cannot be listed raises ``DataError``, or with ``on_error`` is passed to it and left out.
    """
    try:
        info = directory.stat()
    except OSError:
        return
    key = (info.st_dev, info.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else str(exc.strerror or exc)
        if on_error is not None:
            on_error(directory, f"cannot list folder: {reason}")
            return
        raise DataError(f"cannot list {directory}: {reason}", hint="fix its permissions or leave it out") from None
    for entry in entries:
        if _is_hidden(entry.name):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            yield from _walk(path, seen, on_error)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def iter_image_files(paths: Iterable[str | Path], *, on_error: ListingErrorHandler | None = None) -> Iterator[Path]:
    """The image files named by ``paths``, in the order given, folders expanded.

    - A path that is not a folder is yielded as is, whatever its extension and even when it
      does not exist: decoding decides, and a missing file is reported like any bad file
      ("no such file") instead of stopping the listing.
    - A folder is walked recursively (symbolic links followed, loops entered once) in
      sorted order; only files with a suffix in ``IMAGE_SUFFIXES`` (any case) are taken,
      and hidden files and folders (name starting with ".") are skipped. A broken link with
      an image suffix is yielded and reported by decoding.
    - Nothing is de-duplicated: a file named twice is yielded twice.

    Raises ``DataError`` when a folder cannot be listed, rather than silently missing part
    of a tree; with ``on_error``, tells it ``(folder, reason)`` instead and goes on, so
    that one unreadable folder is reported like an unreadable file.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path, set(), on_error)
        else:
            yield path


def class_folders(root: str | Path) -> dict[str, list[Path]]:
    """Images of each class in a one-sub-folder-per-class tree, classes sorted by name.

    Each non-hidden sub-folder of ``root`` is a class; its images are found recursively as
    in ``iter_image_files``. Files directly under ``root`` belong to no class and are
    ignored. A class folder without images is kept with ``[]``: the caller decides whether
    that is an error.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"no such folder: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}", hint="give a folder with one sub-folder per class")
    try:
        with os.scandir(root) as scan:
            names = sorted(entry.name for entry in scan if not _is_hidden(entry.name) and entry.is_dir())
    except OSError as exc:
        raise DataError(f"cannot list {root}: {exc.strerror or exc}") from None
    if not names:
        raise DataError(
            f"no class folders in {root}", hint="put the images of each class in a sub-folder named after it"
        )
    return {name: list(iter_image_files([root / name])) for name in names}
