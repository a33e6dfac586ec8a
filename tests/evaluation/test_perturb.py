"""Perturbations of test images: what each does to pixels, the files they are stored as, and the
benchmark re-run on them with the references clean (``osma benchmark --perturb``)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osma_cli.cache import EmbeddingCache, file_key
from osma_cli.data.augment import jpeg_recompress
from osma_cli.data.compression import jpeg_quality
from osma_cli.data.decode import load_rgb
from osma_cli.data.perturb import (
    STANDARD_SPECS,
    Blur,
    Crop,
    Jpeg,
    Noise,
    Perturbation,
    Resize,
    parse_perturbation,
    parse_perturbations,
    register_perturbation,
)
from osma_cli.embed import Embedder, EmbedOptions
from osma_cli.errors import UsageError
from osma_cli.evaluation.perturbed import folder_name, perturbed_file, perturbed_root, perturbed_split, seed_rng
from osma_cli.evaluation.protocol import run_benchmark
from osma_cli.evaluation.robustness import records, run_perturbed
from osma_cli.evaluation.sources import load_pose_split
from osma_cli.regimes import file_jpeg_quality
from tests.conftest import save_tiny_model
from tests.pose_fixture import SPLIT, make_pose_fixture
from tests.test_regimes import routed_model

OPTIONS = EmbedOptions(workers=0)


def textured(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def rng(seed: int = 0) -> np.random.Generator:
    return seed_rng(hashlib.sha256(str(seed).encode()).digest())


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory) -> Path:
    return make_pose_fixture(tmp_path_factory.mktemp("pose"), n_per_class=4, size=48)


# --------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("spec", STANDARD_SPECS)
def test_every_perturbation_is_deterministic_and_changes_the_pixels(spec):
    perturbation = parse_perturbation(spec)
    pixels = textured()
    first = perturbation.encode(pixels, rng(1))
    assert first == perturbation.encode(pixels, rng(1))
    out = perturbation.apply(pixels, rng(1))
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape != pixels.shape or not np.array_equal(out, pixels)
    with Image.open(io.BytesIO(first)) as image:
        assert image.format == ("JPEG" if spec.startswith("jpeg") else "PNG")
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), out)


def test_only_noise_depends_on_the_seed():
    pixels = textured()
    for spec in STANDARD_SPECS:
        perturbation = parse_perturbation(spec)
        same = perturbation.encode(pixels, rng(1)) == perturbation.encode(pixels, rng(2))
        assert same == (perturbation.name != "noise"), spec


@pytest.mark.parametrize("quality", [90, 75, 50])
def test_jpeg_is_the_projects_round_trip_and_its_file_carries_the_quality(quality):
    pixels = textured()
    data = Jpeg(quality).encode(pixels, rng())
    expected = io.BytesIO()
    Image.fromarray(pixels).save(expected, format="JPEG", quality=quality, subsampling="4:2:0")
    assert data == expected.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        assert jpeg_quality(image) == quality
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), jpeg_recompress(pixels, quality))


@pytest.mark.parametrize(
    "height, width, scale, expected",
    [(48, 64, 0.5, (24, 32)), (48, 64, 0.75, (36, 48)), (45, 33, 0.5, (23, 17)), (3, 3, 0.1, (1, 1))],
)
def test_resize_gives_the_exact_size_and_keeps_a_flat_image_flat(height, width, scale, expected):
    out = Resize(scale).apply(textured(height, width), rng())
    assert out.shape == (*expected, 3)
    flat = np.full((height, width, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(Resize(scale).apply(flat, rng()), np.full((*expected, 3), 77))


def test_resize_averages_like_a_low_pass():
    """Halving a smooth ramp gives (about) the ramp sampled between pixel pairs."""
    ramp = np.tile(np.linspace(20, 230, 64)[None, :, None], (48, 1, 3)).astype(np.uint8)
    out = Resize(0.5).apply(ramp, rng()).astype(np.float64)
    pairs = ramp.astype(np.float64).reshape(48, 32, 2, 3).mean(axis=2)[::2]
    assert np.abs(out[2:-2, 2:-2] - pairs[2:-2, 2:-2]).max() <= 1.0


def test_crop_is_an_exact_grid_aligned_centred_sub_array():
    pixels = textured(48, 64)
    out = Crop(0.5).apply(pixels, rng())
    # by hand: 24 x 32 kept; origins (48-24)/2 = 12 -> 8 and (64-32)/2 = 16 on the 8-pixel grid
    np.testing.assert_array_equal(out, pixels[8:32, 16:48])
    odd = textured(100, 70, seed=3)
    out = Crop(0.5).apply(odd, rng())
    assert out.shape == (50, 35, 3)
    matches = [(t, x) for t in range(0, 51) for x in range(0, 36) if np.array_equal(odd[t : t + 50, x : x + 35], out)]
    assert matches == [(24, 16)] and all(v % 8 == 0 for v in matches[0])


def test_noise_has_the_stated_standard_deviation():
    grey = np.full((128, 128, 3), 128, dtype=np.uint8)
    for sigma in (2.0, 5.0):
        diff = Noise(sigma).apply(grey, rng(4)).astype(np.float64) - 128
        assert abs(diff.mean()) < 0.05
        assert diff.std() == pytest.approx(np.sqrt(sigma**2 + 1 / 12), rel=0.03)  # rounding adds 1/12


def test_blur_removes_high_frequencies_as_a_gaussian_of_that_sigma():
    yy, xx = np.mgrid[0:64, 0:64]
    checker = (128 + 40 * (((xx + yy) % 2) * 2 - 1))[..., None].repeat(3, axis=2).astype(np.uint8)
    out = Blur(1.0).apply(checker, rng()).astype(np.float64)
    # a Gaussian's response at the Nyquist frequency (0.5 cycle/pixel on each axis): exp(-2 pi^2 s^2 (0.25+0.25))
    amplitude = 40 * np.exp(-2 * np.pi**2 * 1.0**2 * 0.5)
    inner = out[8:-8, 8:-8]
    assert np.abs(inner - 128).max() <= amplitude + 0.5
    assert inner.mean() == pytest.approx(128, abs=0.5)

    def spectrum(a):
        return np.abs(np.fft.fft2(a[..., 0] - a[..., 0].mean()))[32, 32]

    assert spectrum(out) < 0.05 * spectrum(checker.astype(np.float64))


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "spec",
    [
        "jpeg:0",
        "jpeg:101",
        "jpeg:90.5",
        "resize:2",
        "resize:1",
        "crop:x",
        "crop:0",
        "blur:-1",
        "noise:nan",
        "foo:1",
        "jpeg",
        "blur:",
    ],
)
def test_bad_specs_are_refused_naming_the_spec(spec):
    with pytest.raises(UsageError) as caught:
        parse_perturbation(spec)
    assert repr(spec) in str(caught.value)


def test_unknown_names_get_the_close_match():
    with pytest.raises(UsageError) as caught:
        parse_perturbation("jepg:90")
    assert "jepg:90" in str(caught.value) and "jpeg" in caught.value.hint


def test_specs_parse_to_canonical_names_and_standard_is_the_sweep():
    assert parse_perturbation(" JPEG:90 ") == Jpeg(90) and parse_perturbation("blur:1.0").spec == "blur:1"
    sweep = parse_perturbations(["standard"])
    assert [p.spec for p in sweep] == [
        "jpeg:90",
        "jpeg:75",
        "jpeg:50",
        "resize:0.75",
        "resize:0.5",
        "blur:1",
        "noise:2",
        "crop:0.5",
    ]
    assert [p.spec for p in parse_perturbations(["crop:0.5", "standard", "noise:2.0"])][:2] == ["crop:0.5", "jpeg:90"]
    assert len(parse_perturbations(["jpeg:90", "jpeg:90.0"])) == 1


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_perturbation("jpeg")(Jpeg)


def test_perturbations_are_plain_values():
    assert isinstance(Jpeg(90), Perturbation) and Jpeg(90) == Jpeg(90) and hash(Crop(0.5)) == hash(Crop(0.5))
    assert sorted([Jpeg(50), Jpeg(90)], key=Perturbation.severity) == [Jpeg(90), Jpeg(50)]
    assert sorted([Blur(2.0), Blur(1.0)], key=Perturbation.severity) == [Blur(1.0), Blur(2.0)]


# --------------------------------------------------------------------------- files and the split


def test_perturbed_files_are_content_addressed_cached_and_keyed_apart(tmp_path, pose_root):
    source = load_pose_split(pose_root, SPLIT).test_known[0].path
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    jpeg = perturbed_file(source, Jpeg(90))
    assert jpeg == perturbed_root() / "jpeg-90" / f"{digest}.jpg"
    assert file_jpeg_quality(jpeg) == 90
    np.testing.assert_array_equal(load_rgb(jpeg), jpeg_recompress(load_rgb(source), 90))
    stamp = jpeg.stat().st_mtime_ns
    assert perturbed_file(source, Jpeg(90)) == jpeg and jpeg.stat().st_mtime_ns == stamp  # not rewritten
    files = {spec: perturbed_file(source, parse_perturbation(spec)) for spec in STANDARD_SPECS}
    assert len(set(files.values())) == len(STANDARD_SPECS)
    keys = {file_key(path) for path in files.values()} | {file_key(source)}
    assert len(keys) == len(STANDARD_SPECS) + 1 and None not in keys
    twin = tmp_path / "twin.png"
    twin.write_bytes(source.read_bytes())
    assert perturbed_file(twin, Crop(0.5)) == files["crop:0.5"]
    assert not list(perturbed_root().rglob("*.tmp"))


def test_an_unreadable_source_is_left_for_the_benchmark_to_report(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert perturbed_file(broken, Jpeg(90)) == broken
    assert perturbed_file(tmp_path / "missing.png", Jpeg(90)) == tmp_path / "missing.png"


def test_the_perturbed_split_moves_only_the_test_images(pose_root, tmp_path):
    split = load_pose_split(pose_root, SPLIT)
    seen = []
    moved = perturbed_split(split, Resize(0.5), root=tmp_path / "p", on_progress=seen.append)
    assert sum(seen) == len(split.test)
    assert moved.train == split.train and moved.val == split.val and moved.class_names == split.class_names
    for before, after in zip(split.test, moved.test):
        assert replace(after, path=before.path) == before
        assert after.path.parent == tmp_path / "p" / folder_name(Resize(0.5)) and after.path.suffix == ".png"
        assert load_rgb(after.path).shape == (24, 24, 3)


# --------------------------------------------------------------------------- the benchmark


def test_perturbed_runs_keep_the_clean_references_and_equal_independent_runs(tmp_path, pose_root):
    embedder = Embedder.from_file(save_tiny_model(tmp_path / "tiny.safetensors"), device="cpu")
    split = load_pose_split(pose_root, SPLIT)
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad")
    chosen = (Jpeg(90), Crop(0.5), Noise(2.0))
    rows = run_perturbed(embedder, split, chosen, model="tiny", options=OPTIONS, cache=cache)
    assert [r.label for r in rows] == ["clean", "jpeg:90", "crop:0.5", "noise:2"]
    clean = run_benchmark(embedder, split, options=OPTIONS)
    np.testing.assert_allclose(rows[0].run.scores, clean.scores, rtol=1e-5)
    for row in rows[1:]:
        assert row.run.split.train == split.train and row.run.split.val == split.val
        np.testing.assert_allclose(row.run.store.centroids(), clean.store.centroids(), rtol=1e-5)
        assert row.run.threshold.value == pytest.approx(clean.threshold.value, rel=1e-6)
        alone = run_benchmark(embedder, perturbed_split(split, row.perturbation), options=OPTIONS)
        np.testing.assert_allclose(row.run.scores, alone.scores, rtol=1e-5)
        assert row.metrics()["auc"] == pytest.approx(alone.report.auc)
    assert len(cache) == len(split.train) + len(split.val) + len(split.test) * (1 + len(chosen))
    data = records(rows)
    assert data[0]["kept"] == {k: (1.0 if data[0][k] else None) for k in ("accuracy", "auc", "oscr", "crr")}
    assert data[1]["perturbation"] == "jpeg:90" and data[1]["name"] == "jpeg" and data[1]["strength"] == 90
    assert data[1]["kept"]["auc"] == pytest.approx(data[1]["auc"] / data[0]["auc"])


def test_jpeg_test_images_land_in_the_jpeg_regime_of_a_routed_model(tmp_path, pose_root):
    embedder = Embedder.from_file(routed_model(tmp_path / "m.safetensors", qualities=(90, 50)), device="cpu")
    split = load_pose_split(pose_root, SPLIT)
    rows = run_perturbed(embedder, split, (Jpeg(90), Jpeg(75), Jpeg(50), Resize(0.75)), model="routed", options=OPTIONS)
    assert [r.run.regime for r in rows] == ["lossless", "jpeg90", "jpeg90", "jpeg50", "lossless"]
    clean = rows[0].run.store
    for row in rows[1:]:
        assert row.run.split.train == split.train
    jpeg90 = rows[1].run.store
    assert jpeg90.names == clean.names and not np.allclose(jpeg90.centroids(), clean.centroids())
    # the same as a plain benchmark of the test images saved as JPEG q90 files by Pillow directly
    moved = []
    for k, image in enumerate(split.test):
        target = tmp_path / "q90" / f"{k}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load_rgb(image.path)).save(target, format="JPEG", quality=90, subsampling="4:2:0")
        moved.append(replace(image, path=target))
    n = len(split.test_known)
    direct = run_benchmark(
        embedder, replace(split, test_known=tuple(moved[:n]), test_unknown=tuple(moved[n:])), options=OPTIONS
    )
    assert direct.regime == "jpeg90"
    np.testing.assert_allclose(rows[1].run.scores, direct.scores, rtol=1e-6)
