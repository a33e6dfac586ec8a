"""The reference store: formulas against numpy, exact incremental enrolment, atomic writes."""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from osma_cli import references
from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.references import ReferenceStore, Threshold, open_store_for_update


@dataclass(frozen=True)
class FakeMeta:
    sha256: str = "a" * 64
    architecture: str = "mislnet"
    embedding_dim: int = 8
    l2_normalize: bool = False


def numpy_reference(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Fang et al.'s reference (README, "How it decides"), written directly:
    mean and sqrt(sum ||x - r||^2 / (n - 1))."""
    r = x.mean(axis=0)
    sigma = np.sqrt(((x - r) ** 2).sum() / (len(x) - 1))
    return r, sigma


def test_centroid_and_sigma_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(37, 8))
    store = ReferenceStore.for_weights(FakeMeta())
    ref = store.enroll("gan", x)
    r, sigma = numpy_reference(x)
    np.testing.assert_allclose(ref.centroid, r, rtol=0, atol=1e-12)
    assert ref.sigma == pytest.approx(sigma, rel=1e-12)


def test_sigma_is_zero_spread_safe_and_needs_two_images():
    assert references.reference_spread(1, np.ones(3), 3.0) == 0.0
    store = ReferenceStore.for_weights(FakeMeta())
    with pytest.raises(ReferenceStoreError, match="at least 2"):
        store.enroll("one", np.ones((1, 8)))


def test_incremental_enrolment_equals_batch_build():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 8)).astype(np.float32) * 50 + 100  # large offset: cancellation risk
    batch = ReferenceStore.for_weights(FakeMeta())
    batch.enroll("g", x)
    steps = ReferenceStore.for_weights(FakeMeta())
    steps.enroll("g", x[:2])
    for start in range(2, 100, 7):
        steps.enroll("g", x[start : start + 7], update=True)
    a, b = batch.get("g"), steps.get("g")
    assert a.count == b.count == 100
    np.testing.assert_allclose(b.centroid, a.centroid, atol=1e-6)
    assert b.sigma == pytest.approx(a.sigma, abs=1e-6)
    r, sigma = numpy_reference(x.astype(np.float64))
    assert b.sigma == pytest.approx(sigma, abs=1e-6)


def test_enrol_refusals():
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("g", np.ones((2, 8)) + np.eye(2, 8))
    with pytest.raises(ReferenceStoreError, match="already enrolled"):
        store.enroll("g", np.zeros((3, 8)))
    with pytest.raises(ReferenceStoreError, match="no such generator"):
        store.enroll("h", np.zeros((3, 8)), update=True)
    with pytest.raises(UsageError, match="shape"):
        store.enroll("h", np.zeros((3, 5)))
    with pytest.raises(UsageError, match="invalid generator name"):
        store.enroll("unknown", np.zeros((3, 8)))
    with pytest.raises(UsageError, match="NaN"):
        store.enroll("h", np.full((3, 8), np.nan))


def test_save_load_round_trip(tmp_path: Path):
    rng = np.random.default_rng(2)
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("stylegan", rng.normal(size=(5, 8)))
    store.enroll("stable diffusion ü", rng.normal(size=(4, 8)))
    store.set_threshold(Threshold(value=2.5, method="test", target=0.95, n_images=9))
    path = tmp_path / "refs.h5"
    store.save(path)
    back = ReferenceStore.load(path)
    assert back.names == store.names
    assert back.threshold == store.threshold
    np.testing.assert_array_equal(back.centroids(), store.centroids())
    np.testing.assert_array_equal(back.sigmas(), store.sigmas())
    assert back.weights_sha256 == store.weights_sha256
    with h5py.File(path) as f:  # readable without osma
        np.testing.assert_allclose(f["centroids"][()], store.centroids())
        assert list(f["counts"][()]) == [5, 4]


def test_failed_write_leaves_previous_store_intact(tmp_path: Path, monkeypatch):
    path = tmp_path / "refs.h5"
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("g", np.arange(16, dtype=float).reshape(2, 8))
    store.save(path)
    before = path.read_bytes()

    real_write = references._write_hdf5

    def crash_mid_write(s, p):
        real_write(s, p)
        with open(p, "r+b") as handle:  # the temp file is half-overwritten, then we die
            handle.truncate(100)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(references, "_write_hdf5", crash_mid_write)
    with pytest.raises(OSError, match="simulated"):
        with open_store_for_update(path) as s:
            s.enroll("h", np.ones((3, 8)) * np.arange(3)[:, None])
    assert path.read_bytes() == before
    assert ReferenceStore.load(path).names == ["g"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_exception_in_update_block_writes_nothing(tmp_path: Path):
    path = tmp_path / "refs.h5"
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("g", np.eye(2, 8))
    store.save(path)
    with pytest.raises(RuntimeError):
        with open_store_for_update(path) as s:
            s.remove("g")
            raise RuntimeError("interrupted")
    assert ReferenceStore.load(path).names == ["g"]


def _enrol_worker(path: str, name: str, seed: int) -> None:
    emb = np.random.default_rng(seed).normal(size=(4, 8))
    with open_store_for_update(path, create_for=FakeMeta()) as store:
        store.enroll(name, emb)


def test_concurrent_enrolments_both_land(tmp_path: Path):
    path = str(tmp_path / "refs.h5")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_enrol_worker, args=(path, f"gen{i}", i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(ReferenceStore.load(path).names) == ["gen0", "gen1", "gen2", "gen3"]


def test_store_for_other_weights_is_refused(tmp_path: Path):
    path = tmp_path / "refs.h5"
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("g", np.eye(2, 8))
    store.save(path)
    other = FakeMeta(sha256="b" * 64)
    with pytest.raises(ReferenceStoreError, match="other weights"):
        ReferenceStore.load(path).check_weights(other, store_path=path)
    with pytest.raises(ReferenceStoreError, match="other weights"):
        with open_store_for_update(path, create_for=other):
            pass


def test_unreadable_store_gives_clear_error(tmp_path: Path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(ReferenceStoreError, match="no reference store"):
        ReferenceStore.load(missing)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(ReferenceStoreError, match="junk.h5"):
        ReferenceStore.load(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(ReferenceStoreError, match="not an osma reference store"):
        ReferenceStore.load(other)


def test_remove(tmp_path: Path):
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("a", np.eye(2, 8))
    store.enroll("b", np.eye(2, 8) * 2)
    store.remove("a")
    assert store.names == ["b"]
    with pytest.raises(ReferenceStoreError, match="no generator named 'a'"):
        store.remove("a")


def test_saved_store_has_umask_permissions(tmp_path: Path):
    import os

    store = ReferenceStore.for_weights(FakeMeta())
    store.save(tmp_path / "refs.h5")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "refs.h5").stat().st_mode & 0o777 == 0o666 & ~umask
