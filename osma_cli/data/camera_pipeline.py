"""Simulated camera pipelines: a photo, taken as scene radiance, re-rendered as a camera
would (colour-filter array, demosaicing, denoising and sharpening, tone, JPEG).

The traces such a pipeline leaves are what camera-model pre-training teaches the
embedding (``osma_cli.data.camera_sim``, one class per pipeline; ``make_pipelines`` gives
pipelines with pairwise distinct settings).

A pipeline (``CameraPipeline.render``), in order:

1. Crop to even height and width (top-left kept, so the colour-filter phase starts at the
   origin); never resample.
2. Undo an approximate display gamma (``v ** 2.2``): the photo becomes linear "radiance".
3. Sample it through a Bayer colour-filter array (``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``).
4. Demosaic: ``bilinear``; ``malvar2004`` (Malvar, He & Cutler 2004: gradient-corrected
   bilinear, the published 5x5 filters); ``menon2007`` (Menon, Andriani & Calvagno 2007,
   DDFAPD: directional green interpolation with an a-posteriori decision, then refinement;
   edge-aware).
5. Denoise (Gaussian blur of standard deviation ``denoise``), then sharpen (unsharp mask of
   amount ``sharpen`` over a Gaussian of standard deviation 1).
6. Tone: gamma encoding ``v ** (1 / gamma)``, then an S-curve blended in with weight
   ``tone`` (``v + tone * (3v^2 - 2v^3 - v)``), then rounding to 8 bits.
7. JPEG with the pipeline's own quantisation tables: the IJG tables scaled to
   ``jpeg_quality`` (libjpeg's formula), each entry multiplied by a factor drawn from
   ``seed`` in ``[1 - qtable_jitter, 1 + qtable_jitter]`` (camera makers ship their own
   tables), and the pipeline's chroma subsampling.

The demosaicing is written here with numpy, not taken from ``colour-demosaicing``: that
package imports ``colour-science`` (about 100 MB installed), which imports matplotlib when
it is present (about 1,400 modules, 1.1-1.6 s, and a font cache written to the home
folder), requires numpy 2, and its Menon 2007 runs at about 90 crops of 160 px per second,
below what pre-training needs. The filters below are the published ones; the results agree
with ``colour-demosaicing`` 0.2.7 away from the image border. At the border this module
mirrors the mosaic about the edge pixel (``np.pad(mode="reflect")``), which keeps every
mirrored sample on a site of its own colour.

The rendering a crop needs is local (``CameraPipeline.reach``, ``CameraPipeline.margin``):
``osma_cli.data.camera_sim`` renders only a region around each crop.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from osma_cli.errors import UsageError

CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
DEMOSAIC_METHODS: tuple[str, ...] = ("bilinear", "malvar2004", "menon2007")
SUBSAMPLINGS: tuple[str, ...] = ("4:2:0", "4:2:2", "4:4:4")
ALIGN = 16
"""Regions start on multiples of this: the colour-filter period (2) and the JPEG MCU (16)."""
_DEMOSAIC_REACH = {"bilinear": 1, "malvar2004": 2, "menon2007": 8}
"""How far (pixels) a raw sample changes the demosaiced image, measured with impulses."""
_SHARPEN_SIGMA = 1.0

_SCENE_GAMMA = 2.2
_TO_LINEAR = ((np.arange(256, dtype=np.float64) / 255.0) ** _SCENE_GAMMA).astype(np.float32)
_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_MAX_BLUR_SIGMA = 3.0

_IJG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]
)
_IJG_CHROMA = np.array(
    [
        17,
        18,
        24,
        47,
        99,
        99,
        99,
        99,
        18,
        21,
        26,
        66,
        99,
        99,
        99,
        99,
        24,
        26,
        56,
        99,
        99,
        99,
        99,
        99,
        47,
        66,
        99,
        99,
        99,
        99,
        99,
        99,
        *([99] * 32),
    ]
)


# --- colour-filter array and demosaicing -------------------------------------------------


def _masks(shape: tuple[int, int], cfa: str) -> np.ndarray:
    """``(3, H, W) bool``: where the mosaic holds R, G and B. ``cfa`` reads the 2x2 tile
    row by row (``"RGGB"``: R at (0, 0), G at (0, 1) and (1, 0), B at (1, 1))."""
    masks = np.zeros((3, *shape), dtype=bool)
    for colour, (dy, dx) in zip(cfa, ((0, 0), (0, 1), (1, 0), (1, 1))):
        masks["RGB".index(colour), dy::2, dx::2] = True
    return masks


def mosaic(linear: np.ndarray, cfa: str) -> np.ndarray:
    """``(H, W)`` raw samples of an ``(H, W, 3)`` image through the colour filter ``cfa``."""
    raw = np.empty(linear.shape[:2], dtype=linear.dtype)
    for colour, (dy, dx) in zip(cfa, ((0, 0), (0, 1), (1, 0), (1, 1))):
        raw[dy::2, dx::2] = linear[dy::2, dx::2, "RGB".index(colour)]
    return raw


def _correlate(x: np.ndarray, kernel: np.ndarray, mode: Literal["reflect", "constant"] = "reflect") -> np.ndarray:
    """2-D correlation of ``x`` with an odd-sized ``kernel``, summing only non-zero taps
    (the demosaicing filters are sparse). ``mode`` is ``np.pad``'s."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ry, ry), (rx, rx)), mode=mode)
    height, width = x.shape
    out = np.zeros_like(x)
    for dy, dx in zip(*np.nonzero(kernel)):
        out += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return out


