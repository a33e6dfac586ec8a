"""The procedural third training set."""

from __future__ import annotations

import numpy as np
import pytest

from osma_cli.errors import UsageError
from osma_cli.zoo.deadleaves import dead_leaves, dead_leaves_set


def test_same_seed_same_image_other_seed_other_image():
    a, b, c = dead_leaves(32, 1), dead_leaves(32, 1), dead_leaves(32, 2)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_images_have_edges_and_colour():
    image = dead_leaves(64, 3).astype(float)
    assert image.std() > 20
    assert np.abs(np.diff(image, axis=1)).max() > 40
    assert np.abs(image[..., 0] - image[..., 2]).mean() > 2


def test_set_is_reproducible():
    first, second = dead_leaves_set(3, 16, seed=9), dead_leaves_set(3, 16, seed=9)
    assert len(first) == 3
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    assert not np.array_equal(first[0], first[1])


def test_refuses_tiny_sizes():
    with pytest.raises(UsageError):
        dead_leaves(2, 0)
