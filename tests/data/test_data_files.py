"""Finding images: explicit paths kept, folders walked sorted, hidden and non-images left out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from osma_cli.data.files import IMAGE_SUFFIXES, class_folders, iter_image_files
from osma_cli.errors import DataError
from tests.conftest import deny_listing


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    touch(
        root,
        "b/2.PNG",
        "b/1.jpg",
        "b/notes.txt",
        "b/.hidden.png",
        "b/.cache/x.png",
        "a/z.JpEg",
        "a/sub/y.tif",
        "a/sub/x.webp",
        "a.png",
        "c/README",
        ".git/h.png",
    )
    (root / "empty").mkdir()
    return root


def names(paths, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_suffixes():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm"} == IMAGE_SUFFIXES


def test_walk_sorted_hidden_skipped_case_insensitive(tree):
    assert names(iter_image_files([tree]), tree) == [
        "a/sub/x.webp",
        "a/sub/y.tif",
        "a/z.JpEg",
        "a.png",
        "b/1.jpg",
        "b/2.PNG",
    ]


def test_explicit_paths_always_yielded_in_order(tree):
    given = [tree / "b/notes.txt", tree / "missing.jpg", tree / "b/.hidden.png", tree / "a"]
    assert names(iter_image_files(given), tree) == [
        "b/notes.txt",
        "missing.jpg",
        "b/.hidden.png",
        "a/sub/x.webp",
        "a/sub/y.tif",
        "a/z.JpEg",
    ]
    assert list(iter_image_files([str(tree / "a.png")])) == [tree / "a.png"]


def test_symlink_loop_walked_once(tree):
    os.symlink(tree / "a", tree / "a/sub/back")
    os.symlink(tree / "nowhere.png", tree / "a/broken.png")
    found = names(iter_image_files([tree / "a"]), tree)
    assert found == ["a/broken.png", "a/sub/x.webp", "a/sub/y.tif", "a/z.JpEg"]


def test_class_folders(tree):
    classes = class_folders(tree)
    assert list(classes) == ["a", "b", "c", "empty"]
    assert names(classes["a"], tree) == ["a/sub/x.webp", "a/sub/y.tif", "a/z.JpEg"]
    assert names(classes["b"], tree) == ["b/1.jpg", "b/2.PNG"]
    assert classes["c"] == [] and classes["empty"] == []


def test_class_folders_errors(tmp_path):
    tmp_path = tmp_path / "root"
    tmp_path.mkdir()
    with pytest.raises(DataError, match="no such folder"):
        class_folders(tmp_path / "nope")
    touch(tmp_path, "file.png", ".hidden/x.png")
    with pytest.raises(DataError, match="not a folder"):
        class_folders(tmp_path / "file.png")
    with pytest.raises(DataError, match="no class folders"):
        class_folders(tmp_path)


def test_unlistable_folder_is_a_data_error(tree, monkeypatch):
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == tree / "b":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match="cannot list .*b: permission denied"):
        list(iter_image_files([tree]))


def test_unlistable_folder_is_reported_and_the_walk_goes_on(tree, monkeypatch):
    locked = tree / "b"
    deny_listing(monkeypatch, locked)
    problems = []
    found = list(iter_image_files([tree], on_error=lambda folder, reason: problems.append((folder, reason))))
    assert problems == [(locked, "cannot list folder: permission denied")]
    assert found and all(locked not in p.parents for p in found)
    with pytest.raises(DataError, match="permission denied"):
        list(iter_image_files([tree]))
