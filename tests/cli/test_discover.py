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
    """A tau below every score: every image is unknown, whatever the tiny model's distances.

    HDBSCAN, whose grouping of the tiny model's vectors needs no distance cut to be right."""
    return invoke(
        "discover",
        *paths,
        "--model",
        tiny_weights,
        "--refs",
        built_store,
        "--workers",
        0,
        "--min-cluster-size",
        3,
        "--threshold",
        1e-9,
        "--method",
        "hdbscan",
        *extra,
    )


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
        vectors = np.stack(
            [it.embedding for it in embedder.embed_files([Path(f) for f in cluster["files"]], workers=0)]
        )
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
    assert sorted(p.name for p in out.iterdir()) == ["cluster-0.png", "cluster-1.png", "clusters.json", "map.png"]


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


def test_out_writes_a_png_map_and_a_record_that_identifies_the_run(unknowns, built_store, tiny_weights, tmp_path):
    import hashlib

    out = tmp_path / "found"
    assert discover([unknowns], built_store, tiny_weights, "--out", out).exit_code == EXIT_OK
    with Image.open(out / "map.png") as image:
        assert image.format == "PNG"
    data = json.loads((out / "clusters.json").read_text())
    assert data["method"] == "hdbscan" and data["distance_cut"] is None and len(data["clusters"]) == 2
    assert data["store"]["sha256"] == hashlib.sha256(built_store.read_bytes()).hexdigest()
    assert data["model_sha256"] == Embedder.from_file(tiny_weights, device="cpu").meta.sha256
    for cluster in data["clusters"]:
        assert cluster["sha256"] == [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in cluster["files"]]


def test_agglomerative_method_groups_the_two_kinds_and_records_its_cut(unknowns, built_store, tiny_weights):
    result = discover([unknowns], built_store, tiny_weights, "--json", "--method", "agglomerative", "--cut-scale", "3")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    store = ReferenceStore.load(built_store)
    assert data["method"] == "agglomerative"
    assert np.isclose(data["distance_cut"]["None"], 3 * np.median(store.sigmas()))
    assert discover([unknowns], built_store, tiny_weights, "--method", "kmeans").exit_code == EXIT_USAGE


@pytest.fixture
def run(unknowns, built_store, tiny_weights, tmp_path) -> Path:
    """A discover run's --out folder, its store copied aside first (the same store twice)."""
    import shutil

    shutil.copy(built_store, tmp_path / "twin.h5")
    out = tmp_path / "found"
    assert discover([unknowns], built_store, tiny_weights, "--out", out).exit_code == EXIT_OK
    return out


def says(text: str, phrase: str) -> bool:
    """Whether stderr holds ``phrase``, whitespace aside (rich wraps long messages, even inside a path)."""
    return "".join(phrase.split()) in "".join(text.split())


def enroll_cluster(run: Path, built_store: Path, tiny_weights: Path, cluster=0, name="newgan", *extra):
    return invoke(
        "discover",
        "--enroll",
        cluster,
        "--name",
        name,
        "--from",
        run,
        "--model",
        tiny_weights,
        "--refs",
        built_store,
        "--workers",
        0,
        *extra,
    )


def test_enrolling_a_cluster_equals_osma_enroll_of_its_files(run, built_store, tiny_weights, tmp_path):
    import hashlib

    cluster = json.loads((run / "clusters.json").read_text())["clusters"][0]
    result = enroll_cluster(run, built_store, tiny_weights, 0, "newgan", "--json")
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["added"] == cluster["size"]
    twin = tmp_path / "twin.h5"
    plain = invoke(
        "enroll", *cluster["files"], "--name", "newgan", "--model", tiny_weights, "--refs", twin, "--workers", 0
    )
    assert plain.exit_code == EXIT_OK, plain.output
    mine, theirs = ReferenceStore.load(built_store), ReferenceStore.load(twin)
    assert mine.names == theirs.names == ["checkergan", "smoothgan", "newgan"]
    for name in mine.names:
        a, b = mine.get(name), theirs.get(name)
        assert a.count == b.count and np.array_equal(a.vector_sum, b.vector_sum)
        assert a.sq_norm_sum == b.sq_norm_sum and a.image_sha256 == b.image_sha256
    assert mine.get("newgan").image_sha256 == [
        hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in cluster["files"]
    ]
    assert [e["event"] for e in mine.history] == [e["event"] for e in theirs.history]
    assert (mine.history[-1]["event"], mine.history[-1]["generator"]) == ("enrol", "newgan")


def test_enrolling_again_from_the_same_run_is_refused_the_store_changed(run, built_store, tiny_weights):
    assert enroll_cluster(run, built_store, tiny_weights, 0, "newgan").exit_code == EXIT_OK
    before = built_store.read_bytes()
    result = enroll_cluster(run, built_store, tiny_weights, 1, "othergan")
    assert result.exit_code == 1 and says(result.stderr, "changed since") and says(result.stderr, "osma discover")
    assert built_store.read_bytes() == before


def test_a_changed_or_vanished_file_is_refused_by_name_and_nothing_is_written(run, built_store, tiny_weights):
    files = [Path(f) for f in json.loads((run / "clusters.json").read_text())["clusters"][0]["files"]]
    before = built_store.read_bytes()
    Image.new("RGB", (48, 48), (1, 2, 3)).save(files[0])
    files[1].unlink()
    result = enroll_cluster(run, built_store, tiny_weights)
    assert result.exit_code == 1
    assert says(result.stderr, f"{files[0].name}: its bytes changed")
    assert says(result.stderr, f"{files[1].name}: vanished")
    assert built_store.read_bytes() == before


def test_a_missing_cluster_other_weights_or_a_bad_call_are_refused(
    run, built_store, tiny_weights, other_weights, unknowns, tmp_path
):
    missing = enroll_cluster(run, built_store, tiny_weights, 9)
    assert missing.exit_code == EXIT_USAGE and says(missing.stderr, "no cluster 9 (clusters in this run: 0, 1)")
    other = enroll_cluster(run, built_store, other_weights)
    assert other.exit_code == 1 and says(other.stderr, "other weights")
    no_name = invoke("discover", "--enroll", 0, "--from", run, "--refs", built_store, "--model", tiny_weights)
    assert no_name.exit_code == EXIT_USAGE and says(no_name.stderr, "--name missing")
    with_paths = invoke(
        "discover",
        unknowns,
        "--enroll",
        0,
        "--name",
        "x",
        "--from",
        run,
        "--refs",
        built_store,
        "--model",
        tiny_weights,
    )
    assert with_paths.exit_code == EXIT_USAGE and says(with_paths.stderr, "no image paths")
    nothing = invoke(
        "discover",
        "--enroll",
        0,
        "--name",
        "x",
        "--from",
        tmp_path / "nowhere",
        "--refs",
        built_store,
        "--model",
        tiny_weights,
    )
    assert nothing.exit_code == EXIT_USAGE and says(nothing.stderr, "no such file")
