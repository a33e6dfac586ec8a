"""A tiny trained zoo shared by the build tests (training it takes a few seconds)."""

from __future__ import annotations

import pytest
import torch

from tests.zoo.tiny import make_photos, tiny_recipe


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> tuple:
    """(recipe, weights folder) of a tiny zoo, trained once per test session."""
    from osma_cli.zoo.train import train_zoo

    base = tmp_path_factory.mktemp("tiny_zoo")
    recipe = tiny_recipe(make_photos(base / "photos"))
    weights = base / "weights"
    train_zoo(recipe, weights)
    return recipe, weights


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks run fastest on one thread, and do not stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
