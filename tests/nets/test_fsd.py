"""The ``fsd`` descriptor as a feature extractor: identity, input policy, batching, CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.embed import Embedder, embed_all
from osma_cli.errors import EXIT_OK, ReferenceStoreError
from osma_cli.nets import get_model
from osma_cli.references import ReferenceStore
from osma_cli.weights import WeightsMeta, feature_identity, load_weights, save_weights
from tests.conftest import pattern_image
from tests.pose_fixture import SPLIT, make_pose_fixture

SMALL = {"block": 3, "scales": 2, "window": 48}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def save_descriptor(path: Path, **settings) -> Path:
    model = get_model("fsd", **{**SMALL, **settings})
    meta = WeightsMeta(
        architecture="fsd",
        embedding_dim=model.raw_dim,
        crop_size=model.settings["window"],
        l2_normalize=False,
        kind="descriptor",
        arch_kwargs={**SMALL, **settings},
    )
    save_weights(path, model, meta)
    return path


def write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize(
    "change",
    [
        {"block": 5},
        {"scales": 1},
        {"mode": "joint"},
        {"constrained": True},
        {"scale_mode": "joint"},
        {"colour": "grey"},
        {"window": 32},
        {"filters": ["cross4", "square8"]},
        {"residual_precision": "float64"},
    ],
)
def test_identity_covers_every_setting(tmp_path, change):
    a = load_weights(save_descriptor(tmp_path / "a.safetensors"))[1]
    b = load_weights(save_descriptor(tmp_path / "b.safetensors", **change))[1]
    assert a.sha256 != b.sha256


def test_same_settings_same_identity_and_projection_is_not_a_feature(tmp_path):
    a = load_weights(save_descriptor(tmp_path / "a.safetensors"))[1]
    b = load_weights(save_descriptor(tmp_path / "b.safetensors"))[1]
    assert a.sha256 == b.sha256
    raw = get_model("fsd", **SMALL)
    projected = get_model("fsd", **SMALL, projected=True, embedding_dim=4)
    projected.set_projection(torch.zeros(projected.raw_dim), torch.ones(projected.raw_dim, 4))
    assert feature_identity(raw) == feature_identity(projected)


def test_a_store_of_another_configuration_is_refused(tmp_path):
    _, a = load_weights(save_descriptor(tmp_path / "a.safetensors"))
    _, b = load_weights(save_descriptor(tmp_path / "b.safetensors", block=5))
    store = ReferenceStore.for_weights(a)
    with pytest.raises(ReferenceStoreError, match="other weights"):
        store.check_weights(b)


def test_batched_equals_one_by_one_and_small_images_are_not_padded(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        write(tmp_path / f"{i}.png", pattern_image(kind, rng, size))
        for i, (kind, size) in enumerate([("checker", 64), ("smooth", 48), ("dots", 30), ("stripes", 64)])
    ]
    embedder = Embedder.from_file(save_descriptor(tmp_path / "m.safetensors"), device="cpu")
    batched, bad = embed_all(embedder, paths, batch_size=4, workers=0)
    assert not bad
    for i, path in enumerate(paths):
        alone, _ = embed_all(embedder, [path], batch_size=1, workers=0)
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-5, atol=1e-7)
    small = np.asarray(Image.open(paths[2]), dtype=np.float64) / 255.0
    direct = embedder.model.describe(torch.from_numpy(small).permute(2, 0, 1)[None]).numpy()[0]
    np.testing.assert_allclose(batched[2], direct, rtol=1e-5, atol=1e-7)
    big = np.asarray(Image.open(paths[0]), dtype=np.float64)[8:56, 8:56] / 255.0
    window = embedder.model.describe(torch.from_numpy(big).permute(2, 0, 1)[None]).numpy()[0]
    np.testing.assert_allclose(batched[0], window, rtol=1e-5, atol=1e-7)


def test_flat_and_tiny_images_give_a_result_or_a_clear_error(tmp_path):
    flat = write(tmp_path / "flat.png", np.full((40, 40, 3), 128, np.uint8))
    tiny = write(tmp_path / "tiny.png", np.full((4, 4, 3), 9, np.uint8))
    embedder = Embedder.from_file(save_descriptor(tmp_path / "m.safetensors"), device="cpu")
    good, bad = embed_all(embedder, [flat, tiny], workers=0)
    assert good.shape == (1, embedder.embedding_dim) and np.isfinite(good).all()
    assert len(bad) == 1 and "smaller than" in bad[0].error and bad[0].path == tiny


def test_descriptor_runs_in_float64_without_autocast(tmp_path):
    embedder = Embedder.from_file(save_descriptor(tmp_path / "m.safetensors"), device="cpu")
    assert embedder.policy.dtype == torch.float64 and not embedder.mixed_precision
    assert embedder.small_policy("pad") == "keep" and embedder.small_policy("skip") == "skip"


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory) -> Path:
    return make_pose_fixture(tmp_path_factory.mktemp("pose"), n_per_class=4, size=48)


def test_cli_train_build_attribute_benchmark_with_the_descriptor(tmp_path, pose_root):
    data = tmp_path / "data"
    rng = np.random.default_rng(3)
    for kind in ("checker", "smooth", "dots"):
        for i in range(6):
            write(data / f"{kind}gan" / f"{i}.png", pattern_image(kind, rng, 48))
    photos = tmp_path / "photos"
    for i in range(2):
        write(photos / f"{i}.png", pattern_image("smooth", rng, 48))
    model = tmp_path / "fsd.safetensors"
    result = invoke(
        "train",
        data,
        "--method",
        "fsd",
        "--out",
        model,
        "--photos",
        photos,
        "--workers",
        0,
        "--descriptor",
        "block=3,scales=2,window=48",
        "--rule",
        "mahalanobis",
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.stdout)
    assert summary["filters"] == "learned" and summary["n_photos"] == 2 and summary["embedding_dim"] == 2
    refs = tmp_path / "refs.h5"
    result = invoke("build", data, "--out", refs, "--model", model, "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    assert ReferenceStore.load(refs).rule.name == "mahalanobis"
    shown = json.loads(invoke("refs", "show", "checkergan", "--refs", refs, "--json").stdout)
    assert shown["rule"]["name"] == "mahalanobis" and shown["statistics"] == ["second_moment"]
    result = invoke("attribute", data / "checkergan", "--model", model, "--refs", refs, "--json", "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 6 and all(r["candidate"] == "checkergan" for r in records)
    result = invoke(
        "benchmark",
        SPLIT,
        "--data-root",
        pose_root,
        "--model",
        model,
        "--workers",
        0,
        "--rule",
        "gmm:components=1",
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    run = json.loads(result.stdout)
    assert run["score"] == "neg. log-lik." and 0.0 <= run["metrics"]["auc"] <= 1.0


def test_jpeg_inputs_of_a_descriptor_say_the_verdict_depends_on_compression(tmp_path):
    rng = np.random.default_rng(4)
    png = write(tmp_path / "a.png", pattern_image("checker", rng, 48))
    jpeg = tmp_path / "b.jpg"
    Image.fromarray(pattern_image("checker", rng, 48)).save(jpeg, quality=85)
    embedder = Embedder.from_file(save_descriptor(tmp_path / "m.safetensors"), device="cpu")
    items = {it.path.name: it for it in embedder.embed_files([png, jpeg], workers=0)}
    assert items["a.png"].ok and items["a.png"].warnings == ()
    assert items["b.jpg"].ok and any("quality about 85" in w for w in items["b.jpg"].warnings)


def test_float32_residual_filtering_stays_within_float64s_tolerance():
    x = torch.rand(3, 3, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fast, exact = (get_model("fsd", **SMALL, residual_precision=p).describe(x) for p in ("float32", "float64"))
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-6)


def test_benchmark_fits_the_projection_on_the_split_training_images_only(tmp_path, pose_root, monkeypatch):
    from osma_cli.evaluation import protocol
    from osma_cli.evaluation.sources import load_pose_split

    seen = []
    real_fit = protocol.fit_projection

    def recording_fit(x, labels, **settings):
        seen.append((len(x), sorted(set(labels.tolist()))))
        return real_fit(x, labels, **settings)

    monkeypatch.setattr(protocol, "fit_projection", recording_fit)
    split = load_pose_split(pose_root, SPLIT)
    embedder = Embedder.from_file(save_descriptor(tmp_path / "m.safetensors"), device="cpu")
    from osma_cli.embed import EmbedOptions

    run = protocol.run_benchmark(embedder, split, options=EmbedOptions(workers=0))
    assert seen == [(len(split.train), sorted({im.label for im in split.train}))]
    assert run.report.n_unknown == len(split.test_unknown)
    kept = protocol.run_benchmark(embedder, split, options=EmbedOptions(workers=0), refit_projection=False)
    assert len(seen) == 1 and kept.report.n_unknown == run.report.n_unknown
