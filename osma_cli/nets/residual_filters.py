"""Prediction-error residual filters (Bayar & Stamm's constrained form) for self-descriptions.

A filter f is an S x S array with ``f[centre] = 0`` whose other weights sum to 1: a linear
predictor of a pixel from its neighbours. Its residual is the prediction error

    r(p) = x(p) - sum_o f(o) x(p + o) = sum_o f(o) (x(p) - x(p + o)),

computed as a 'valid' cross-correlation with the kernel ``delta - f`` (one grouped conv2d):
only pixels whose whole S x S window lies inside the image, so an (H, W) plane gives
(H - S + 1, W - S + 1) residuals. No padding: padded pixels would make residuals of
structure that no camera produced. Because ``delta - f`` sums to 0, each plane is first
shifted by its own top-left pixel value (which changes no residual): a constant plane then
gives residuals that are exactly 0, not rounding noise of order 1e-17 that the
self-prediction fit would take for signal, and the rounding error elsewhere scales with the
plane's contrast rather than its brightness. Hence ``residuals`` accepts constrained banks
only (centre 0, weights summing to 1, to 1e-9).

Supports. ``FILTER_SUPPORTS`` names boolean masks, all 5 x 5 with the centre False (smaller
supports padded with False) so that every bank stacks into one (K, 5, 5) tensor; a support's
residual is still taken over the common 5 x 5 valid region.

Filters. ``fixed_filters``: the uniform average over each support (weight 1/|support|).
``learn_filters``: the least-squares optimal constrained predictor over real camera photos,
``f = argmin sum_p (x(p) - sum_o f(o) x(p + o))^2`` subject to ``sum_o f(o) = 1``, summed over all
pixels of all colour planes of all photos (closed form: accumulated normal equations and one
KKT solve per support, ``osma_cli.nets.self_prediction``). This is how osma learns the
residual filters from real photographs only, with no generated image involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType

import torch
from torch import Tensor
from torch.nn import functional as F

from osma_cli.errors import UsageError
from osma_cli.nets.self_prediction import masked_offsets, normal_equations, solve_predictor

SUPPORT_SIZE = 5
"""Side of every support mask and of every filter bank."""

_CONSTRAINT_TOL = 1e-9
"""How far a bank's centre may be from 0 and its weight sums from 1 in ``residuals``."""


def _mask(offsets: Iterable[tuple[int, int]]) -> Tensor:
    """A SUPPORT_SIZE x SUPPORT_SIZE boolean mask with True at the given offsets from the centre."""
    r = SUPPORT_SIZE // 2
    mask = torch.zeros(SUPPORT_SIZE, SUPPORT_SIZE, dtype=torch.bool)
    for dy, dx in offsets:
        mask[r + dy, r + dx] = True
    return mask


def _square(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if (dy, dx) != (0, 0)]


_H2 = [(0, -1), (0, 1)]
_V2 = [(-1, 0), (1, 0)]

FILTER_SUPPORTS: MappingProxyType[str, Tensor] = MappingProxyType(
    {
        "h2": _mask(_H2),
        "v2": _mask(_V2),
        "cross4": _mask(_H2 + _V2),
        "diag4": _mask([(-1, -1), (-1, 1), (1, -1), (1, 1)]),
        "square8": _mask(_square(1)),
        "cross8": _mask(_H2 + _V2 + [(0, -2), (0, 2), (-2, 0), (2, 0)]),
        "ring16": _mask([o for o in _square(2) if max(abs(o[0]), abs(o[1])) == 2]),
        "square24": _mask(_square(2)),
    }
)
"""Named supports, in a fixed order (read-only; the masks are shared, copy before changing one)."""


def fixed_filters(names: Sequence[str] | None = None) -> Tensor:
    """Hand-made bank (K, S, S) float64: the uniform average over each named support (all by default)."""
    chosen = _check_names(names)
    bank = torch.stack([FILTER_SUPPORTS[name] for name in chosen]).to(torch.float64)
    return bank / bank.sum(dim=(1, 2), keepdim=True)