def _row(taps: Sequence[float]) -> np.ndarray:
    return np.asarray(taps, dtype=np.float32)[None, :]


def _horizontal(x: np.ndarray, taps: Sequence[float]) -> np.ndarray:
    return _correlate(x, _row(taps))


def _vertical(x: np.ndarray, taps: Sequence[float]) -> np.ndarray:
    return _correlate(x, _row(taps).T)


def _bilinear(raw: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Each missing sample is the mean of its nearest same-colour neighbours."""
    green = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4
    red_blue = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4
    r_m, g_m, b_m = masks
    return np.stack(
        [_correlate(raw * r_m, red_blue), _correlate(raw * g_m, green), _correlate(raw * b_m, red_blue)], axis=-1
    )


_MALVAR_G = (
    np.array(
        [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]], dtype=np.float32
    )
    / 8
)
_MALVAR_ROW = (
    np.array(
        [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]],
        dtype=np.float32,
    )
    / 8
)
_MALVAR_DIAG = (
    np.array(
        [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]],
        dtype=np.float32,
    )
    / 8
)


def _rows_and_columns(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(H, 1)`` and ``(1, W)``: rows and columns holding samples of ``mask``."""
    return np.asarray(mask.any(axis=1))[:, None], np.asarray(mask.any(axis=0))[None, :]


def _malvar2004(raw: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Malvar, He & Cutler (2004): bilinear plus a Laplacian correction from the sampled
    colour, as 5x5 linear filters chosen by site."""
    r_m, g_m, b_m = masks
    green = np.where(g_m, raw, _correlate(raw, _MALVAR_G))
    along_row = _correlate(raw, _MALVAR_ROW)
    along_column = _correlate(raw, _MALVAR_ROW.T)
    diagonal = _correlate(raw, _MALVAR_DIAG)
    r_rows, r_cols = _rows_and_columns(r_m)
    b_rows, b_cols = _rows_and_columns(b_m)
    red = np.where(r_m, raw, 0)
    red = np.where(r_rows & b_cols, along_row, red)
    red = np.where(b_rows & r_cols, along_column, red)
    red = np.where(b_rows & b_cols, diagonal, red)
    blue = np.where(b_m, raw, 0)
    blue = np.where(b_rows & r_cols, along_row, blue)
    blue = np.where(r_rows & b_cols, along_column, blue)
    blue = np.where(r_rows & r_cols, diagonal, blue)
    return np.stack([red, green, blue], axis=-1).astype(np.float32, copy=False)


_MENON_CLASSIFIER = np.array(
    [[0, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 3, 0, 3], [0, 0, 0, 1, 0], [0, 0, 1, 0, 1]], dtype=np.float32
)
_HALF = (0.5, 0.0, 0.5)
_THIRD = (1 / 3, 1 / 3, 1 / 3)


def _menon2007(raw: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Menon, Andriani & Calvagno (2007), DDFAPD: green interpolated along rows and along
    columns, the direction with the smaller colour-difference gradient kept per pixel, red
    and blue from colour differences in that direction, then the paper's refinement."""
    r_m, g_m, b_m = masks
    taps = (-0.25, 0.5, 0.5, 0.5, -0.25)
    green_h = np.where(g_m, raw, _horizontal(raw, taps))
    green_v = np.where(g_m, raw, _vertical(raw, taps))
    chroma = r_m | b_m
    diff_h = np.where(chroma, raw - green_h, 0)
    diff_v = np.where(chroma, raw - green_v, 0)
    grad_h = np.abs(diff_h - np.pad(diff_h, ((0, 0), (0, 2)), mode="reflect")[:, 2:])
    grad_v = np.abs(diff_v - np.pad(diff_v, ((0, 2), (0, 0)), mode="reflect")[2:, :])
    score_h = _correlate(grad_h, _MENON_CLASSIFIER[::-1, ::-1], mode="constant")
    score_v = _correlate(grad_v, _MENON_CLASSIFIER.T[::-1, ::-1], mode="constant")
    along_rows = score_v >= score_h
    green = np.where(along_rows, green_h, green_v)

    r_rows, _ = _rows_and_columns(r_m)
    b_rows, _ = _rows_and_columns(b_m)
    red = np.where(r_m, raw, 0)
    blue = np.where(b_m, raw, 0)
    h_green, v_green = _horizontal(green, _HALF), _vertical(green, _HALF)
    red = np.where(g_m & r_rows, green + _horizontal(red, _HALF) - h_green, red)
    red = np.where(g_m & b_rows, green + _vertical(red, _HALF) - v_green, red)
    blue = np.where(g_m & b_rows, green + _horizontal(blue, _HALF) - h_green, blue)
    blue = np.where(g_m & r_rows, green + _vertical(blue, _HALF) - v_green, blue)
    red = np.where(
        b_m,
        np.where(
            along_rows,
            blue + _horizontal(red, _HALF) - _horizontal(blue, _HALF),
            blue + _vertical(red, _HALF) - _vertical(blue, _HALF),
        ),
        red,
    )
    blue = np.where(
        r_m,
        np.where(
            along_rows,
            red + _horizontal(blue, _HALF) - _horizontal(red, _HALF),
            red + _vertical(blue, _HALF) - _vertical(red, _HALF),
        ),
        blue,
    )
    return _menon_refine(red, green, blue, masks, along_rows)


def _directional(x: np.ndarray, along_rows: np.ndarray, taps: Sequence[float]) -> np.ndarray:
    return np.where(along_rows, _horizontal(x, taps), _vertical(x, taps))


def _menon_refine(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, masks: np.ndarray, along_rows: np.ndarray
) -> np.ndarray:
    """Menon's refinement: smooth colour differences along the chosen direction."""
    r_m, g_m, b_m = masks
    r_rows, r_cols = _rows_and_columns(r_m)
    b_rows, b_cols = _rows_and_columns(b_m)
    blue_green = np.where(b_m, _directional(blue - green, along_rows, _THIRD), 0)
    red_green = np.where(r_m, _directional(red - green, along_rows, _THIRD), 0)
    green = np.where(r_m, red - red_green, green)
    green = np.where(b_m, blue - blue_green, green)

    diff = red - green
    red_green = np.where(g_m & b_rows, _vertical(diff, _HALF), red_green)
    red = np.where(g_m & b_rows, green + red_green, red)
    red_green = np.where(g_m & b_cols, _horizontal(diff, _HALF), red_green)
    red = np.where(g_m & b_cols, green + red_green, red)
    diff = blue - green
    blue_green = np.where(g_m & r_rows, _vertical(diff, _HALF), blue_green)
    blue = np.where(g_m & r_rows, green + blue_green, blue)
    blue_green = np.where(g_m & r_cols, _horizontal(diff, _HALF), blue_green)
    blue = np.where(g_m & r_cols, green + blue_green, blue)

    red_blue = red - blue
    red = np.where(b_m, blue + np.where(b_m, _directional(red_blue, along_rows, _THIRD), 0), red)
    blue = np.where(r_m, red - np.where(r_m, _directional(red_blue, along_rows, _THIRD), 0), blue)
    return np.stack([red, green, blue], axis=-1).astype(np.float32, copy=False)


_DEMOSAIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "bilinear": _bilinear,
    "malvar2004": _malvar2004,
    "menon2007": _menon2007,
}


def demosaic(raw: np.ndarray, cfa: str, method: str) -> np.ndarray:
    """``(H, W, 3) float32`` from ``(H, W)`` raw samples (even H and W) by ``method``."""
    if cfa not in CFA_PATTERNS:
        raise UsageError(f"unknown colour-filter pattern {cfa!r}", hint=f"use one of {', '.join(CFA_PATTERNS)}")
    if method not in _DEMOSAIC:
        raise UsageError(f"unknown demosaicing method {method!r}", hint=f"use one of {', '.join(DEMOSAIC_METHODS)}")
    raw = np.asarray(raw, dtype=np.float32)
    return _DEMOSAIC[method](raw, _masks(raw.shape, cfa))


# --- the rest of the pipeline ------------------------------------------------------------


def _blur_radius(sigma: float) -> int:
    return max(1, math.ceil(3 * sigma))


@functools.lru_cache(maxsize=64)
def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = _blur_radius(sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    return (taps / taps.sum()).astype(np.float32)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an ``(H, W, 3)`` float image, mirrored at the border."""
    taps = _gaussian_taps(sigma)
    radius = len(taps) // 2
    height, width = image.shape[:2]
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    rows = np.zeros_like(image)
    for k, tap in enumerate(taps):
        rows += tap * padded[k : k + height]
    padded = np.pad(rows, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = np.zeros_like(image)
    for k, tap in enumerate(taps):
        out += tap * padded[:, k : k + width]
    return out


@functools.lru_cache(maxsize=1024)
def _quantisation_tables(seed: int, quality: int, jitter: float) -> tuple[tuple[int, ...], ...]:
    """Luma and chroma tables (natural order, as Pillow takes them): IJG scaled to
    ``quality`` with libjpeg's formula, each entry then perturbed by a seeded factor."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    rng = np.random.default_rng([seed, 0x9A7])
    tables = []
    for base in (_IJG_LUMA, _IJG_CHROMA):
        table = np.floor((base * scale + 50) / 100)
        table = np.rint(table * rng.uniform(1 - jitter, 1 + jitter, size=64))
        tables.append(tuple(int(v) for v in np.clip(table, 1, 255)))
    return tuple(tables)


def _jpeg(pixels: np.ndarray, tables: tuple[tuple[int, ...], ...], subsampling: str) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(
        buffer, format="JPEG", qtables=[list(t) for t in tables], subsampling=_PIL_SUBSAMPLING[subsampling]
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"), dtype=np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise UsageError(f"image too small to mosaic: {image.shape[1]}x{image.shape[0]}")


@dataclass(frozen=True)
class CameraPipeline:
    """One simulated camera: fixed processing choices, and a seed for what it draws itself
    (the perturbation of its quantisation tables). Equal fields render equal pixels."""

    seed: int
    cfa: str
    demosaic: str
    denoise: float
    sharpen: float
    gamma: float
    tone: float
    jpeg_quality: int
    subsampling: str = "4:2:0"
    qtable_jitter: float = 0.15

    def __post_init__(self) -> None:
        if self.cfa not in CFA_PATTERNS:
            raise UsageError(
                f"unknown colour-filter pattern {self.cfa!r}", hint=f"use one of {', '.join(CFA_PATTERNS)}"
            )
        if self.demosaic not in DEMOSAIC_METHODS:
            raise UsageError(
                f"unknown demosaicing method {self.demosaic!r}", hint=f"use one of {', '.join(DEMOSAIC_METHODS)}"
            )
        if self.subsampling not in SUBSAMPLINGS:
            raise UsageError(
                f"unknown chroma subsampling {self.subsampling!r}", hint=f"use one of {', '.join(SUBSAMPLINGS)}"
            )
        if self.seed < 0:
            raise UsageError(f"pipeline seed must be 0 or more, not {self.seed}")
        if not 0 <= self.denoise <= _MAX_BLUR_SIGMA:
            raise UsageError(f"denoise must be in [0, {_MAX_BLUR_SIGMA}], not {self.denoise}")
        if self.sharpen < 0:
            raise UsageError(f"sharpen must be 0 or more, not {self.sharpen}")
        if self.gamma <= 0:
            raise UsageError(f"gamma must be positive, not {self.gamma}")
        if not 0 <= self.tone <= 1:
            raise UsageError(f"tone must be in [0, 1], not {self.tone}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UsageError(f"JPEG quality must be in 1..100, not {self.jpeg_quality}")
        if not 0 <= self.qtable_jitter < 1:
            raise UsageError(f"qtable_jitter must be in [0, 1), not {self.qtable_jitter}")

    @property
    def reach(self) -> int:
        """Pixels by which a rendered pixel depends on its neighbours before the JPEG."""
        reach = _DEMOSAIC_REACH[self.demosaic]
        if self.denoise > 0:
            reach += _blur_radius(self.denoise)
        if self.sharpen > 0:
            reach += _blur_radius(_SHARPEN_SIGMA)
        return reach

    @property
    def margin(self) -> int:
        """Pixels (a multiple of ``ALIGN``) to render around a crop so that the crop comes
        out as in a render of the whole photo (module docstring)."""
        needed = self.reach + (ALIGN if self.subsampling != "4:4:4" else 0)
        return max(ALIGN, -(-needed // ALIGN) * ALIGN)

    def quantisation_tables(self) -> tuple[tuple[int, ...], ...]:
        """The (luma, chroma) JPEG tables this pipeline writes, 64 entries each, row major."""
        return _quantisation_tables(self.seed, self.jpeg_quality, self.qtable_jitter)

    def render(self, image: np.ndarray) -> np.ndarray:
        """Re-render an ``(H, W, 3) uint8`` photo through this camera (module docstring).

        Returns ``(H', W', 3) uint8`` with ``H'``, ``W'`` the even sizes at most ``H``, ``W``.
        """
        _check_image(image)
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        linear = _TO_LINEAR[image[:height, :width]]
        rgb = demosaic(mosaic(linear, self.cfa), self.cfa, self.demosaic)
        if self.denoise > 0:
            rgb = _gaussian_blur(rgb, self.denoise)
        if self.sharpen > 0:
            rgb = rgb + np.float32(self.sharpen) * (rgb - _gaussian_blur(rgb, _SHARPEN_SIGMA))
        encoded = np.power(np.clip(rgb, 0, 1), np.float32(1 / self.gamma))
        if self.tone > 0:
            encoded += np.float32(self.tone) * (encoded * encoded * (3 - 2 * encoded) - encoded)
        pixels = np.rint(np.clip(encoded, 0, 1) * 255).astype(np.uint8)
        return _jpeg(pixels, self.quantisation_tables(), self.subsampling)


PIPELINE_OPTIONS: dict[str, tuple] = {
    "cfa": CFA_PATTERNS,
    "demosaic": DEMOSAIC_METHODS,
    "denoise": (0.0, 0.6, 1.0),
    "sharpen": (0.0, 0.5, 1.0, 1.5),
    "gamma": (1.8, 2.0, 2.2, 2.4),
    "tone": (0.0, 0.3, 0.6),
    "jpeg_quality": (80, 85, 90, 93, 95, 97),
    "subsampling": SUBSAMPLINGS,
}
"""The values ``make_pipelines`` chooses from, per field."""


def _spread_levels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, fields)`` option indices, each field using its options equally often (to one)."""
    return np.stack([rng.permutation(np.arange(n) % len(options)) for options in PIPELINE_OPTIONS.values()], axis=1)


def _make_distinct(levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make the rows pairwise distinct by swapping single fields between rows; a swap keeps
    every field's counts, so the spread over options survives. Rows are fixed in order; a
    row equal to an earlier one swaps with a later row, or with an earlier one when that
    leaves the earlier one distinct."""
    n, fields = levels.shape
    seen: dict[tuple[int, ...], int] = {}
    for row in range(n):
        while tuple(levels[row]) in seen:
            other, field = int(rng.integers(n)), int(rng.integers(fields))
            pair = [row, other]
            if other == row or levels[row, field] == levels[other, field]:
                continue
            if other < row:
                del seen[tuple(levels[other])]
            levels[pair, field] = levels[pair[::-1], field]
            if other < row:
                if tuple(levels[other]) in seen:
                    levels[pair, field] = levels[pair[::-1], field]
                seen[tuple(levels[other])] = other
        seen[tuple(levels[row])] = row
    return levels


def make_pipelines(n: int, seed: int = 0) -> list[CameraPipeline]:
    """``n`` pipelines with pairwise distinct settings, the same for the same ``seed``.

    Each field takes each of its ``PIPELINE_OPTIONS`` equally often (up to one), so even a
    few pipelines cover every colour filter and demosaicing method; each pipeline's own seed
    (its quantisation-table perturbation) is drawn from ``seed`` too.
    """
    combinations = math.prod(len(options) for options in PIPELINE_OPTIONS.values())
    if not 1 <= n <= combinations // 4:
        raise UsageError(f"number of pipelines must be in 1..{combinations // 4}, not {n}")
    if seed < 0:
        raise UsageError(f"seed must be 0 or more, not {seed}")
    rng = np.random.default_rng([seed, 0xCA3])
    levels = _make_distinct(_spread_levels(n, rng), rng)
    seeds = rng.integers(0, 2**31, size=n)
    names = list(PIPELINE_OPTIONS)
    return [
        CameraPipeline(
            seed=int(seeds[k]), **{field: PIPELINE_OPTIONS[field][int(levels[k, j])] for j, field in enumerate(names)}
        )
        for k in range(n)
    ]
