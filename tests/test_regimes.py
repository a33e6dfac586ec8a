"""Compression regimes: routing by a file's own JPEG tables, re-encoded references, one store per regime."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from osma_cli.api import attribute_files, build_references, enroll_generator
from osma_cli.attribution import attribute_embeddings
from osma_cli.cli.app import app
from osma_cli.data.augment import jpeg_recompress
from osma_cli.data.dataset import ImageCropDataset
from osma_cli.embed import Embedder, embed_all
from osma_cli.errors import EXIT_OK, ReferenceStoreError, UsageError
from osma_cli.nets import get_model
from osma_cli.references import ReferenceStore
from osma_cli.regime_store import RegimeStores, load_store
from osma_cli.regimes import LOSSLESS, Regime, file_jpeg_quality, parse_regimes, regimes_for, route
from osma_cli.weights import WeightsMeta, feature_identity, save_weights
from tests.conftest import pattern_image
from tests.pose_fixture import SPLIT, make_pose_fixture

SMALL = {"block": 3, "scales": 2, "window": 48}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, pixels: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save)
    return path


def routed_model(path: Path, qualities=(90,), dim: int = 3, seed: int = 0) -> Path:
    """A descriptor with random (but distinct) projections per regime, saved to ``path``."""
    model = get_model("fsd", **SMALL, projected=True, embedding_dim=dim, jpeg_regimes=list(qualities))
    generator = torch.Generator().manual_seed(seed)
    for regime in model.regimes:
        model.set_projection(
            torch.rand(model.raw_dim, generator=generator, dtype=torch.float64),
            torch.randn(model.raw_dim, dim, generator=generator, dtype=torch.float64),
            regime.jpeg_quality,
        )
    meta = WeightsMeta(
        architecture="fsd",
        embedding_dim=dim,
        crop_size=SMALL["window"],
        l2_normalize=False,
        kind="descriptor",
        arch_kwargs={**SMALL, "projected": True, "jpeg_regimes": list(qualities)},
    )
    save_weights(path, model, meta)
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("regimes") / "train"
    rng = np.random.default_rng(5)
    for kind in ("checker", "smooth", "dots"):
        for i in range(5):
            write(root / f"{kind}gan" / f"{i}.png", pattern_image(kind, rng, 48))
    return root


def test_route_picks_the_nearest_quality_and_flags_far_ones():
    regimes = regimes_for([75, 95, 90])
    assert [r.name for r in regimes] == ["lossless", "jpeg95", "jpeg90", "jpeg75"]
    assert route(None, regimes) == (LOSSLESS, None)
    assert route(90, regimes) == (Regime(90), None)
    assert route(92, regimes)[0] == Regime(90) and route(93, regimes)[0] == Regime(95)
    regime, note = route(50, regimes)
    assert regime == Regime(75) and "far from" in note and "50" in note
    regime, note = route(85, regimes_for([]))
    assert regime == LOSSLESS and "no JPEG regime" in note


def test_regime_lists_are_checked():
    assert parse_regimes("95, 90,75") == (95, 90, 75) and parse_regimes("none") == ()
    for bad in ("95,95", "0", "101", "nine"):
        with pytest.raises(UsageError):
            parse_regimes(bad)


def test_file_jpeg_quality_reads_the_tables_and_never_blocks(tmp_path):
    pixels = pattern_image("smooth", np.random.default_rng(0), 48)
    for quality in (95, 85, 60):
        assert file_jpeg_quality(write(tmp_path / f"q{quality}.jpg", pixels, quality=quality)) == quality
    assert file_jpeg_quality(write(tmp_path / "a.png", pixels)) is None
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert file_jpeg_quality(tmp_path / "junk.jpg") is None
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert file_jpeg_quality(fifo) is None  # would block forever if opened


def test_lossy_compressions_without_a_regime_are_flagged(tmp_path):
    from osma_cli.regimes import file_compression, route_file

    pixels = pattern_image("dots", np.random.default_rng(2), 48)
    regimes = regimes_for([90])
    lossless = write(tmp_path / "a.webp", pixels, lossless=True)
    lossy = write(tmp_path / "b.webp", pixels, quality=80)
    assert file_compression(lossless) == (None, None) and route_file(lossless, regimes) == (LOSSLESS, None)
    regime, note = route_file(lossy, regimes)
    assert regime == LOSSLESS and "lossy WebP" in note and "less reliable" in note
    assert route_file(write(tmp_path / "c.jpg", pixels, quality=90), regimes) == (Regime(90), None)


def test_the_dataset_reencodes_the_whole_image_before_cropping(tmp_path):
    pixels = pattern_image("checker", np.random.default_rng(1), 64)
    path = write(tmp_path / "a.png", pixels)
    _, crops, _ = ImageCropDataset([path], 32, reencode_quality=80)[0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80, subsampling="4:2:0")
    expected = np.asarray(Image.open(buffer).convert("RGB"))[16:48, 16:48]
    np.testing.assert_array_equal(crops[0].permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(jpeg_recompress(pixels, 80), np.asarray(Image.open(buffer).convert("RGB")))


def test_identities_of_regimes(tmp_path):
    plain = get_model("fsd", **SMALL, projected=True, embedding_dim=3)
    routed = get_model("fsd", **SMALL, projected=True, embedding_dim=3, jpeg_regimes=[90])
    assert feature_identity(plain) == feature_identity(routed)  # same raw descriptors
    assert "jpeg_regimes" not in plain.identity_config() and routed.identity_config()["jpeg_regimes"] == [90]
    meta = WeightsMeta(architecture="fsd", embedding_dim=3, crop_size=48, l2_normalize=False, kind="descriptor")
    embedder = Embedder(routed, meta)
    ids = {embedder.for_regime(r).feature_identity for r in embedder.regimes}
    assert len(ids) == 2 and embedder.for_regime(LOSSLESS).feature_identity == feature_identity(routed)
    with pytest.raises(UsageError, match="no jpeg75 regime"):
        embedder.for_regime(Regime(75))
    assert not embedder.for_regime(Regime(90)).is_routed


def test_each_regime_projects_with_its_own_projection(tmp_path, tree):
    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    paths = sorted((tree / "checkergan").glob("*.png"))[:2]
    lossless, _ = embed_all(embedder.for_regime(LOSSLESS), paths, workers=0)
    jpeg, _ = embed_all(embedder.for_regime(Regime(90)), paths, workers=0)
    raw = [
        embedder.model.describe(
            torch.from_numpy(jpeg_recompress(np.asarray(Image.open(p)), 90)).permute(2, 0, 1)[None].double() / 255
        )
        for p in paths
    ]
    expected = torch.cat([embedder.model.project(r, 90) for r in raw]).numpy()
    np.testing.assert_allclose(jpeg, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(lossless, jpeg)


def test_build_gives_one_store_per_regime_and_enrolment_equals_building(tmp_path, tree):
    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    from osma_cli.embed import EmbedOptions

    options = EmbedOptions(workers=0)
    built = build_references(embedder, tree, options=options).store
    assert isinstance(built, RegimeStores) and list(built.stores) == ["lossless", "jpeg90"]
    path = tmp_path / "refs.h5"
    built.save(path)
    loaded = load_store(path)
    assert isinstance(loaded, RegimeStores)
    for name in ("lossless", "jpeg90"):
        a, b = built.stores[name], loaded.stores[name]
        assert a.names == b.names and a.threshold.value == pytest.approx(b.threshold.value)
        np.testing.assert_allclose(a.centroids(), b.centroids())
    assert not np.allclose(built.stores["lossless"].centroids(), built.stores["jpeg90"].centroids())

    enrolled = tmp_path / "enrolled.h5"
    for name in built.names:
        files = sorted((tree / name).glob("*.png"))
        enroll_generator(embedder, enrolled, name, files[:3], options=options)
        enroll_generator(embedder, enrolled, name, files[3:], update=True, options=options)
    stepwise = load_store(enrolled)
    for regime in ("lossless", "jpeg90"):
        np.testing.assert_allclose(stepwise.stores[regime].centroids(), built.stores[regime].centroids(), atol=1e-9)
        assert [g.count for g in stepwise.stores[regime].generators.values()] == [5, 5, 5]


def test_a_regime_file_is_refused_where_a_single_store_is_expected_and_by_other_models(tmp_path, tree):
    from osma_cli.embed import EmbedOptions

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    path = tmp_path / "refs.h5"
    build_references(embedder, tree, options=EmbedOptions(workers=0)).store.save(path)
    with pytest.raises(ReferenceStoreError, match="per compression regime"):
        ReferenceStore.load(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 3  # older osma: "newer than this osma understands"
    other = Embedder.from_file(routed_model(tmp_path / "o.safetensors", qualities=(75,)), device="cpu")
    with pytest.raises(ReferenceStoreError, match="regimes"):
        load_store(path).check_weights(other.meta)


def test_routed_attribution_scores_each_file_in_its_regime(tmp_path, tree):
    from osma_cli.embed import EmbedOptions

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    options = EmbedOptions(workers=0)
    store = build_references(embedder, tree, options=options).store
    rng = np.random.default_rng(9)
    png = write(tmp_path / "in" / "a.png", pattern_image("checker", rng, 48))
    jpg = write(tmp_path / "in" / "b.jpg", pattern_image("dots", rng, 48), quality=90)
    far = write(tmp_path / "in" / "c.jpg", pattern_image("dots", rng, 48), quality=40)
    taus = {name: single.threshold.value for name, single in store.stores.items()}
    results = list(attribute_files(embedder, store, [png, jpg, far], threshold=taus, options=options))
    assert [r.path for r in results] == [png, jpg, far]
    assert [r.regime for r in results] == ["lossless", "jpeg90", "jpeg90"]
    assert results[0].warnings == () and results[1].warnings == ()
    assert any("far from" in w for w in results[2].warnings)
    for result, regime in zip(results, (LOSSLESS, Regime(90), Regime(90))):
        member = embedder.for_regime(regime)
        vectors, _ = embed_all(member, [result.path], workers=0)
        direct = attribute_embeddings(vectors, store.store_for(regime), threshold=taus[regime.name])[0]
        assert result.attribution.candidate == direct.candidate
        assert result.attribution.score == pytest.approx(direct.score)
        assert result.attribution.threshold == taus[regime.name]


def test_cli_train_build_enroll_calibrate_attribute_benchmark_with_regimes(tmp_path, tree):
    model = tmp_path / "fsd.safetensors"
    result = invoke(
        "train",
        tree,
        "--method",
        "fsd",
        "--out",
        model,
        "--workers",
        0,
        "--descriptor",
        "block=3,scales=2,window=48",
        "--jpeg-regimes",
        "90",
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["regimes"] == ["lossless", "jpeg90"]
    refs = tmp_path / "refs.h5"
    assert invoke("build", tree, "--out", refs, "--model", model, "--workers", 0).exit_code == EXIT_OK
    listed = json.loads(invoke("refs", "list", "--refs", refs, "--json").stdout)
    assert [r["name"] for r in listed["regimes"]] == ["lossless", "jpeg90"]
    assert all(r["threshold"]["value"] > 0 for r in listed["regimes"])

    new = tmp_path / "new"
    rng = np.random.default_rng(11)
    for i in range(4):
        write(new / f"{i}.png", pattern_image("stripes", rng, 48))
    result = invoke("enroll", new, "--name", "stripesgan", "--refs", refs, "--model", model, "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    assert all("stripesgan" in single for single in load_store(refs).stores.values())

    val = tmp_path / "val"
    shutil.copytree(tree, val)
    result = invoke("calibrate", val, "--refs", refs, "--model", model, "--workers", 0, "--json")
    assert result.exit_code == EXIT_OK, result.output
    calibrated = json.loads(result.stdout)
    assert [r["name"] for r in calibrated["regimes"]] == ["lossless", "jpeg90"]
    stored = load_store(refs)
    assert stored.stores["jpeg90"].threshold.value == pytest.approx(calibrated["regimes"][1]["threshold"]["value"])

    inputs = tmp_path / "inputs"
    write(inputs / "a.png", pattern_image("checker", rng, 48))
    write(inputs / "b.jpg", pattern_image("checker", rng, 48), quality=88)
    result = invoke("attribute", inputs, "--model", model, "--refs", refs, "--json", "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["a.png"]["regime"] == "lossless" and records["b.jpg"]["regime"] == "jpeg90"
    assert records["b.jpg"]["threshold"] == pytest.approx(stored.stores["jpeg90"].threshold.value)
    table = invoke("attribute", inputs, "--model", model, "--refs", refs, "--workers", 0)
    assert "jpeg90" in table.stdout and "per regime" in table.stdout
    info = invoke("info", "--model", model, "--refs", refs)
    assert "per regime" in info.stdout and "jpeg90" in info.stdout
    assert invoke("refs", "remove", "stripesgan", "--refs", refs, "--yes").exit_code == EXIT_OK
    after = load_store(refs)
    assert all("stripesgan" not in single for single in after.stores.values())
    assert all(single.history[-1]["event"] == "remove" for single in after.stores.values())


def test_benchmark_of_a_model_with_regimes_runs_in_the_test_images_regime(tmp_path, tree):
    root = make_pose_fixture(tmp_path / "pose", n_per_class=4, size=48)
    model = routed_model(tmp_path / "m.safetensors")
    result = invoke("benchmark", SPLIT, "--data-root", root, "--model", model, "--workers", 0, "--json")
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["regime"] == "lossless"
    from osma_cli.evaluation.sources import load_pose_split

    split = load_pose_split(root, SPLIT)
    for image in split.test_known + split.test_unknown:
        Image.open(image.path).convert("RGB").save(image.path, format="JPEG", quality=90)
    result = invoke("benchmark", SPLIT, "--data-root", root, "--model", model, "--workers", 0, "--json", "--no-cache")
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["regime"] == "jpeg90"
    first = split.test_known[0].path
    Image.open(first).convert("RGB").save(first, format="PNG")
    result = invoke("benchmark", SPLIT, "--data-root", root, "--model", model, "--workers", 0, "--no-cache", "--json")
    assert result.exit_code == EXIT_OK, result.output
    mixed = json.loads(result.stdout)
    assert mixed["regime"] == "lossless, jpeg90" and mixed["threshold"]["value"] == 1.0
    assert mixed["score"].endswith("/ regime tau")


def test_a_mixed_test_set_is_scored_relative_to_each_regimes_tau(tmp_path):
    """Independent computation: each regime's run on its own test images, scores divided by its tau."""
    from dataclasses import replace

    from osma_cli.evaluation.protocol import run_benchmark, test_regimes
    from osma_cli.evaluation.sources import load_pose_split

    root = make_pose_fixture(tmp_path / "pose", n_per_class=4, size=48)
    split = load_pose_split(root, SPLIT)
    for image in split.test_unknown[::2] + split.test_known[::2]:
        Image.open(image.path).convert("RGB").save(image.path, format="JPEG", quality=90)
    from osma_cli.embed import EmbedOptions

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    options = EmbedOptions(workers=0)
    groups = test_regimes(embedder, split)
    assert [r.name for r in groups] == ["lossless", "jpeg90"]
    run = run_benchmark(embedder, split, options=options)
    expected = []
    for regime, (known, unknown) in groups.items():
        alone = run_benchmark(
            embedder.for_regime(regime), replace(split, test_known=known, test_unknown=unknown), options=options
        )
        expected.append(alone.scores / alone.threshold.value)
    np.testing.assert_allclose(run.scores, np.concatenate(expected), rtol=1e-9)


