"""Re-saved copies of a photo: what each kind does to the pixels, and the names users type."""

from __future__ import annotations

import numpy as np
import pytest

from osma_cli.data.augment import jpeg_recompress
from osma_cli.data.resave import Resave, parse_resave, parse_resaves
from osma_cli.errors import UsageError


def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(40, 64, 3), dtype=np.uint8)


def test_each_copy_does_what_its_name_says():
    pixels = photo()
    assert Resave("original").apply(pixels) is pixels
    assert parse_resave("resize:0.5").apply(pixels).shape == (20, 32, 3)
    np.testing.assert_array_equal(parse_resave("offgrid:3").apply(pixels), pixels[3:, 3:])
    np.testing.assert_array_equal(parse_resave("jpeg:90").apply(pixels), jpeg_recompress(pixels, 90))
    assert [parse_resave(n).lossless for n in ("resize:0.5", "offgrid:3", "jpeg:90")] == [True, True, False]


def test_names_round_trip_and_original_comes_first_once():
    copies = parse_resaves("jpeg:90,original,resize:0.75,jpeg:90", ())
    assert [c.name for c in copies] == ["original", "jpeg:90", "resize:0.75"]
    assert [c.name for c in parse_resaves(None, ("offgrid:5",))] == ["original", "offgrid:5"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("blur:3", "unknown"),
        ("jpeg:200", "quality"),
        ("offgrid:8", "multiple of 8"),
        ("resize:x", "not a number"),
        ("original:1", "unknown"),
        ("resize:9", "factor"),
    ],
)
def test_bad_names_say_what_to_write(text, words):
    with pytest.raises(UsageError, match=words):
        parse_resave(text)
