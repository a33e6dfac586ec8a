"""``osma discover`` end to end: the tiny model, a store of two generators, unknowns of two other kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.embed import Embedder
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE
from osma_cli.references import ReferenceStore
from tests.conftest import write_images

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def unknowns(tmp_path: Path) -> Path:
    """8 stripes and 8 dots images, kinds the store (checker, smooth) does not know."""
    root = tmp_path / "new"
    write_images(root / "a", "stripes", 8, seed=5)
    write_images(root / "b", "dots", 8, seed=6)
    return root


def discover(paths, built_store: Path, tiny_weights: Path, *extra):
    """A tau below every score: every image is unknown, whatever the tiny model's distances."""
    return invoke("discover", *paths, "--model", tiny_weights, "--refs", built_store, "--workers", 0,
                  "--min-cluster-size", 3, "--threshold", 1e-9, *extra)


def test_json_groups_the_two_kinds_apart(unknowns, built_store, tiny_weights):
    result = discover([unknowns], built_store, tiny_weights, "--json")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert (data["schema"], data["command"], data["n_files"], data["n_unknown"]) == (1, "discover", 16, 16)
    kinds = [{Path(f).name.split("_")[0] for f in c["files"]} for c in data["clusters"]]
    assert sorted(map(sorted, kinds)) == [["dots"], ["stripes"]]
    clustered = [f for c in data["clusters"] for f in c["files"]]
    assert sorted(clustered + data["unclustered"]) == sorted(str(p) for p in unknowns.rglob("*.png"))


def test_distance_is_the_cluster_means_to_the_nearest_centroid(unknowns, built_store, tiny_weights):
    data = json.loads(discover([unknowns], built_store, tiny_weights, "--json").stdout)
    store = ReferenceStore.load(built_store)
    embedder = Embedder.from_file(tiny_weights, device="cpu")
    for cluster in data["clusters"]:
        vectors = np.stack([it.embedding for it in embedder.embed_files([Path(f) for f in cluster["files"]],
                                                                        workers=0)])
        distances = {name: np.linalg.norm(vectors.mean(axis=0) - store.get(name).centroid) for name in store.names}
        assert cluster["nearest"] == min(distances, key=distances.get)
        assert np.isclose(cluster["distance"], distances[cluster["nearest"]], rtol=1e-5)


def test_table_and_out_folder(unknowns, built_store, tiny_weights, tmp_path):
    out = tmp_path / "found"
    result = discover([unknowns], built_store, tiny_weights, "--out", out)
    assert result.exit_code == EXIT_OK, result.output
    assert "16 of 16 images unknown; 2 cluster(s), 0 unclustered" in result.stdout
    assert "stripes_00.png" in result.stdout and "dots_00.png" in result.stdout
    data = json.loads((out / "clusters.json").read_text())
    assert data["command"] == "discover" and len(data["clusters"]) == 2
    for cluster in data["clusters"]:
        with Image.open(out / f"cluster-{cluster['id']}.png") as sheet:
            assert sheet.size == (4 * 96, 2 * 96)
    assert sorted(p.name for p in out.iterdir()) == ["cluster-0.png", "cluster-1.png", "clusters.json"]


def test_missing_path_is_a_usage_error(built_store, tiny_weights, tmp_path):
    assert discover([tmp_path / "absent"], built_store, tiny_weights).exit_code == EXIT_USAGE


def test_bad_file_is_reported_and_exits_3(unknowns, built_store, tiny_weights):
    bad = unknowns / "a" / "broken.png"
    bad.write_bytes(b"not an image")
    result = discover([unknowns], built_store, tiny_weights, "--json")
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED
    assert "broken.png" in result.stderr
    data = json.loads(result.stdout)
    assert [Path(f["path"]).name for f in data["failures"]] == ["broken.png"] and data["n_unknown"] == 16
