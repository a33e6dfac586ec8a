"""The Ray Data engine gives exactly the single-process records, in input order.

Skipped when Ray is not installed (``pip install 'osma[ray]'``). One local Ray for the
whole module: starting it costs seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osma_cli.api import attribute_files, build_references
from osma_cli.embed import Embedder, EmbedOptions
from osma_cli.errors import ReferenceStoreError, UsageError, WeightsError
from osma_cli.regime_store import load_store
from tests.conftest import pattern_image, write_images

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'osma[ray]' to test the Ray engine")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'osma[ray]' to test the Ray engine")

from osma_cli.ray_engine import WorkerReport, attribute_files_ray  # noqa: E402 (needs Ray: after the skips above)

OPTIONS = EmbedOptions(batch_size=2, workers=0)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_and_store(tmp_path_factory, tiny_weights: Path, two_class_tree: Path) -> tuple[Path, Path]:
    store_path = tmp_path_factory.mktemp("ray_refs") / "refs.h5"
    embedder = Embedder.from_file(tiny_weights, device="cpu")
    build_references(embedder, two_class_tree, options=EmbedOptions(workers=0)).store.save(store_path)
    return tiny_weights, store_path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Twelve files (one unreadable, one damaged, one JPEG, one smaller than a crop), not in sorted order."""
    folder = tmp_path_factory.mktemp("ray_inputs")
    files = write_images(folder, "checker", 4, seed=7, size=40) + write_images(folder, "smooth", 4, seed=8, size=40)
    broken = folder / "broken.png"
    broken.write_bytes(b"this is not an image")
    jpeg = folder / "photo.jpg"
    Image.fromarray(pattern_image("dots", np.random.default_rng(3), 40)).save(jpeg, quality=85)
    tiny = folder / "tiny.png"
    Image.fromarray(pattern_image("smooth", np.random.default_rng(4), 12)).save(tiny)
    cut = folder / "cut.png"
    cut.write_bytes(files[0].read_bytes()[:-4])  # decodes, with a warning that it was cut short
    return [files[5], broken, *files[:3], jpeg, files[7], cut, tiny, files[3], files[4], files[6]]


def assert_same_records(ray_records, single_records) -> None:
    assert [r.path for r in ray_records] == [r.path for r in single_records]
    for got, want in zip(ray_records, single_records):
        assert (got.error, got.warnings, got.skipped, got.regime) == (
            want.error,
            want.warnings,
            want.skipped,
            want.regime,
        )
        assert (got.attribution is None) == (want.attribution is None)
        if want.attribution is None:
            continue
        a, b = got.attribution, want.attribution
        assert (a.candidate, a.verdict, a.threshold) == (b.candidate, b.verdict, b.threshold)
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
        assert [c.name for c in a.top] == [c.name for c in b.top]
        np.testing.assert_allclose([c.distance for c in a.top], [c.distance for c in b.top], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.embedding, want.embedding, rtol=1e-5, atol=1e-6)


def test_a_ray_it_starts_is_shut_down_also_when_the_caller_stops_early(model_and_store, inputs):
    assert not ray.is_initialized()
    weights, store_path = model_and_store
    results = attribute_files_ray(
        weights, store_path, inputs, device="cpu", threshold=1.0, options=OPTIONS, files_per_task=2
    )
    first = next(results)
    assert first.path == inputs[0] and ray.is_initialized()
    results.close()
    assert not ray.is_initialized()


