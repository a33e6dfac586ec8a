"""Training augmentation: JPEG re-compression and the random-crop transform."""

from __future__ import annotations

import numpy as np
import pytest

from osma_cli.data.augment import JPEG_QUALITIES, TrainTransform, eval_transform, jpeg_recompress
from osma_cli.data.crops import extract_crops, random_crop
from osma_cli.data.perturb import parse_perturbations
from osma_cli.errors import UsageError


def textured(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 120 + 60 * np.sin(xx / 5 + yy / 9)[..., None] * np.array([1.0, 0.6, 0.3])
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def test_qualities_are_fangs() -> None:
    assert JPEG_QUALITIES == (75, 80, 85, 90, 95, None)


@pytest.mark.parametrize("quality", [75, 95])
def test_jpeg_recompress_keeps_shape_and_changes_pixels(quality: int) -> None:
    image = textured()
    out = jpeg_recompress(image, quality)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.abs(out.astype(int) - image).mean() < 20


def test_lower_quality_loses_more() -> None:
    image = textured()
    errors = [np.abs(jpeg_recompress(image, q).astype(int) - image).mean() for q in (75, 95)]
    assert errors[0] > errors[1]


def test_recompression_on_the_block_grid_is_nearly_idempotent() -> None:
    """Why crops are 8-aligned: re-compressing an aligned crop of a JPEG at its quality
    changes little; shifted by 4 pixels, the blocks no longer match and it changes more."""
    compressed = jpeg_recompress(textured(96, 96, seed=3), 90)
    aligned = compressed[16:80, 16:80]
    shifted = compressed[20:84, 20:84]
    aligned_change = np.abs(jpeg_recompress(aligned, 90).astype(int) - aligned).mean()
    shifted_change = np.abs(jpeg_recompress(shifted, 90).astype(int) - shifted).mean()
    assert aligned_change < 0.5 * shifted_change


@pytest.mark.parametrize("quality", [0, 101, 85.0, True, None])
def test_jpeg_recompress_refuses_bad_quality(quality) -> None:
    with pytest.raises(UsageError):
        jpeg_recompress(textured(), quality)


def test_jpeg_recompress_refuses_non_rgb_uint8() -> None:
    with pytest.raises(UsageError):
        jpeg_recompress(textured().astype(np.float32), 90)
    with pytest.raises(UsageError):
        jpeg_recompress(textured()[..., 0], 90)


def test_train_transform_shape_and_determinism() -> None:
    image = textured()
    transform = TrainTransform(32)
    first = transform(image, np.random.default_rng(7))
    again = transform(image, np.random.default_rng(7))
    assert first.shape == (3, 32, 32) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    others = [transform(image, np.random.default_rng(seed)) for seed in range(8)]
    assert any(not np.array_equal(first, other) for other in others)


def test_quality_none_is_the_plain_random_crop() -> None:
    image = textured()
    out = TrainTransform(32, jpeg_qualities=(None,))(image, np.random.default_rng(3))
    np.testing.assert_array_equal(out, random_crop(image, 32, np.random.default_rng(3)))


def test_a_quality_recompresses_the_crop() -> None:
    image = textured()
    out = TrainTransform(32, jpeg_qualities=(75,))(image, np.random.default_rng(3))
    crop = random_crop(image, 32, np.random.default_rng(3))
    expected = jpeg_recompress(np.ascontiguousarray(crop.transpose(1, 2, 0)), 75)
    np.testing.assert_array_equal(out, expected.transpose(2, 0, 1))
    assert not np.array_equal(out, crop)


def test_qualities_are_drawn_uniformly() -> None:
    """Each quality is drawn about equally often (the crop is the same for every quality)."""
    image = textured(32, 32)
    transform = TrainTransform(32, jpeg_qualities=(75, None))
    plain = image.transpose(2, 0, 1)
    untouched = sum(np.array_equal(transform(image, np.random.default_rng(s)), plain) for s in range(200))
    assert 70 < untouched < 130


def test_small_images_are_padded() -> None:
    out = TrainTransform(32)(textured(20, 24), np.random.default_rng(0))
    assert out.shape == (3, 32, 32)


@pytest.mark.parametrize("qualities", [(), (0,), (75, 120), ("90",)])
def test_train_transform_refuses_bad_qualities(qualities) -> None:
    with pytest.raises(UsageError):
        TrainTransform(32, jpeg_qualities=qualities)


def test_train_transform_refuses_bad_crop() -> None:
    with pytest.raises(UsageError):
        TrainTransform(0)


def test_eval_transform_is_the_centre_crop() -> None:
    image = textured(70, 90)
    out = eval_transform(image, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, extract_crops(image, 32, 1)[0])
    np.testing.assert_array_equal(out, eval_transform(image, 32))


def expected_perturbed_crop(image: np.ndarray, perturbations, seed: int, crop: int, quality: int | None) -> np.ndarray:
    """The transform's draws replayed by hand: which perturbation (or none), the crop, no
    quality draw needed when the qualities are a single one."""
    rng = np.random.default_rng(seed)
    drawn = int(rng.integers(len(perturbations) + 1))
    if drawn < len(perturbations):
        image = perturbations[drawn].apply(image, rng)
    chw = random_crop(image, crop, rng)
    if quality is None:
        return chw
    return np.ascontiguousarray(
        jpeg_recompress(np.ascontiguousarray(chw.transpose(1, 2, 0)), quality).transpose(2, 0, 1)
    )


def test_no_perturbations_draws_exactly_as_before() -> None:
    """The default transform is the paper's, draw for draw (trained weights stay the same)."""
    image = textured(96, 120, seed=5)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        chw = random_crop(image, 32, rng)
        quality = JPEG_QUALITIES[int(rng.integers(len(JPEG_QUALITIES)))]
        expected = (
            chw
            if quality is None
            else np.ascontiguousarray(
                jpeg_recompress(np.ascontiguousarray(chw.transpose(1, 2, 0)), quality).transpose(2, 0, 1)
            )
        )
        out = TrainTransform(crop=32, perturbations=())(image, np.random.default_rng(seed))
        assert np.array_equal(out, expected)


@pytest.mark.parametrize("quality", [None, 90])
def test_perturbations_apply_to_the_whole_image_before_the_crop(quality) -> None:
    perturbations = parse_perturbations(["resize:0.5", "noise:4"])
    transform = TrainTransform(crop=32, jpeg_qualities=(quality,), perturbations=perturbations)
    image = textured(128, 128, seed=2)
    outcomes = set()
    for seed in range(24):
        out = transform(image, np.random.default_rng(seed))
        assert out.shape == (3, 32, 32) and out.dtype == np.uint8
        assert np.array_equal(out, expected_perturbed_crop(image, perturbations, seed, 32, quality))
        assert np.array_equal(out, transform(image, np.random.default_rng(seed)))
        outcomes.add(int(np.random.default_rng(seed).integers(3)))
    assert outcomes == {0, 1, 2}, "the seeds should exercise each perturbation and none"


def test_a_resized_image_is_cropped_at_its_new_size() -> None:
    """resize:0.5 of a 64-pixel image leaves 32 pixels: a 32-pixel crop is then the whole
    resized image, so the output is exactly the Lanczos reduction (an independent Pillow call)."""
    from PIL import Image

    image = textured(64, 64, seed=4)
    transform = TrainTransform(crop=32, jpeg_qualities=(None,), perturbations=parse_perturbations(["resize:0.5"]))
    reduced = np.asarray(Image.fromarray(image).resize((32, 32), resample=Image.Resampling.LANCZOS))
    seen_resized = seen_plain = False
    for seed in range(12):
        out = transform(image, np.random.default_rng(seed))
        if int(np.random.default_rng(seed).integers(2)) == 0:
            assert np.array_equal(out, reduced.transpose(2, 0, 1))
            seen_resized = True
        else:
            seen_plain = True
    assert seen_resized and seen_plain
