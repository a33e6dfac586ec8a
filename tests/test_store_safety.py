"""Stores you cannot lose: seeding under the lock, full disks, kills mid-write, stale
temporaries, inconsistent values, shipped files, provenance (library level)."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from osma_cli import atomic, references
from osma_cli.errors import ReferenceStoreError
from osma_cli.home import default_references_path
from osma_cli.references import ReferenceStore, Threshold, open_store_for_update
from osma_cli.rules import get_rule
from tests.test_references import FakeMeta

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def small_store(*names: str, rule=None, seed: int = 0) -> ReferenceStore:
    rng = np.random.default_rng(seed)
    store = ReferenceStore.for_weights(FakeMeta(), rule)
    for name in names:
        store.enroll(name, rng.normal(size=(4, 8)))
    return store


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch) -> Path:
    """A shipped folder holding a store with one generator (``realgan``)."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    small_store("realgan").save(folder / "references-fsd.h5")
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(folder))
    return folder


def leftovers(folder: Path) -> list[str]:
    """Temporaries and seed copies in ``folder`` (the lock file is meant to stay)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".seed-" in p.name)


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# 1. seeding ------------------------------------------------------------------------------


def test_slow_seed_never_overwrites_a_confirmed_enrolment(shipped, isolated_home, monkeypatch):
    """A first-use seed whose rename is delayed must not undo an enrolment made meanwhile."""
    real_replace, real_fsync = os.replace, os.fsync
    at_rename, enrolled = threading.Event(), threading.Event()
    fsynced: list[str] = []
    seeder: list[threading.Thread] = []

    def slow_replace(src, dst, *args, **kwargs):
        if threading.current_thread() in seeder:
            at_rename.set()
            enrolled.wait(1.0)  # gives the enrolment its chance; under the lock it has none
        return real_replace(src, dst, *args, **kwargs)

    def recording_fsync(fd):
        fsynced.append(fd_path(fd))
        return real_fsync(fd)

    monkeypatch.setattr(os, "replace", slow_replace)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    errors: list[BaseException] = []

    def seed() -> None:
        try:
            default_references_path()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def enrol() -> None:  # another process's `osma enroll --refs ~/.osma/references.h5`
        try:
            at_rename.wait(5)
            with open_store_for_update(isolated_home / "references-fsd.h5", create_for=FakeMeta()) as store:
                store.enroll("mine", np.random.default_rng(3).normal(size=(5, 8)))
            enrolled.set()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    seeding = threading.Thread(target=seed)
    seeder.append(seeding)
    other = threading.Thread(target=enrol)
    seeding.start()
    other.start()
    seeding.join(10)
    other.join(10)
    assert not errors
    assert sorted(ReferenceStore.load(isolated_home / "references-fsd.h5").names) == ["mine", "realgan"]
    assert any(".references-fsd.h5." in p and p.endswith(".tmp") for p in fsynced), "seed copy not fsynced"
    assert leftovers(isolated_home) == []


def test_seed_copy_failing_leaves_nothing(shipped, isolated_home, monkeypatch):
    import shutil

    def half_copy(src, dst, *args, **kwargs):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(shutil, "copyfile", half_copy)
    with pytest.raises(ReferenceStoreError, match="no space left") as info:
        default_references_path()
    assert isinstance(info.value, OSError)  # callers catching OSError still do
    assert not (isolated_home / "references-fsd.h5").exists()
    assert leftovers(isolated_home) == []


# 2. full disk at each write step ---------------------------------------------------------


def inject(monkeypatch, step: str, fault) -> None:
    """Make the store write meet ``fault()`` at ``step`` (call it to raise, or to die)."""
    if step == "hdf5":

        def broken(store, path):
            Path(path).write_bytes(b"\x89HDF partial")
            fault()

        monkeypatch.setattr(references, "_write_hdf5", broken)
    elif step == "fsync":
        real = os.fsync

        def broken_fsync(fd):
            if fd_path(fd).endswith(".tmp"):
                fault()
            return real(fd)

        monkeypatch.setattr(os, "fsync", broken_fsync)
    elif step == "rename":
        real_replace = os.replace

        def broken_replace(src, dst, *args, **kwargs):
            if str(src).endswith(".tmp"):
                fault()
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", broken_replace)
    elif step == "after-rename":
        monkeypatch.setattr(atomic, "fsync_dir", lambda folder: fault())
    else:
        raise ValueError(step)


def raise_enospc():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("step", ["hdf5", "fsync", "rename"])
def test_full_disk_at_each_step_is_a_clean_error_and_changes_nothing(tmp_path, monkeypatch, step):
    path = tmp_path / "refs.h5"
    small_store("g").save(path)
    before = path.read_bytes()
    inject(monkeypatch, step, raise_enospc)
    with pytest.raises(ReferenceStoreError, match="no space left on device") as info:
        with open_store_for_update(path) as store:
            store.enroll("h", np.random.default_rng(1).normal(size=(3, 8)))
    assert "free space" in info.value.hint and str(tmp_path) in info.value.hint
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


# 4. kills inside a write, stale temporaries ------------------------------------------------


def _killed_writer(path: str, step: str) -> None:
    import pytest as _pytest

    with _pytest.MonkeyPatch.context() as mp_:
        inject(mp_, step, lambda: os.kill(os.getpid(), signal.SIGKILL))
        with open_store_for_update(path) as store:
            store.enroll("h", np.random.default_rng(1).normal(size=(3, 8)))


@pytest.mark.parametrize("step", ["hdf5", "fsync", "rename", "after-rename"])
def test_sigkill_inside_a_write_loses_nothing_and_leaves_nothing(tmp_path, step):
    path = tmp_path / "refs.h5"
    small_store("g").save(path)
    child = mp.get_context("fork").Process(target=_killed_writer, args=(str(path), step))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    expected = ["g", "h"] if step == "after-rename" else ["g"]
    assert ReferenceStore.load(path).names == expected  # the old store or the new, whole
    if step != "after-rename":
        assert any(f".{child.pid}." in name for name in leftovers(tmp_path))
    with open_store_for_update(path, timeout=5) as store:  # the dead writer's lock is free
        store.enroll("k", np.random.default_rng(2).normal(size=(3, 8)))
    assert leftovers(tmp_path) == []
    assert ReferenceStore.load(path).names == [*expected, "k"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    path = tmp_path / "refs.h5"
    small_store("g").save(path)
    pid = dead_pid()
    dead = tmp_path / f".refs.h5.{pid}.abcd1234.tmp"
    old_seed = tmp_path / f".refs.h5.seed-{pid}"
    live = tmp_path / f".refs.h5.{os.getpid()}.zzzz9999.tmp"
    other_file = tmp_path / f".weights.bin.{pid}.abcd1234.tmp"
    for p in (dead, old_seed, live, other_file):
        p.write_bytes(b"partial")
    with open_store_for_update(path) as store:
        store.enroll("h", np.random.default_rng(1).normal(size=(3, 8)))
    assert not dead.exists() and not old_seed.exists()
    assert live.exists() and other_file.exists()


# 5. inconsistent values ----------------------------------------------------------------------


def edit(path: Path, key: str, value) -> None:
    with h5py.File(path, "r+") as f:
        if np.shape(value) == f[key].shape:
            f[key][...] = value
        else:
            del f[key]
            f.create_dataset(key, data=value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("counts", [0, 4], "count is 0"),
        ("counts", [5, 4], "do not match"),
        ("vector_sums", np.vstack([np.full(8, np.nan), np.ones(8)]), "not finite"),
        ("sq_norm_sums", [0.0, 1.0], "sigma"),
    ],
)
def test_inconsistent_values_are_refused_on_load(tmp_path, key, value, message):
    path = tmp_path / "refs.h5"
    small_store("gan-a", "gan-b").save(path)
    store = ReferenceStore.load(path)
    if key == "sq_norm_sums":  # q = ||s||^2 / n: no spread at all
        s = store.get("gan-a").vector_sum
        value = [float(s @ s) / 4, store.get("gan-b").sq_norm_sum]
    if key == "vector_sums":
        value[1] = store.get("gan-b").vector_sum
    edit(path, key, np.asarray(value))
    with pytest.raises(ReferenceStoreError, match=message) as info:
        ReferenceStore.load(path)
    assert "'gan-a'" in info.value.message and str(path) in info.value.message
    assert "rebuild" in info.value.hint and "refs remove gan-a" in info.value.hint
    assert ReferenceStore.load(path, allow_invalid=["gan-a"]).names == ["gan-a", "gan-b"]
    with open_store_for_update(path, allow_invalid=["gan-a"]) as s:  # so that it can be removed
        s.remove("gan-a")
    assert ReferenceStore.load(path).names == ["gan-b"]


@pytest.mark.parametrize(
    "rule, key, shape",
    [
        ("mahalanobis", "second_moments", (2, 8, 7)),
        ("gmm", "vectors/0", (3, 8)),
    ],
)
def test_wrong_shapes_of_extra_statistics_are_refused(tmp_path, rule, key, shape):
    path = tmp_path / "refs.h5"
    small_store("gan-a", "gan-b", rule=get_rule(rule)).save(path)
    edit(path, key, np.ones(shape))
    with pytest.raises(ReferenceStoreError, match="shape") as info:
        ReferenceStore.load(path)
    assert str(path) in info.value.message


def test_identical_images_are_refused_at_enrolment():
    store = ReferenceStore.for_weights(FakeMeta())
    with pytest.raises(ReferenceStoreError, match="no spread"):
        store.enroll("flat", np.ones((3, 8)))


# 6. shipped files ----------------------------------------------------------------------------


def test_shipped_store_is_never_written(shipped, monkeypatch):
    target = shipped / "references-fsd.h5"
    before = target.read_bytes()
    with pytest.raises(ReferenceStoreError, match="osma ships"):
        with open_store_for_update(target) as store:
            store.remove("realgan")
    with pytest.raises(ReferenceStoreError, match="osma ships") as info:
        small_store("x").save(shipped / "sub" / ".." / "references-fsd.h5")
    assert "copy" in info.value.hint and "OSMA_HOME" in info.value.hint
    monkeypatch.setenv("OSMA_HOME", str(shipped))
    with pytest.raises(ReferenceStoreError, match="osma ships"):
        with open_store_for_update(default_references_path()) as store:
            store.remove("realgan")
    assert target.read_bytes() == before
    assert not (shipped / "references-fsd.h5.lock").exists()


# 8. provenance -----------------------------------------------------------------------------------


def test_history_and_image_hashes_round_trip(tmp_path):
    path = tmp_path / "refs.h5"
    rng = np.random.default_rng(0)
    hashes = [f"{i:064x}" for i in range(6)]
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("g", rng.normal(size=(4, 8)), image_sha256=hashes[:4], command="osma enroll a")
    store.set_threshold(Threshold(value=2.0, method="test"), command="osma calibrate v")
    assert store.new_images("g", [hashes[0], hashes[4], hashes[4]]) == [False, True, False]
    with pytest.raises(ReferenceStoreError, match="already enrolled"):
        store.enroll("g", rng.normal(size=(1, 8)), update=True, image_sha256=hashes[:1])
    store.enroll("g", rng.normal(size=(2, 8)), update=True, image_sha256=hashes[4:], command="osma enroll b")
    store.set_threshold(Threshold(value=3.0, method="again"))
    store.save(path)
    back = ReferenceStore.load(path)
    g = back.get("g")
    assert g.image_sha256 == hashes and g.image_event == [0, 0, 0, 0, 2, 2] and g.unrecorded == 0
    assert [e["event"] for e in back.history] == ["enrol", "calibrate", "update", "calibrate"]
    assert back.history[0]["command"] == "osma enroll a" and back.history[0]["n_images"] == 4
    assert (back.history[1]["old_tau"], back.history[1]["new_tau"]) == (None, 2.0)
    assert (back.history[3]["old_tau"], back.history[3]["new_tau"]) == (2.0, 3.0)
    with open_store_for_update(path) as s:
        s.remove("g", command="osma refs remove g")
    after = ReferenceStore.load(path)
    assert after.history[-1]["event"] == "remove" and after.history[-1]["n_images"] == 6
    with pytest.raises(ReferenceStoreError, match="was removed on"):
        after.get("g")
    with h5py.File(path) as f:  # readable without osma
        events = [json.loads(e) for e in f["provenance/history"].asstr()[()]]
        assert events[-1]["generator"] == "g"


def test_store_without_provenance_still_loads(tmp_path):
    path = tmp_path / "old.h5"
    small_store("g").save(path)
    with h5py.File(path, "r+") as f:
        del f["provenance"]
    old = ReferenceStore.load(path)
    assert old.history == [] and old.provenance_since is None and old.get("g").unrecorded == 4
    with open_store_for_update(path) as store:
        store.enroll("g", np.random.default_rng(5).normal(size=(2, 8)), update=True, image_sha256=["a" * 64, "b" * 64])
    new = ReferenceStore.load(path)
    assert new.provenance_since is not None
    assert new.get("g").unrecorded == 4 and new.get("g").count == 6
