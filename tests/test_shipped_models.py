"""Every shipped model loads, and the store shipped beside it was made with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from osma_cli.references import ReferenceStore
from osma_cli.weights import load_weights

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
PAIRS = [("osma-default.safetensors", "references.h5"), ("osma-fsd.safetensors", "references-fsd.h5")]


@pytest.mark.parametrize("model,store", PAIRS)
def test_shipped_model_and_store_belong_together(model, store):
    _, meta = load_weights(WEIGHTS / model)
    refs = ReferenceStore.load(WEIGHTS / store)
    refs.check_weights(meta, store_path=WEIGHTS / store)
    assert len(refs) == 7 and refs.threshold is not None
    if meta.rule:
        assert refs.rule.name == meta.rule["name"]


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
