"""The benchmark figures: each is a real PNG of the promised size, on ordinary and degenerate
inputs, and drawing leaves matplotlib's global state (pyplot, rcParams) as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osma_cli.evaluation import MetricInputError, af1_crr_curve, oscr, roc_curve
from osma_cli.evaluation.plots import (
    DPI,
    FIGSIZE,
    colours,
    histogram_bins,
    histogram_range,
    plot_af1_crr,
    plot_oscr,
    plot_roc,
    plot_score_histograms,
    write_benchmark_plots,
)

EXPECTED_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
PLOT_FILES = {"roc": "roc.png", "oscr": "oscr.png", "af1_crr": "af1_crr.png", "scores": "scores.png"}


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == EXPECTED_SIZE
        image.load()
        # Something was drawn: a blank canvas has a single colour.
        assert len(image.convert("L").getcolors(maxcolors=1 << 16) or range(2)) > 1


def synthetic(
    seed: int = 0,
    n_known: int = 120,
    n_unknown: int = 60,
    n_classes: int = 4,
    kinds: tuple[str, ...] = ("seed", "arch", "dataset"),
) -> dict[str, np.ndarray]:
    """Known images with low scores, unknown ones shifted up, most candidates right."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([rng.integers(0, n_classes, n_known), np.full(n_unknown, -1)])
    candidates = np.where(y >= 0, y, rng.integers(0, n_classes, len(y)))
    wrong = rng.random(len(y)) < 0.1
    candidates[wrong] = rng.integers(0, n_classes, int(wrong.sum()))
    scores = np.concatenate([rng.gamma(4, 0.4, n_known), rng.gamma(7, 0.5, n_unknown)])
    kind = np.array([""] * n_known + [kinds[i % len(kinds)] for i in range(n_unknown)]) if kinds else None
    return {"y_true": y, "candidates": candidates, "scores": scores, "n_classes": n_classes, "unknown_kind": kind}


@pytest.fixture(autouse=True)
def no_global_state_changes():
    """rcParams unchanged and, if anything imported pyplot, no figure left open in it."""
    import matplotlib

    before = {key: repr(value) for key, value in matplotlib.rcParams.items()}
    yield
    after = {key: repr(value) for key, value in matplotlib.rcParams.items()}
    assert after == before
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


# --------------------------------------------------------------------------- one figure each


def test_plot_roc_writes_png(tmp_path: Path) -> None:
    data = synthetic()
    unknown = data["y_true"] == -1
    curves = {"all": roc_curve(unknown, data["scores"]), "seed": roc_curve(unknown[:150], data["scores"][:150])}
    path = plot_roc(curves, tmp_path / "roc.png", title="ROC")
    assert path == tmp_path / "roc.png"
    assert_png(path)


def test_plot_oscr_writes_png_linear_and_log(tmp_path: Path) -> None:
    data = synthetic()
    curves = {"all": oscr(data["y_true"], data["candidates"], data["scores"])}
    assert_png(plot_oscr(curves, tmp_path / "oscr.png"))
    assert_png(plot_oscr(curves, tmp_path / "oscr_log.png", log_fpr=True))


def test_plot_af1_crr_writes_png_with_and_without_operating_point(tmp_path: Path) -> None:
    data = synthetic()
    curve = af1_crr_curve(data["y_true"], data["candidates"], data["scores"], data["n_classes"])
    assert_png(plot_af1_crr(curve, tmp_path / "a.png"))
    assert_png(plot_af1_crr(curve, tmp_path / "b.png", operating_point=(0.6, 0.8), tau=2.5))


def test_plot_score_histograms_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = plot_score_histograms(
        rng.random(100), {"seed": rng.random(30) + 0.5, "arch": rng.random(30) + 1}, tmp_path / "scores.png", tau=0.9
    )
    assert_png(path)


@pytest.mark.parametrize(
    "known, unknown",
    [
        (np.array([]), {}),
        (np.array([]), {"seed": np.array([])}),
        (np.array([1.0]), {}),
        (np.full(10, 3.0), {"seed": np.full(5, 3.0)}),
        (np.array([0.5, np.nan, np.inf, 1.0]), {"arch": np.array([-np.inf, 2.0])}),
    ],
)
def test_score_histograms_survive_degenerate_inputs(tmp_path: Path, known, unknown) -> None:
    assert_png(plot_score_histograms(known, unknown, tmp_path / "h.png", tau=1.0))


@pytest.mark.parametrize("tau", [None, float("inf"), -5.0, 1e9])
def test_score_histograms_accept_any_tau(tmp_path: Path, tau) -> None:
    assert_png(plot_score_histograms(np.arange(10.0), {"seed": np.arange(5.0) + 5}, tmp_path / "h.png", tau=tau))


def test_empty_curve_mappings_still_draw(tmp_path: Path) -> None:
    assert_png(plot_roc({}, tmp_path / "roc.png"))
    assert_png(plot_oscr({}, tmp_path / "oscr.png"))
    assert_png(plot_oscr({}, tmp_path / "oscr_log.png", log_fpr=True))


