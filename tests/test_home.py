"""The user's store is seeded from the shipped one, and the shipped files are never written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.home import default_references_path
from osma_cli.references import ReferenceStore
from osma_cli.weights import read_meta
from tests.conftest import write_images


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seeded_from_shipped_store_and_shipped_untouched(tmp_path, tiny_weights, isolated_home, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    meta = read_meta(tiny_weights)
    store = ReferenceStore.for_weights(meta)
    store.enroll("realgan", np.random.default_rng(0).normal(size=(3, meta.embedding_dim)))
    store.save(shipped / "references-fsd.h5")
    (shipped / "osma-fsd.safetensors").write_bytes(tiny_weights.read_bytes())
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(shipped))
    before = {p.name: digest(p) for p in shipped.iterdir()}

    write_images(tmp_path / "new", "stripes", 3, seed=1)
    result = CliRunner().invoke(
        app, ["enroll", str(tmp_path / "new"), "--name", "stripegan", "--workers", "0"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    user = default_references_path()
    assert user == isolated_home / "references-fsd.h5"
    assert ReferenceStore.load(user).names == ["realgan", "stripegan"]
    assert {p.name: digest(p) for p in shipped.iterdir()} == before


def test_no_shipped_store_means_no_seed(isolated_home):
    path = default_references_path()
    assert not path.exists()


@pytest.fixture(scope="module")
def home_seen_by_a_module_fixture() -> str | None:
    return os.environ.get("OSMA_HOME")


def test_module_scoped_fixtures_get_an_isolated_home(home_seen_by_a_module_fixture, tmp_path_factory) -> None:
    """A module fixture (a detector fitted once for a file's tests) must not cache into ~/.osma."""
    assert home_seen_by_a_module_fixture is not None
    assert Path(home_seen_by_a_module_fixture).is_relative_to(tmp_path_factory.getbasetemp())
