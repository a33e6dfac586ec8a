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
