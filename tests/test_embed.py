"""The embedding pipeline against a direct forward pass of the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osma_cli.data import extract_crops, load_rgb
from osma_cli.embed import EmbeddedImage, Embedder, aggregate_crops, embed_all
from osma_cli.weights import load_weights
from tests.conftest import write_images


def direct_embedding(model, meta, path: Path, n_crops: int = 1) -> np.ndarray:
    crops = torch.from_numpy(extract_crops(load_rgb(path), meta.crop_size, n_crops)).float() / 255
    with torch.no_grad():
        out = model(crops).mean(0, keepdim=True)
    if meta.l2_normalize:
        out = F.normalize(out, dim=1)
    return out[0].numpy()


def test_pipeline_matches_direct_forward(tmp_path: Path, tiny_weights: Path):
    paths = write_images(tmp_path, "checker", 3, seed=0, size=80)
    embedder = Embedder.from_file(tiny_weights, device="cpu")
    model, meta = load_weights(tiny_weights)
    for n_crops in (1, 4):
        got, failures = embed_all(embedder, paths, n_crops=n_crops, workers=0, batch_size=2)
        assert not failures
        for vec, path in zip(got, paths):
            np.testing.assert_allclose(vec, direct_embedding(model, meta, path, n_crops), atol=1e-5)


def test_workers_do_not_change_results_or_order(tmp_path: Path, tiny_weights: Path):
    paths = write_images(tmp_path, "smooth", 5, seed=1) + write_images(tmp_path, "checker", 4, seed=2)
    embedder = Embedder.from_file(tiny_weights, device="cpu")
    a = list(embedder.embed_files(paths, workers=0, batch_size=3))
    b = list(embedder.embed_files(paths, workers=2, batch_size=3))
    assert [x.path for x in a] == [x.path for x in b] == paths
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.embedding, y.embedding)


def test_aggregate_crops_is_mean_then_normalise():
    per_crop = torch.tensor([[3.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    owners = torch.tensor([0, 0, 1])
    raw = aggregate_crops(per_crop, owners, 2, l2_normalize=False)
    assert raw.tolist() == [[1.5, 2.0], [1.0, 1.0]]
    unit = aggregate_crops(per_crop, owners, 2, l2_normalize=True)
    np.testing.assert_allclose(unit.numpy(), [[0.6, 0.8], [2**-0.5, 2**-0.5]], atol=1e-6)


def test_vector_is_the_embedding_of_a_good_image_and_refused_for_a_failed_one():
    good = EmbeddedImage(index=0, path=Path("a.png"), embedding=np.ones(3, np.float32))
    assert good.vector is good.embedding
    failed = EmbeddedImage(index=1, path=Path("b.png"), embedding=None, error="not an image")
    with pytest.raises(ValueError, match="b.png has no embedding"):
        _ = failed.vector
