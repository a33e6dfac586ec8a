"""Where crops are taken from an image: the crop policy, in one place.

Images are never resampled; the network sees crops of the stored pixels.

Grid alignment. Every crop origin is a multiple of ``GRID`` (8) in both axes, at test time
and in training. A JPEG stores 8x8 blocks, and many generators up-sample by factors of 2,
so their traces are periodic with periods dividing 8; an aligned crop keeps the phase of
these patterns as it was in the full image, so every crop of every image presents them the
same way. Training crops are aligned for the same reason: a network trained on one phase
and tested on another would see a distribution it never learnt, and a JPEG re-compression
applied to an aligned training crop falls on the original block grid, as it would when
the whole image is re-compressed.

Test-time crops (``crop_origins``, ``extract_crops``):

- ``n_crops=1``: the centre crop. Along each axis the origin is ``(size - crop) / 2``
  truncated toward zero to a multiple of ``GRID``.
- ``n_crops=N > 1``: ``N`` non-overlapping crops. The image is tiled with crops whose
  origins are ``GRID``-aligned and ``ceil(crop / GRID) * GRID`` apart (so tiles do not
  overlap even when ``crop`` is not a multiple of ``GRID``); the block of tiles is centred
  as above. Tiles are ordered by the distance of their centre to the image centre, ties
  in row-major order, and the first ``N`` are taken. When fewer than ``N`` fit, all that
  fit are returned: callers get between 1 and ``N`` crops.

Images smaller than the crop on a side, by ``small``:

- ``"pad"`` (default): along that side the whole image is taken and mirror-padded to the
  crop size (``np.pad(mode="symmetric")``, repeated reflection for tiny images). The
  origin follows the same centred rule and is negative: the image sits at a ``GRID``-aligned
  offset inside the crop, keeping its block phase. Exactly one crop is returned, whatever
  ``n_crops``, because further crops would only repeat the padded pixels.
- ``"skip"``: ``CropTooSmall`` is raised; the dataset reports it for that file.
- ``"keep"`` (descriptors, which measure the pixels' own correlations and would measure the
  padding instead): along that side the whole image is taken, unpadded, so the crop is
  ``min(H, crop) x min(W, crop)``; along a side at least as long as the crop, the centred
  rule as above. Exactly one crop, whatever ``n_crops``.
"""

from __future__ import annotations

import numpy as np

from osma_cli.errors import UsageError

GRID = 8
"""Crop origins are multiples of this, keeping the JPEG 8x8 block phase of the original."""

SMALL_POLICIES = ("pad", "skip", "keep")


class CropTooSmall(ValueError):
    """The image is smaller than the crop on a side and ``small="skip"`` was asked for."""

    def __init__(self, height: int, width: int, crop: int) -> None:
        super().__init__(f"image is {width}x{height}, smaller than the crop size {crop}")
        self.height = height
        self.width = width
        self.crop = crop


def check_crop_policy(crop: int, n_crops: int = 1, small: str = "pad") -> None:
    """Refuse a crop size, crop count or small-image policy that has no meaning."""
    if crop < 1:
        raise UsageError(f"crop size must be at least 1, not {crop}")
    if n_crops < 1:
        raise UsageError(f"number of crops must be at least 1, not {n_crops}")
    if small not in SMALL_POLICIES:
        raise UsageError(f"unknown small-image policy {small!r}", hint="use pad, skip or keep")


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise UsageError(f"image has no pixels: {image.shape}")


def centred_origin(size: int, extent: int) -> int:
    """Origin that centres ``extent`` on ``size``, truncated toward zero to the grid.

    Truncating toward zero keeps a negative origin (padding) inside ``[size - extent, 0]``
    and a positive one inside ``[0, size - extent]``, so no clamping is needed.
    """
    offset = abs(size - extent) // 2 // GRID * GRID
    return offset if size >= extent else -offset