@torch.no_grad()
def residuals(images: Tensor, filters: Tensor, *, compute_dtype: torch.dtype = torch.float64) -> Tensor:
    """Prediction errors (B, C*K, H-S+1, W-S+1) of each filter on each colour plane, index c*K + k.

    ``images`` (B, C, H, W) and a constrained bank ``filters`` (K, S, S), float64, one device.
    An image smaller than S in either direction gives an empty (zero-size) result rather
    than an error. ``compute_dtype=torch.float32`` runs the convolution in float32 (about 7x
    faster on a CPU, residuals within about 1e-7 of the float64 ones) and returns float64:
    the normal equations built from them are what needs float64.
    """
    _check_images(images)
    _check_bank(filters, images.device)
    b, c, h, w = images.shape
    k, s = filters.shape[0], filters.shape[-1]
    out_h, out_w = h - s + 1, w - s + 1
    if out_h <= 0 or out_w <= 0:
        return images.new_zeros(b, c * k, max(out_h, 0), max(out_w, 0))
    kernel = -filters
    kernel[:, s // 2, s // 2] += 1.0
    centred = images - images[:, :, :1, :1]
    out = F.conv2d(centred.to(compute_dtype), kernel.repeat(c, 1, 1)[:, None].to(compute_dtype), groups=c)
    return out.to(images.dtype)


@torch.no_grad()
def learn_filters(images: Iterable[Tensor], *, supports: Sequence[str] | None = None, ridge: float = 1e-6) -> Tensor:
    """Least-squares constrained predictors (K, S, S) float64 from camera photos (C, H, W) in [0, 1].

    Normal equations summed over every pixel of every colour plane of every photo, one KKT
    solve per support (the sum-to-one constraint). Each support uses the valid region of its
    own neighbours. Supports sharing a bounding box share one accumulation: the sums of a
    smaller support are a sub-block of those of the union of the supports.
    """
    chosen = _check_names(supports)
    offsets = {name: masked_offsets(FILTER_SUPPORTS[name]) for name in chosen}
    families: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
    for name in chosen:
        family = families.setdefault(_bounding_box(offsets[name]), [])
        family.extend(o for o in offsets[name] if o not in family)
    for family in families.values():
        family.sort()
    sums: dict[tuple[int, int, int, int], list[Tensor]] = {}
    device: torch.device | None = None
    n_images = 0
    for image in images:
        if not isinstance(image, Tensor) or image.ndim != 3 or not image.is_floating_point():
            raise UsageError("learn_filters needs floating-point (C, H, W) image tensors in [0, 1]")
        device = image.device if device is None else device
        planes = image.to(device=device, dtype=torch.float64)[None]
        n_images += 1
        for box, family in families.items():
            gram, rhs, count = normal_equations(planes, family, mode="per-channel")
            part = [gram.sum(dim=(0, 1)), rhs.sum(dim=(0, 1)), count.sum() * planes.shape[1]]
            sums[box] = part if box not in sums else [a + b for a, b in zip(sums[box], part)]
    if n_images == 0:
        raise UsageError("learn_filters needs at least one camera photograph")

    bank = torch.zeros(len(chosen), SUPPORT_SIZE, SUPPORT_SIZE, dtype=torch.float64, device=device)
    for i, name in enumerate(chosen):
        box = _bounding_box(offsets[name])
        gram, rhs, count = sums[box]
        if int(count) == 0:
            raise UsageError(
                f"no photograph is large enough to learn the {name!r} filter",
                hint=f"use photos of at least {SUPPORT_SIZE}x{SUPPORT_SIZE} pixels",
            )
        idx = torch.tensor([families[box].index(o) for o in offsets[name]], device=device)
        w = solve_predictor(gram[idx][:, idx], rhs[idx], count, groups=1, constrained=True, ridge=ridge)
        bank[i][FILTER_SUPPORTS[name].to(device)] = w
    return bank


def _bounding_box(offsets: Sequence[tuple[int, int]]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the offsets and the centre: it fixes the valid region."""
    ys = [dy for dy, _ in offsets] + [0]
    xs = [dx for _, dx in offsets] + [0]
    return min(ys), max(ys), min(xs), max(xs)


def _check_names(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(FILTER_SUPPORTS)
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise UsageError(
            "filter supports must be a non-empty list of names", hint=f"available: {', '.join(FILTER_SUPPORTS)}"
        )
    unknown = [n for n in names if n not in FILTER_SUPPORTS]
    if unknown:
        raise UsageError(f"unknown filter supports {unknown}", hint=f"available: {', '.join(FILTER_SUPPORTS)}")
    return list(names)


def _check_images(images: object) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise UsageError("images must be a (B, C, H, W) tensor")
    if images.dtype != torch.float64:
        raise UsageError(f"images must be float64, got {images.dtype}", hint="call .double() first")


def _check_bank(filters: object, device: torch.device) -> None:
    if not isinstance(filters, Tensor) or filters.ndim != 3 or filters.shape[0] < 1:
        raise UsageError("filters must be a (K, S, S) tensor with K >= 1")
    s = filters.shape[-1]
    if filters.shape[1] != s or s % 2 == 0:
        raise UsageError(f"filters must be odd squares, got {tuple(filters.shape[1:])}")
    if filters.dtype != torch.float64:
        raise UsageError(f"filters must be float64, got {filters.dtype}")
    centre = filters[:, s // 2, s // 2].abs().max()
    off_sum = filters.sum(dim=(1, 2)) - filters[:, s // 2, s // 2]
    if (
        not bool(torch.isfinite(filters).all())
        or centre > _CONSTRAINT_TOL
        or (off_sum - 1.0).abs().max() > _CONSTRAINT_TOL
    ):
        raise UsageError(
            "filters must be prediction-error predictors: centre 0, other weights summing to 1",
            hint="use fixed_filters or learn_filters",
        )
    if filters.device != device:
        raise UsageError(
            f"filters are on {filters.device} but the images on {device}", hint="move them with filters.to(images)"
        )
