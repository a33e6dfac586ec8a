"""Stores you cannot lose, through the commands: full disks and read-only homes end in one
clean message, shipped files are never written, removal asks first, provenance is shown."""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from osma_cli.references import ReferenceStore
from tests.conftest import write_images
from tests.test_store_safety import inject, leftovers, raise_enospc

runner = CliRunner()


def invoke(*args, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def store(built_store: Path) -> Path:
    return built_store


@pytest.fixture
def shipped(tmp_path: Path, store: Path, tiny_weights: Path, monkeypatch) -> Path:
    """A shipped folder with the tiny model as default and a store made with it."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    shutil.copyfile(store, folder / "references-fsd.h5")
    shutil.copyfile(tiny_weights, folder / "osma-fsd.safetensors")
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture
def new_images(tmp_path: Path) -> Path:
    folder = tmp_path / "stripegan"
    write_images(folder, "stripes", 3, seed=5)
    return folder


def says(stream: str, *needles) -> bool:
    """Each needle in ``stream``, however rich folded the lines (whitespace is ignored)."""
    text = "".join(stream.split())
    return all("".join(str(n).split()) in text for n in needles)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_only(monkeypatch, folder: Path) -> None:
    """Make writes under ``folder`` fail as on a read-only file system (tests run as root,
    where chmod blocks nothing)."""
    root = str(folder)

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(root)
        except TypeError:  # a file descriptor
            return False

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_os_open, real_open, real_mkdir = os.open, builtins.open, os.mkdir

    def os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def py_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    monkeypatch.setattr(io, "open", py_open)
    monkeypatch.setattr(os, "mkdir", mkdir)


# 2. full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["hdf5", "fsync", "rename"])
def test_full_disk_enroll_and_remove_exit_1_and_change_nothing(store, tiny_weights, new_images, monkeypatch, step):
    before = store.read_bytes()
    inject(monkeypatch, step, raise_enospc)
    enrolled = invoke(
        "enroll", new_images, "--name", "stripegan", "--refs", store, "--model", tiny_weights, "--workers", 0
    )
    removed = invoke("refs", "remove", "smoothgan", "--refs", store, "--yes")
    for result in (enrolled, removed):
        assert result.exit_code == EXIT_ERROR
        assert says(result.stderr, "no space left on device") and "Traceback" not in result.stderr
    assert store.read_bytes() == before
    assert leftovers(store.parent) == []


def test_full_disk_while_seeding(shipped, isolated_home, new_images, monkeypatch):
    def half_copy(src, dst, *args, **kwargs):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(shutil, "copyfile", half_copy)
    enrolled = invoke("enroll", new_images, "--name", "stripegan", "--workers", 0)
    assert enrolled.exit_code == EXIT_ERROR and says(enrolled.stderr, "no space left on device")
    assert leftovers(isolated_home) == [] and not (isolated_home / "references-fsd.h5").exists()
    attributed = invoke("attribute", new_images, "--workers", 0, "--json")  # reading still works
    assert attributed.exit_code == EXIT_OK, attributed.stderr
    assert says(attributed.stderr, "shipped reference store") and says(attributed.stderr, "read-only")
    assert len(attributed.stdout.strip().splitlines()) == 3


# 3. read-only home ---------------------------------------------------------------------------


def test_read_only_home_reads_from_the_shipped_store_and_says_where_it_cannot_write(
    shipped, isolated_home, new_images, monkeypatch
):
    read_only(monkeypatch, isolated_home)
    attributed = invoke("attribute", new_images, "--workers", 0)
    assert attributed.exit_code == EXIT_OK, attributed.stderr
    assert says(attributed.stderr, "read-only file system") and says(attributed.stderr, str(shipped))
    assert invoke("refs", "list").exit_code == EXIT_OK
    enrolled = invoke("enroll", new_images, "--name", "stripegan", "--workers", 0)
    assert enrolled.exit_code == EXIT_ERROR
    assert says(enrolled.stderr, str(isolated_home)) and says(enrolled.stderr, "read-only file system")
    assert "Traceback" not in enrolled.stderr


def test_read_only_home_with_a_store_already_there(shipped, isolated_home, new_images, monkeypatch):
    assert invoke("refs", "list").exit_code == EXIT_OK  # seeds the user's store
    read_only(monkeypatch, isolated_home)
    assert invoke("attribute", new_images, "--workers", 0).exit_code == EXIT_OK
    removed = invoke("refs", "remove", "smoothgan", "--yes")
    assert removed.exit_code == EXIT_ERROR and says(removed.stderr, str(isolated_home))


# 5. inconsistent values ------------------------------------------------------------------------


def test_a_count_set_to_zero_is_refused_not_scored_as_unknown(store, tiny_weights, new_images):
    with h5py.File(store, "r+") as f:
        f["counts"][0] = 0
    result = invoke("attribute", new_images, "--refs", store, "--model", tiny_weights, "--workers", 0, "--json")
    assert result.exit_code == EXIT_ERROR and result.stdout == ""
    assert says(result.stderr, "'checkergan'", "inconsistent", "refs remove")
    assert invoke("refs", "remove", "checkergan", "--refs", store, "--yes").exit_code == EXIT_OK
    assert ReferenceStore.load(store).names == ["smoothgan"]


# 6. shipped files ------------------------------------------------------------------------------------


def test_shipped_store_is_never_written(shipped, tmp_path, new_images, image_tree, monkeypatch):
    target = shipped / "references-fsd.h5"
    before = digest(target)
    for args in (
        ["enroll", new_images, "--name", "stripegan", "--refs", target, "--workers", 0],
        ["refs", "remove", "smoothgan", "--refs", target, "--yes"],
        ["build", image_tree, "--out", target, "--force", "--workers", 0],
        ["calibrate", image_tree, "--refs", target, "--workers", 0],
    ):
        result = invoke(*args)
        assert result.exit_code == EXIT_ERROR, args
        assert says(result.stderr, "osma ships") and says(result.stderr, "copy it"), args
    monkeypatch.setenv("OSMA_HOME", str(shipped))
    result = invoke("enroll", new_images, "--name", "stripegan", "--workers", 0)
    assert result.exit_code == EXIT_ERROR and says(result.stderr, "osma ships")
    assert digest(target) == before
    assert sorted(p.name for p in shipped.iterdir()) == ["osma-fsd.safetensors", "references-fsd.h5"]


# 7. removal asks --------------------------------------------------------------------------------------


def test_remove_asks_on_a_terminal_and_refuses_without_one(store, monkeypatch):
    from osma_cli.cli import references as cli_refs

    refused = invoke("refs", "remove", "smoothgan", "--refs", store)
    assert refused.exit_code == EXIT_USAGE and says(refused.stderr, "--yes")
    monkeypatch.setattr(cli_refs, "stdin_is_terminal", lambda: True)
    declined = invoke("refs", "remove", "smoothgan", "--refs", store, input="n\n")
    assert declined.exit_code == EXIT_ERROR and says(declined.stderr, "nothing was removed")
    assert ReferenceStore.load(store).names == ["checkergan", "smoothgan"]
    accepted = invoke("refs", "remove", "smoothgan", "--refs", store, input="y\n")
    assert accepted.exit_code == EXIT_OK and says(accepted.stderr, "5 images")
    after = ReferenceStore.load(store)
    assert after.names == ["checkergan"]
    assert after.history[-1]["event"] == "remove" and after.history[-1]["generator"] == "smoothgan"


# 8. provenance ------------------------------------------------------------------------------------------


def test_enrolment_records_hashes_and_history_and_skips_what_is_there(store, tiny_weights, new_images, tmp_path):
    base = ["--refs", store, "--model", tiny_weights, "--workers", 0]
    assert invoke("enroll", new_images, "--name", "stripegan", *base).exit_code == EXIT_OK
    for _ in range(2):  # the same images again: counted once
        again = invoke("enroll", new_images, "--name", "stripegan", "--update", *base)
        assert again.exit_code == EXIT_OK
        assert says(again.stderr, "skipped 3 images already enrolled in stripegan")
    more = tmp_path / "more"
    extra = write_images(more, "stripes", 2, seed=9)
    shutil.copyfile(extra[0], more / "copy.png")  # the same bytes under another name
    assert invoke("enroll", new_images, more, "--name", "stripegan", "--update", *base).exit_code == EXIT_OK
    shown = json.loads(invoke("refs", "show", "stripegan", "--json", "--refs", store).stdout)
    assert shown["count"] == 5 and shown["images_unrecorded"] == 0
    files = sorted(new_images.iterdir()) + extra
    assert [i["sha256"] for i in shown["images"]] == [digest(p) for p in files]
    events = [e["event"] for e in shown["history"]]
    assert events == ["calibrate", "enrol", "update"]  # the build's provisional tau, then its own
    assert shown["history"][1]["n_images"] == 3 and shown["history"][2]["n_images"] == 2
    assert shown["images"][-1]["event"] == shown["history"][2]["index"]
    assert all(e["time"] and e["command"].startswith("osma ") for e in shown["history"])
    built = json.loads(invoke("refs", "show", "smoothgan", "--json", "--refs", store).stdout)
    assert [e["event"] for e in built["history"]][:1] == ["build"] and len(built["images"]) == 5
    table = invoke("refs", "show", "stripegan", "--refs", store)
    assert table.exit_code == EXIT_OK and says(table.stdout, "history of stripegan")


def test_store_from_before_provenance_says_so(store):
    with h5py.File(store, "r+") as f:
        del f["provenance"]
    shown = json.loads(invoke("refs", "show", "smoothgan", "--json", "--refs", store).stdout)
    assert shown["history"] == [] and shown["images_unrecorded"] == 5
    assert "provenance not recorded" in shown["provenance_note"]
    assert says(invoke("refs", "show", "smoothgan", "--refs", store).stderr, "provenance not recorded")
