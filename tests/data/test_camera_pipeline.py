"""Simulated camera pipelines: distinct, reproducible, measurably different; a demosaicing that
agrees with an independent one."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from osma_cli.data.camera_pipeline import (
    CFA_PATTERNS,
    DEMOSAIC_METHODS,
    PIPELINE_OPTIONS,
    CameraPipeline,
    demosaic,
    make_pipelines,
    mosaic,
)
from osma_cli.data.decode import load_rgb
from osma_cli.errors import UsageError

CAMERAS = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "cameras"


def textured_image(size: int = 96, seed: int = 0) -> np.ndarray:
    """Photo-like content: smooth shading, flat patches with sharp edges, sensor-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = 110 + 60 * np.sin(xx / 6 + yy / 11)[..., None] * np.array([1.0, 0.7, 0.4])
    for _ in range(12):
        top, left = rng.integers(0, size - 8, 2)
        height, width = rng.integers(6, size // 2, 2)
        image[top : top + height, left : left + width] = rng.uniform(20, 235, 3)
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def real_photo() -> np.ndarray:
    photos = sorted(CAMERAS.glob("*/*.jp*g")) if CAMERAS.is_dir() else []
    if not photos:
        pytest.skip(f"no camera photos under {CAMERAS}")
    photo = load_rgb(photos[0])
    top, left = (photo.shape[0] - 256) // 2 // 16 * 16, (photo.shape[1] - 256) // 2 // 16 * 16
    return photo[top : top + 256, left : left + 256]


PLAIN = CameraPipeline(
    seed=1, cfa="RGGB", demosaic="bilinear", denoise=0.0, sharpen=0.0, gamma=2.2, tone=0.0, jpeg_quality=95
)


def settings(pipeline: CameraPipeline) -> tuple:
    return tuple(value for field, value in dataclasses.asdict(pipeline).items() if field != "seed")


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b).mean())


# --- pipelines ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 12, 70, 300])
def test_make_pipelines_gives_distinct_settings(n: int) -> None:
    pipelines = make_pipelines(n, seed=0)
    assert len(pipelines) == n
    assert len({settings(p) for p in pipelines}) == n


def test_make_pipelines_spreads_over_every_option() -> None:
    pipelines = make_pipelines(24, seed=0)
    for field, options in PIPELINE_OPTIONS.items():
        counts = [sum(getattr(p, field) == option for p in pipelines) for option in options]
        assert max(counts) - min(counts) <= 1 and min(counts) >= 1, field


def test_make_pipelines_is_reproducible() -> None:
    assert make_pipelines(20, seed=3) == make_pipelines(20, seed=3)
    assert make_pipelines(20, seed=3) != make_pipelines(20, seed=4)


def test_make_pipelines_refuses_bad_counts() -> None:
    with pytest.raises(UsageError):
        make_pipelines(0)
    with pytest.raises(UsageError):
        make_pipelines(10**9)


@pytest.mark.parametrize(
    "change",
    [
        {"cfa": "RGBG"},
        {"demosaic": "nearest"},
        {"denoise": -1.0},
        {"sharpen": -0.5},
        {"gamma": 0.0},
        {"tone": 1.5},
        {"jpeg_quality": 0},
        {"subsampling": "4:1:1"},
        {"seed": -1},
    ],
)
def test_pipeline_refuses_bad_settings(change: dict) -> None:
    with pytest.raises(UsageError):
        dataclasses.replace(PLAIN, **change)


def test_render_keeps_shape_and_dtype_and_evens_odd_sizes() -> None:
    image = textured_image(64)
    for pipeline in make_pipelines(6, seed=1):
        out = pipeline.render(image)
        assert out.shape == image.shape and out.dtype == np.uint8
    odd = PLAIN.render(image[:63, :61])
    assert odd.shape == (62, 60, 3)
    with pytest.raises(UsageError):
        PLAIN.render(image.astype(np.float32))


def test_render_is_reproducible() -> None:
    image = textured_image(64)
    for pipeline, twin in zip(make_pipelines(6, seed=2), make_pipelines(6, seed=2)):
        first = pipeline.render(image)
        np.testing.assert_array_equal(first, pipeline.render(image))
        np.testing.assert_array_equal(first, twin.render(image))


def test_quantisation_tables_follow_the_seed() -> None:
    tables = PLAIN.quantisation_tables()
    assert [len(t) for t in tables] == [64, 64]
    assert dataclasses.replace(PLAIN, seed=2).quantisation_tables() != tables
    standard = dataclasses.replace(PLAIN, qtable_jitter=0.0, jpeg_quality=50)
    assert standard.quantisation_tables()[0][:8] == (16, 11, 10, 16, 24, 40, 51, 61)


