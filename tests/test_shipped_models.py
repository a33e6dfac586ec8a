"""Every shipped model loads, and the store shipped beside it was made with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from osma_cli.home import DEFAULT_MODEL, SHIPPED_MODELS
from osma_cli.regime_store import each_store, load_store
from osma_cli.weights import load_weights

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@pytest.mark.parametrize("name", list(SHIPPED_MODELS))
def test_shipped_model_and_store_belong_together(name):
    shipped = SHIPPED_MODELS[name]
    _, meta = load_weights(WEIGHTS / shipped.weights)
    refs = load_store(WEIGHTS / shipped.references)
    refs.check_weights(meta, store_path=WEIGHTS / shipped.references)
    assert len(refs) == 7
    for single in each_store(refs):
        assert single.names == each_store(refs)[0].names and single.threshold is not None
        if meta.rule:
            assert single.rule.name == meta.rule["name"]


def test_the_default_scores_jpegs_in_jpeg_regimes():
    """The default must not score a JPEG against references of lossless images (docs/defaults.md)."""
    _, meta = load_weights(WEIGHTS / SHIPPED_MODELS[DEFAULT_MODEL].weights)
    assert [r.jpeg_quality for r in meta.regimes][1:], "the default model has no JPEG regime"


def test_shipped_weights_and_references_stay_small():
    size = sum(p.stat().st_size for p in WEIGHTS.iterdir() if p.is_file())
    assert size < 20 * 2**20


def test_shipped_detector_belongs_to_the_shipped_descriptor_and_calls_its_calibration_real(tmp_path):
    from osma_cli.detect_files import load

    loaded = load(WEIGHTS / "detector-fsd.safetensors", WEIGHTS / "osma-fsd.safetensors", "cpu")
    meta = loaded.meta
    assert (WEIGHTS / "detector-fsd.safetensors").stat().st_size < 2 * 2**20
    assert meta.acceptance == 0.95 and meta.recipe["method"] == "fsd-detector"
    assert "Sony_A6400" not in meta.recipe["held_out_groups"]  # a test camera (scripts/train_detector.py)
    assert min(meta.metrics["held_out_acceptance"].values()) > 0.8
    # made with the shipped defaults (scripts/train_detector.py runs osma train with no settings)
    from osma_cli.defaults import DEFAULT_COPIES, DEFAULT_MIXTURE

    assert meta.recipe["copies"] == ["original", *DEFAULT_COPIES]
    fit = meta.fit
    assert (fit["pca_dim"], fit["components"], fit["restarts"]) == (
        DEFAULT_MIXTURE["pca_dim"],
        DEFAULT_MIXTURE["components"],
        DEFAULT_MIXTURE["restarts"],
    )
    assert fit["held_out_mean_log_density"][fit["restart_seeds"].index(fit["seed"])] == max(
        fit["held_out_mean_log_density"]
    )
