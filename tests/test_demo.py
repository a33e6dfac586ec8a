"""``osma demo``: sample images made from what osma ships, then attributed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.data import load_rgb
from osma_cli.demo import DEMO_GENERATOR, TILE, write_demo_images
from osma_cli.errors import EXIT_OK

REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
needs_zoo = pytest.mark.skipif(
    not (REPO_WEIGHTS / "zoo" / f"{DEMO_GENERATOR}.safetensors").is_file(),
    reason="the shipped zoo weights are not in this checkout",
)


@pytest.fixture
def shipped_weights(monkeypatch):
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(REPO_WEIGHTS))


@needs_zoo
def test_demo_images_are_a_real_photo_and_a_deterministic_generated_one(shipped_weights, tmp_path):
    from osma_cli.zoo.photos import PhotoSet

    first = write_demo_images(tmp_path / "a")
    second = write_demo_images(tmp_path / "b")
    assert [im.expected for im in first] == ["real", "unknown"]
    real, made = first
    photos = PhotoSet.open()
    originals = [photos.file(p) for p in photos.photos if p.part == "test" and p.domain == "cameras"]
    assert any(real.path.read_bytes() == f.read_bytes() for f in originals)  # bytes as shipped
    pixels = load_rgb(made.path)
    assert pixels.shape == (TILE, TILE, 3)
    assert np.array_equal(pixels, load_rgb(second[1].path))  # same pixels every run
    tiles = [load_rgb(f) for f in originals]
    centre = [t[(t.shape[0] - TILE) // 16 * 8 :][:TILE, (t.shape[1] - TILE) // 16 * 8 :][:, :TILE] for t in tiles]
    closest = min(np.abs(c.astype(float) - pixels).mean() for c in centre)
    assert 0.5 < closest < 20  # the generator re-made one of the photos: close, not identical


@needs_zoo
def test_demo_command_attributes_both_images(shipped_weights, tmp_path, tiny_weights, image_tree):
    runner = CliRunner()
    refs = tmp_path / "refs.h5"
    assert (
        runner.invoke(
            app, ["build", str(image_tree), "--out", str(refs), "--model", str(tiny_weights), "--workers", "0"]
        ).exit_code
        == EXIT_OK
    )
    result = runner.invoke(
        app,
        ["demo", "--out", str(tmp_path / "demo"), "--model", str(tiny_weights), "--refs", str(refs)],
        catch_exceptions=False,
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "camera-photo.jpg" in result.stdout and f"made-by-{DEMO_GENERATOR}.png" in result.stdout
    assert "expected verdict: real" in result.stdout and "threshold tau" in result.stdout