def test_routed_attribution_with_one_threshold_applies_it_to_every_regime(tmp_path, tree):
    """``threshold`` may be one float (as --threshold is) also with regimes: it used to be indexed by
    the regime's name (TypeError: 'float' object is not subscriptable)."""
    from osma_cli.embed import EmbedOptions

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    options = EmbedOptions(workers=0)
    store = build_references(embedder, tree, options=options).store
    rng = np.random.default_rng(9)
    png = write(tmp_path / "in" / "a.png", pattern_image("checker", rng, 48))
    jpg = write(tmp_path / "in" / "b.jpg", pattern_image("dots", rng, 48), quality=90)
    results = list(attribute_files(embedder, store, [png, jpg], threshold=1.5, options=options))
    assert [r.regime for r in results] == ["lossless", "jpeg90"]
    assert [r.attribution.threshold for r in results] == [1.5, 1.5]


def test_per_regime_thresholds_are_refused_for_a_store_without_regimes(tmp_path, tree):
    from osma_cli.embed import EmbedOptions

    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors"), device="cpu")
    options = EmbedOptions(workers=0)
    store = build_references(embedder, tree, options=options).store
    lossless = embedder.for_regime(LOSSLESS)
    png = write(tmp_path / "in" / "a.png", pattern_image("checker", np.random.default_rng(9), 48))
    with pytest.raises(UsageError, match="per regime"):
        list(attribute_files(lossless, store.stores["lossless"], [png], threshold={"lossless": 1.5}, options=options))