@pytest.fixture(params=["synthetic", "real"])
def photo(request) -> np.ndarray:
    return textured_image(128) if request.param == "synthetic" else real_photo()


def test_pipelines_differ_measurably(photo: np.ndarray) -> None:
    renders = [p.render(photo) for p in make_pipelines(6, seed=0)]
    for a, b in itertools.combinations(renders, 2):
        assert mean_abs_diff(a, b) > 1.0


def test_demosaicing_alone_differs_measurably(photo: np.ndarray) -> None:
    renders = {m: dataclasses.replace(PLAIN, demosaic=m).render(photo) for m in DEMOSAIC_METHODS}
    for a, b in itertools.combinations(DEMOSAIC_METHODS, 2):
        assert mean_abs_diff(renders[a], renders[b]) > 0.5, (a, b)


def green_phase(image: np.ndarray) -> float:
    """Residual energy of green on sites with y + x even minus odd, normalised: a bilinear
    demosaic leaves its interpolated greens smoother than its sampled ones, at period 2."""
    green = image[..., 1].astype(np.float64)
    residual = np.zeros_like(green)
    residual[1:-1, 1:-1] = (
        green[1:-1, 1:-1] - (green[:-2, 1:-1] + green[2:, 1:-1] + green[1:-1, :-2] + green[1:-1, 2:]) / 4
    )
    residual = residual[2:-2, 2:-2] ** 2
    parity = np.add.outer(np.arange(residual.shape[0]), np.arange(residual.shape[1])) % 2
    even, odd = residual[parity == 0].mean(), residual[parity == 1].mean()
    return float((even - odd) / (even + odd))


def test_colour_filter_layout_shows_at_period_two(photo: np.ndarray) -> None:
    """RGGB and BGGR sample green on odd sites, GRBG and GBRG on even ones: the statistic's
    sign follows the layout, and the original photo shows no such pattern."""
    phases = {cfa: green_phase(dataclasses.replace(PLAIN, cfa=cfa).render(photo)) for cfa in CFA_PATTERNS}
    assert phases["RGGB"] < -0.2 and phases["BGGR"] < -0.2
    assert phases["GRBG"] > 0.2 and phases["GBRG"] > 0.2
    assert abs(green_phase(photo)) < 0.1


# --- demosaicing -------------------------------------------------------------------------


@pytest.mark.parametrize("method", DEMOSAIC_METHODS)
@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_demosaic_keeps_samples_and_reproduces_linear_ramps(method: str, cfa: str) -> None:
    yy, xx = np.mgrid[0:32, 0:40].astype(np.float32)
    ramp = np.stack(
        [0.1 + 0.01 * xx + 0.005 * yy, 0.3 + 0.004 * xx - 0.002 * yy, 0.2 + 0.003 * yy + 0.001 * xx], axis=-1
    ).astype(np.float32)
    raw = mosaic(ramp, cfa)
    out = demosaic(raw, cfa, method)
    assert out.shape == ramp.shape and out.dtype == np.float32
    np.testing.assert_allclose(mosaic(out, cfa), raw, atol=1e-6)
    np.testing.assert_allclose(out[8:-8, 8:-8], ramp[8:-8, 8:-8], atol=1e-5)
    flat = np.full((16, 16, 3), 0.25, dtype=np.float32) * np.array([1, 2, 3], dtype=np.float32)
    np.testing.assert_allclose(demosaic(mosaic(flat, cfa), cfa, method), flat, atol=1e-6)


@pytest.mark.parametrize("method", DEMOSAIC_METHODS)
def test_demosaic_agrees_with_colour_demosaicing(method: str) -> None:
    """The published filters, checked against an independent implementation (colour-demosaicing)."""
    import colour_demosaicing as cd  # in the test extras: this comparison always runs

    reference = {
        "bilinear": cd.demosaicing_CFA_Bayer_bilinear,
        "malvar2004": cd.demosaicing_CFA_Bayer_Malvar2004,
        "menon2007": cd.demosaicing_CFA_Bayer_Menon2007,
    }[method]
    linear = (textured_image(64).astype(np.float32) / 255) ** 2.2
    for cfa in CFA_PATTERNS:
        raw = mosaic(linear, cfa)
        ours = demosaic(raw, cfa, method)
        theirs = reference(raw.astype(np.float64), cfa)
        np.testing.assert_allclose(ours[4:-4, 4:-4], theirs[4:-4, 4:-4], atol=1e-5)