def test_parent_folders_are_created_and_no_temporary_left(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "roc.png"
    plot_roc({}, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["roc.png"]


# --------------------------------------------------------------------------- helpers


def test_histogram_range_clips_a_huge_outlier_only() -> None:
    values = np.concatenate([np.linspace(0, 5, 1000), [1e9]])
    low, high, clipped = histogram_range(values)
    assert clipped and low == 0.0 and high < 6
    low, high, clipped = histogram_range(np.linspace(0, 5, 1000))
    assert not clipped and (low, high) == (0.0, 5.0)
    low, high, clipped = histogram_range(np.full(4, 2.0))
    assert low < 2.0 < high and not clipped
    assert histogram_range(np.array([])) == (0.0, 1.0, False)


def test_histogram_bins_follow_the_smallest_group() -> None:
    assert histogram_bins([np.zeros(100_000), np.zeros(8000)]) == 40
    assert histogram_bins([np.zeros(100_000), np.zeros(3)]) == 20
    assert histogram_bins([np.zeros(10**6)]) == 60
    assert histogram_bins([np.array([])]) == 20


def test_colours_are_fixed_for_usual_kinds_and_order_free_for_others() -> None:
    first = colours(["all", "seed", "arch", "dataset", "zeta", "alpha"])
    second = colours(["alpha", "zeta", "dataset"])
    assert first["seed"] == "tab:blue" and first["arch"] == "tab:orange" and first["dataset"] == "tab:green"
    assert first["alpha"] == second["alpha"] and first["zeta"] == second["zeta"]
    assert len({first[name] for name in first}) == len(first)


# --------------------------------------------------------------------------- the benchmark set


@pytest.mark.parametrize("kinds", [("seed", "arch", "dataset"), ("seed",), ("weird kind",), ()])
def test_write_benchmark_plots_writes_the_four_files(tmp_path: Path, kinds) -> None:
    data = synthetic(kinds=kinds)
    out = tmp_path / "out"
    paths = write_benchmark_plots(out, tau=2.5, **data)
    assert paths == {name: out / file for name, file in PLOT_FILES.items()}
    for path in paths.values():
        assert_png(path)


def test_write_benchmark_plots_with_unlabelled_unknowns_and_no_tau(tmp_path: Path) -> None:
    data = synthetic()
    data["unknown_kind"][-10:] = ""
    for path in write_benchmark_plots(tmp_path, tau=None, **data).values():
        assert_png(path)


def test_write_benchmark_plots_with_no_unknown_images(tmp_path: Path) -> None:
    data = synthetic(n_unknown=0, kinds=())
    for path in write_benchmark_plots(tmp_path, tau=1.0, **data).values():
        assert_png(path)


def test_write_benchmark_plots_with_no_known_images(tmp_path: Path) -> None:
    data = synthetic(n_known=0)
    for path in write_benchmark_plots(tmp_path, tau=1.0, **data).values():
        assert_png(path)


def test_write_benchmark_plots_with_one_image_and_infinite_tau(tmp_path: Path) -> None:
    paths = write_benchmark_plots(tmp_path, y_true=[0], candidates=[0], scores=[0.3], n_classes=1, tau=float("inf"))
    for path in paths.values():
        assert_png(path)


def test_write_benchmark_plots_clips_huge_outliers(tmp_path: Path) -> None:
    data = synthetic()
    data["scores"][0] = 1e12
    assert_png(write_benchmark_plots(tmp_path, tau=2.5, **data)["scores"])


@pytest.mark.parametrize(
    "change",
    [
        {"scores": np.array([0.1, 0.2])},
        {"n_classes": 0},
        {"tau": float("nan")},
        {"unknown_kind": np.array(["seed"] * 180)},
        {"unknown_kind": np.array([""] * 5)},
    ],
)
def test_bad_input_raises_before_any_file_is_written(tmp_path: Path, change) -> None:
    args = {**synthetic(), "tau": 2.5, **change}
    with pytest.raises(MetricInputError):
        write_benchmark_plots(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- import hygiene


def test_imports_stay_light_and_pyplot_is_never_used(tmp_path: Path) -> None:
    """In a fresh interpreter: the package imports no matplotlib, and drawing imports no pyplot."""
    script = f"""
import json, sys
import numpy as np
import osma_cli.evaluation
light = "matplotlib" not in sys.modules
from osma_cli.evaluation.plots import write_benchmark_plots
light_plots = "matplotlib" not in sys.modules
write_benchmark_plots({str(tmp_path)!r}, y_true=[0, 1, -1], candidates=[0, 1, 0], scores=[0.1, 0.2, 0.9],
                      n_classes=2, tau=0.5, unknown_kind=["", "", "seed"])
print(json.dumps({{"light": light, "light_plots": light_plots,
                   "pyplot": "matplotlib.pyplot" in sys.modules,
                   "backend_agg": "matplotlib.backends.backend_agg" in sys.modules}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={key: value for key, value in os.environ.items() if key != "MPLBACKEND"},
        cwd=Path(__file__).resolve().parents[2],
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"light": True, "light_plots": True, "pyplot": False, "backend_agg": True}
