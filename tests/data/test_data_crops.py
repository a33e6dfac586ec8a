"""The crop policy: aligned, centred, non-overlapping, ordered, padded by reflection."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from osma_cli.data.crops import GRID, CropTooSmall, crop_origins, extract_crops, random_crop
from osma_cli.errors import UsageError

RNG = np.random.default_rng(7)


def image(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def reflect_index(n: int, i: int) -> int:
    """Index into a length-``n`` axis of position ``i`` of its endless mirror extension."""
    j = i % (2 * n)
    return j if j < n else 2 * n - 1 - j


def reflected_window(img: np.ndarray, top: int, left: int, crop: int) -> np.ndarray:
    rows = [reflect_index(img.shape[0], top + r) for r in range(crop)]
    cols = [reflect_index(img.shape[1], left + c) for c in range(crop)]
    return img[np.ix_(rows, cols)]


SHAPES = [(64, 64), (65, 97), (96, 200), (300, 257), (1000, 40)]


@pytest.mark.parametrize("height,width", SHAPES)
@pytest.mark.parametrize("crop", [16, 24, 30, 64])
def test_centre_crop_aligned_inside_and_centred(height, width, crop):
    if height < crop or width < crop:
        return
    [(top, left)] = crop_origins(height, width, crop)
    for origin, size in ((top, height), (left, width)):
        assert origin % GRID == 0
        assert 0 <= origin <= size - crop
        exact = (size - crop) / 2
        assert exact - GRID < origin <= exact


@pytest.mark.parametrize("height,width", SHAPES)
@pytest.mark.parametrize("crop", [16, 20, 32])
@pytest.mark.parametrize("n_crops", [2, 5, 50])
def test_multi_crops_aligned_disjoint_ordered(height, width, crop, n_crops):
    origins = crop_origins(height, width, crop, n_crops)
    step = -(-crop // GRID) * GRID
    fit = ((height - crop) // step + 1) * ((width - crop) // step + 1)
    assert len(origins) == min(n_crops, fit)
    assert origins == crop_origins(height, width, crop, n_crops)
    for top, left in origins:
        assert top % GRID == 0 and left % GRID == 0
        assert 0 <= top <= height - crop and 0 <= left <= width - crop
    for (t1, l1), (t2, l2) in itertools.combinations(origins, 2):
        assert abs(t1 - t2) >= crop or abs(l1 - l2) >= crop
    distances = [(t + crop / 2 - height / 2) ** 2 + (left + crop / 2 - width / 2) ** 2 for t, left in origins]
    assert distances == sorted(distances)
    every = crop_origins(height, width, crop, 10_000)
    assert every[: len(origins)] == origins


def test_multi_crop_layout_known_case():
    # 3x3 tiles of 32 in 112x112: the block of 96 sits at 8, exactly centred, so ties abound.
    origins = crop_origins(112, 112, 32, 9)
    assert origins[0] == (40, 40)
    assert origins[1:5] == [(8, 40), (40, 8), (40, 72), (72, 40)]  # ties: row-major
    assert origins[5:] == [(8, 8), (8, 72), (72, 8), (72, 72)]
    # 100x100: the block sits at 2, truncated to 0, so the lower-right tiles are nearer.
    assert crop_origins(100, 100, 32, 3) == [(32, 32), (32, 64), (64, 32)]


def test_centred_block_of_tiles():
    # 2 tiles of 64 in 160: block 128 centred at 16 (aligned).
    assert sorted(crop_origins(64, 160, 64, 2)) == [(0, 16), (0, 80)]


def test_extract_crops_equals_slicing():
    img = image(96, 200)
    for n in (1, 3, 6):
        crops = extract_crops(img, 32, n)
        origins = crop_origins(96, 200, 32, n)
        assert crops.shape == (len(origins), 3, 32, 32) and crops.dtype == np.uint8
        assert crops.flags.c_contiguous
        for crop, (top, left) in zip(crops, origins):
            expected = img[top : top + 32, left : left + 32].transpose(2, 0, 1)
            np.testing.assert_array_equal(crop, expected)


def test_exact_fit_is_the_whole_image():
    img = image(48, 48)
    np.testing.assert_array_equal(extract_crops(img, 48, 4)[0], img.transpose(2, 0, 1))
    assert extract_crops(img, 48, 4).shape[0] == 1


@pytest.mark.parametrize("height,width", [(20, 100), (100, 20), (20, 30), (1, 1), (3, 70), (60, 61)])
def test_small_image_reflect_padded(height, width):
    crop = 64
    img = image(height, width)
    crops = extract_crops(img, crop, n_crops=5)
    assert crops.shape == (1, 3, crop, crop)
    [(top, left)] = crop_origins(height, width, crop, n_crops=5)
    for origin, size in ((top, height), (left, width)):
        assert origin % GRID == 0
        if size < crop:
            assert size - crop <= origin <= 0  # the whole side is inside the crop
    expected = reflected_window(img, top, left, crop).transpose(2, 0, 1)
    np.testing.assert_array_equal(crops[0], expected)
    if height < crop and width < crop:
        expected = np.pad(img, ((-top, crop - height + top), (-left, crop - width + left), (0, 0)), mode="symmetric")
        np.testing.assert_array_equal(crops[0], expected.transpose(2, 0, 1))


def test_small_image_placed_at_aligned_offset():
    img = image(20, 100)
    [(top, left)] = crop_origins(20, 100, 64)
    assert top == -16  # (64 - 20) / 2 = 22, truncated to 16: the image keeps its block phase
    crop = extract_crops(img, 64)[0]
    np.testing.assert_array_equal(crop[:, 16:36, :], img[:, left : left + 64].transpose(2, 0, 1))


def test_skip_small_images():
    with pytest.raises(CropTooSmall, match="40x20, smaller than the crop size 32") as caught:
        extract_crops(image(20, 40), 32, small="skip")
    assert isinstance(caught.value, ValueError)
    assert extract_crops(image(32, 40), 32, small="skip").shape == (1, 3, 32, 32)


@pytest.mark.parametrize("bad", [dict(crop=0), dict(n_crops=0), dict(small="stretch")])
def test_bad_arguments(bad):
    args = dict(crop=16, n_crops=1, small="pad") | bad
    with pytest.raises(UsageError):
        extract_crops(image(32, 32), args["crop"], args["n_crops"], small=args["small"])
    with pytest.raises(UsageError):
        extract_crops(np.zeros((32, 32), np.uint8), 16)


def test_random_crop_aligned_uniform_and_exact():
    img = image(64, 72)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        crop = random_crop(img, 32, rng)
        assert crop.shape == (3, 32, 32) and crop.dtype == np.uint8
        matches = [
            (t, x)
            for t in range(0, 33, GRID)
            for x in range(0, 41, GRID)
            if np.array_equal(crop, img[t : t + 32, x : x + 32].transpose(2, 0, 1))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 5 * 6  # every aligned origin is reached
    first, second = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(random_crop(img, 32, first), random_crop(img, 32, second))


def test_random_crop_small_image_padded_like_extract():
    img = image(20, 100)
    rng = np.random.default_rng(1)
    for _ in range(20):
        crop = random_crop(img, 64, rng)
        assert crop.shape == (3, 64, 64)
        rows = crop[:, 16:36, :]
        lefts = [x for x in range(0, 37, GRID) if np.array_equal(rows, img[:, x : x + 64].transpose(2, 0, 1))]
        assert len(lefts) == 1
    tiny = image(5, 7)
    np.testing.assert_array_equal(random_crop(tiny, 16, rng), extract_crops(tiny, 16)[0])