def test_ray_records_equal_the_single_process_ones_in_input_order(local_ray, model_and_store, inputs):
    weights, store_path = model_and_store
    store = load_store(store_path)
    tau = store.threshold.value
    single = list(
        attribute_files(
            Embedder.from_file(weights, device="cpu"), store, inputs, threshold=tau, top_k=2, options=OPTIONS
        )
    )
    progress, reports = [], []
    got = list(
        attribute_files_ray(
            weights,
            store_path,
            inputs,
            device="cpu",
            threshold=tau,
            top_k=2,
            options=OPTIONS,
            files_per_task=2,
            on_progress=progress.append,
            on_worker_report=reports.append,
        )
    )
    assert_same_records(got, single)
    assert got[1].error and got[1].attribution is None
    assert got[7].warnings and got[7].attribution is not None
    verdicts = {r.attribution.verdict for r in single if r.attribution is not None}
    assert len(verdicts) > 1, "a test where every file gets one verdict would not tell records apart"
    assert sum(progress) == len(inputs)
    assert all(isinstance(r, WorkerReport) and r.peak_rss_mb > 0 for r in reports)
    assert sum(r.files for r in reports) == len(inputs)
    assert all(r.pid != os.getpid() for r in reports), "attributed in actors, not in the driver"
    assert ray.is_initialized(), "a Ray it did not start is left running"


def test_a_model_with_jpeg_regimes_is_routed_as_in_one_process(local_ray, tmp_path, two_class_tree, inputs):
    from tests.test_regimes import routed_model

    weights = routed_model(tmp_path / "routed.safetensors", qualities=(85,))
    embedder = Embedder.from_file(weights, device="cpu")
    store = build_references(embedder, two_class_tree, options=EmbedOptions(workers=0)).store
    store.save(tmp_path / "refs.h5")
    taus = {name: single.threshold.value for name, single in store.stores.items()}
    chosen = inputs[:6]
    single = list(attribute_files(embedder, store, chosen, threshold=taus, options=OPTIONS))
    got = list(
        attribute_files_ray(
            weights, tmp_path / "refs.h5", chosen, device="cpu", threshold=taus, options=OPTIONS, files_per_task=3
        )
    )
    assert_same_records(got, single)
    assert {r.regime for r in got if r.attribution is not None} == {"lossless", "jpeg85"}


def test_bad_model_or_store_fails_in_the_driver_with_osma_messages(
    local_ray, tmp_path, model_and_store, other_weights, inputs
):
    weights, store_path = model_and_store
    with pytest.raises(ReferenceStoreError, match="needs a reference store"):
        list(attribute_files_ray(weights, None, inputs, device="cpu", threshold=1.0))
    with pytest.raises(ReferenceStoreError):
        list(attribute_files_ray(other_weights, store_path, inputs, device="cpu", threshold=1.0))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not weights")
    with pytest.raises(WeightsError):
        list(attribute_files_ray(broken, store_path, inputs, device="cpu", threshold=1.0))
    with pytest.raises(UsageError, match="device"):
        list(attribute_files_ray(weights, store_path, inputs, device="tpu", threshold=1.0))
    assert list(attribute_files_ray(weights, store_path, [], device="cpu", threshold=1.0)) == []


def test_attribute_engine_ray_writes_the_local_engines_records(local_ray, model_and_store, inputs, tmp_path):
    """``osma attribute --engine ray --out``: the same records as the local engine, batch for batch."""
    import json

    from typer.testing import CliRunner

    from osma_cli.cli.app import app

    weights, store = model_and_store
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"{engine}.jsonl"
        result = CliRunner().invoke(
            app,
            [
                "attribute",
                *map(str, inputs),
                "--engine",
                engine,
                "--out",
                str(outs[engine]),
                "--model",
                str(weights),
                "--refs",
                str(store),
                "--workers",
                "0",
                "--batch-size",
                "1",
                "--device",
                "cpu",
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 3, result.output  # the unreadable file, reported
    local, remote = (outs[e].read_text().splitlines() for e in ("local", "ray"))
    assert len(local) == len(inputs) and remote == local
    assert json.loads(remote[1])["status"] == "error"
    refused = CliRunner().invoke(
        app, ["attribute", str(inputs[0]), "--engine", "ray", "--cache", "--model", str(weights), "--refs", str(store)]
    )
    assert refused.exit_code == 2