def _tile_origins(size: int, crop: int) -> list[int]:
    step = -(-crop // GRID) * GRID
    count = (size - crop) // step + 1
    start = centred_origin(size, (count - 1) * step + crop)
    return [start + k * step for k in range(count)]


def crop_origins(height: int, width: int, crop: int, n_crops: int = 1) -> list[tuple[int, int]]:
    """``(top, left)`` of each test-time crop, in the order described in the module docstring.

    A negative coordinate means the image is smaller than the crop on that axis and the
    crop starts that many pixels before it (filled by reflection).
    """
    check_crop_policy(crop, n_crops)
    if height < 1 or width < 1:
        raise UsageError(f"image has no pixels: {height}x{width}")
    if n_crops == 1 or height < crop or width < crop:
        return [(centred_origin(height, crop), centred_origin(width, crop))]
    lefts = _tile_origins(width, crop)
    tiles = [(top, left) for top in _tile_origins(height, crop) for left in lefts]

    def doubled_distance(origin: tuple[int, int]) -> int:
        top, left = origin
        return (2 * top + crop - height) ** 2 + (2 * left + crop - width) ** 2

    tiles.sort(key=lambda origin: (doubled_distance(origin), origin))
    return tiles[:n_crops]


def _axis_window(size: int, origin: int, crop: int) -> tuple[slice, tuple[int, int]]:
    """Slice of the image along one axis and the reflection padding (before, after)."""
    if size >= crop:
        return slice(origin, origin + crop), (0, 0)
    return slice(0, size), (-origin, crop - size + origin)


def _window(image: np.ndarray, top: int, left: int, crop: int) -> np.ndarray:
    """One ``(crop, crop, 3)`` window, mirror-padded where it extends past the image."""
    rows, row_pad = _axis_window(image.shape[0], top, crop)
    cols, col_pad = _axis_window(image.shape[1], left, crop)
    window = image[rows, cols]
    if row_pad != (0, 0) or col_pad != (0, 0):
        window = np.pad(window, (row_pad, col_pad, (0, 0)), mode="symmetric")
    return window


def _unpadded_window(image: np.ndarray, crop: int) -> np.ndarray:
    """The centred window of at most ``crop`` per side, never padded (the ``keep`` policy)."""
    height, width = image.shape[:2]
    top = centred_origin(height, crop) if height >= crop else 0
    left = centred_origin(width, crop) if width >= crop else 0
    return image[top : top + min(height, crop), left : left + min(width, crop)]


def _too_small(image: np.ndarray, crop: int) -> bool:
    return image.shape[0] < crop or image.shape[1] < crop


def extract_crops(image: np.ndarray, crop: int, n_crops: int = 1, *, small: str = "pad") -> np.ndarray:
    """Test-time crops of an ``(H, W, 3) uint8`` image as ``(n, 3, crop, crop) uint8`` CHW.

    ``n`` is ``n_crops`` or fewer (see the module docstring); raises ``CropTooSmall`` for a
    small image when ``small="skip"``.
    """
    check_crop_policy(crop, n_crops, small)
    _check_image(image)
    if small == "skip" and _too_small(image, crop):
        raise CropTooSmall(image.shape[0], image.shape[1], crop)
    if small == "keep" and _too_small(image, crop):
        return np.ascontiguousarray(_unpadded_window(image, crop).transpose(2, 0, 1)[None])
    origins = crop_origins(image.shape[0], image.shape[1], crop, n_crops)
    windows = np.stack([_window(image, top, left, crop) for top, left in origins])
    return np.ascontiguousarray(windows.transpose(0, 3, 1, 2))


def random_crop(image: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """One training crop, ``(3, crop, crop) uint8`` CHW, at a uniformly drawn aligned origin.

    Along each axis the origin is drawn uniformly from the multiples of ``GRID`` in
    ``[0, size - crop]`` (top first, then left). An axis shorter than the crop is padded
    exactly as in ``extract_crops``; nothing is drawn for it.
    """
    check_crop_policy(crop)
    _check_image(image)

    def origin(size: int) -> int:
        if size < crop:
            return centred_origin(size, crop)
        return GRID * int(rng.integers(0, (size - crop) // GRID + 1))

    top = origin(image.shape[0])
    left = origin(image.shape[1])
    return np.ascontiguousarray(_window(image, top, left, crop).transpose(2, 0, 1))
