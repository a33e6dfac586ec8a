"""``--augment``: a descriptor's projection fitted on perturbed copies of the training images too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.data.decode import load_rgb
from osma_cli.data.perturb import parse_perturbation
from osma_cli.embed import Embedder, EmbedOptions
from osma_cli.errors import EXIT_OK, EXIT_USAGE
from osma_cli.evaluation import protocol
from osma_cli.evaluation.perturbed import seed_rng
from osma_cli.evaluation.sources import load_pose_split
from osma_cli.projection import fit_projection
from osma_cli.projection_augment import RECIPE_KEY, augment_of
from osma_cli.training.fsd import DescriptorConfig, fit_fsd
from osma_cli.weights import load_weights, read_meta
from tests.conftest import pattern_image
from tests.pose_fixture import SPLIT, make_pose_fixture

SETTINGS = {"block": 3, "scales": 2, "window": 48}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def generators(root: Path, n: int = 5) -> Path:
    rng = np.random.default_rng(11)
    for kind in ("checker", "smooth", "dots"):
        for i in range(n):
            folder = root / f"{kind}gan"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pattern_image(kind, rng, 48)).save(folder / f"{i}.png")
    return root


def raw_features(model_path: Path, pixels: list[np.ndarray]) -> np.ndarray:
    """An independent description of in-memory pixels with the weights' raw descriptor."""
    model, _ = load_weights(model_path)
    x = torch.stack([torch.from_numpy(p.copy()).permute(2, 0, 1).to(torch.float64) / 255.0 for p in pixels])
    with torch.no_grad():
        return model.describe(x).numpy()


def test_the_projection_is_fitted_on_the_images_and_their_perturbed_copies(tmp_path):
    data = generators(tmp_path / "data")
    augment = (parse_perturbation("resize:0.75"), parse_perturbation("noise:2"))
    result = fit_fsd(
        DescriptorConfig(data=data, out=tmp_path / "aug.safetensors", settings=SETTINGS, workers=0, augment=augment)
    )
    plain = fit_fsd(DescriptorConfig(data=data, out=tmp_path / "plain.safetensors", settings=SETTINGS, workers=0))

    files = sorted(data.glob("*/*.png"))
    labels = np.array([["checkergan", "dotsgan", "smoothgan"].index(f.parent.name) for f in files])
    clean = [load_rgb(f) for f in files]
    copies = [
        p.apply(px, seed_rng(hashlib.sha256(f.read_bytes()).digest())) for p in augment for f, px in zip(files, clean)
    ]
    assert copies[0].shape == (36, 36, 3)
    # the copies' descriptors come from a separate 36 x 36 batch (a descriptor's rows do not depend on the batch)
    rows = np.concatenate(
        [
            raw_features(tmp_path / "plain.safetensors", clean),
            raw_features(tmp_path / "plain.safetensors", copies[: len(files)]),
            raw_features(tmp_path / "plain.safetensors", copies[len(files) :]),
        ]
    )
    expected = fit_projection(rows, np.tile(labels, 3), **DescriptorConfig(data=data, out=tmp_path).projection)
    # float32 residual filtering: the batch's other images move the last digits (tests/nets/test_fsd.py)
    np.testing.assert_allclose(result.projection.matrix, expected.matrix, rtol=1e-4, atol=1e-6)
    assert np.abs(result.projection.matrix - plain.projection.matrix).max() > 1e-2

    meta = read_meta(tmp_path / "aug.safetensors")
    assert meta.recipe[RECIPE_KEY] == ["resize:0.75", "noise:2"]
    assert [p.spec for p in augment_of(meta.recipe)] == ["resize:0.75", "noise:2"]
    assert meta.recipe["data"]["n_images"] == len(files)  # copies not counted as images
    assert RECIPE_KEY not in read_meta(tmp_path / "plain.safetensors").recipe
    assert augment_of(read_meta(tmp_path / "plain.safetensors").recipe) == ()


def test_an_unreadable_image_is_reported_once_not_once_per_copy(tmp_path):
    data = generators(tmp_path / "data")
    (data / "dotsgan" / "broken.png").write_bytes(b"not an image")
    result = fit_fsd(
        DescriptorConfig(
            data=data,
            out=tmp_path / "m.safetensors",
            settings=SETTINGS,
            workers=0,
            augment=(parse_perturbation("resize:0.5"), parse_perturbation("jpeg:90")),
        )
    )
    assert [f.path.name for f in result.failures] == ["broken.png"]
    assert result.meta.recipe["data"]["n_images"] == 15


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory) -> Path:
    return make_pose_fixture(tmp_path_factory.mktemp("pose"), n_per_class=4, size=48)


def test_benchmark_refits_on_the_copies_its_weights_name_and_keeps_references_clean(tmp_path, pose_root, monkeypatch):
    data = generators(tmp_path / "data")
    model = tmp_path / "aug.safetensors"
    fit_fsd(
        DescriptorConfig(
            data=data,
            out=model,
            settings=SETTINGS,
            workers=0,
            augment=(parse_perturbation("resize:0.5"), parse_perturbation("blur:1")),
        )
    )
    seen = []
    real_fit = protocol.fit_projection

    def recording_fit(x, labels, **settings):
        seen.append((len(x), labels.tolist()))
        return real_fit(x, labels, **settings)

    monkeypatch.setattr(protocol, "fit_projection", recording_fit)
    split = load_pose_split(pose_root, SPLIT)
    embedder = Embedder.from_file(model, device="cpu")
    run = protocol.run_benchmark(embedder, split, options=EmbedOptions(workers=0))
    train_labels = [im.label for im in split.train]
    assert seen == [(3 * len(split.train), train_labels * 3)]
    # references are the clean training images: as many as there are, per class
    store = run.store
    assert sum(store.generators[name].count for name in store.names) == len(split.train)
    assert all(im.path.is_relative_to(pose_root) for im in run.test_images)


def test_cli_train_with_augment_reports_it_and_refuses_bad_specs(tmp_path):
    data = generators(tmp_path / "data")
    out = tmp_path / "m.safetensors"
    result = invoke(
        "train",
        data,
        "--method",
        "fsd",
        "--out",
        out,
        "--workers",
        0,
        "--descriptor",
        "block=3,scales=2,window=48",
        "--augment",
        "resize:0.5",
        "--augment",
        "jpeg:75",
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    assert json.loads(result.stdout)["augment"] == ["resize:0.5", "jpeg:75"]
    result = invoke(
        "train", data, "--method", "fsd", "--out", tmp_path / "b.safetensors", "--workers", 0, "--augment", "resize:2"
    )
    assert result.exit_code == EXIT_USAGE
    assert "resize:2" in " ".join(result.stderr.split()) and not (tmp_path / "b.safetensors").exists()
    # metric learning takes --augment too (tests/training/test_metric.py), not the descriptor's options
    result = invoke("train", data, "--out", tmp_path / "c.safetensors", "--augment", "jpeg:90", "--jpeg-regimes", "90")
    assert result.exit_code == EXIT_USAGE and "--jpeg-regimes" in " ".join(result.stderr.split())
    assert not (tmp_path / "c.safetensors").exists()
