"""``fsd``: forensic self-descriptions (Nguyen, Azizpour & Stamm, CVPR 2025) as a feature extractor.

An image's descriptor is how its own forensic residuals predict themselves:

1. residuals ``r = x - f * x`` of each colour channel (or of the luma, ``colour="grey"``) for
   each prediction-error filter ``f`` of the bank (``osma_cli.nets.residual_filters``; fixed
   averages over a support, or learned on camera photos by ``osma train --method fsd``);
2. at ``scales`` scales (each a 2x2 average down-sampling of the previous), one least-squares
   linear predictor of every residual pixel from its ``block x block`` neighbourhood, centre
   excluded (``osma_cli.nets.self_prediction``: ``mode`` per-channel or joint as in the paper,
   ``scale_mode`` separate or joint, optional sum-to-one ``constrained`` fit), always in float64
   (the residual filtering itself runs in float32 by default, ``residual_precision``: seven
   times faster on a CPU, within about 1e-7 of float64);
3. the coefficients, concatenated, are the raw descriptor; an affine projection fitted on
   known generators (``osma_cli.projection``) maps it to the embedding.

Pixels are never resampled and never padded: the embedder gives the centred window of at
most ``window x window`` pixels (smaller images whole, ``InputPolicy(small="keep")``), in
float64. Every setting is part of the weights' identity (``identity_config``), so stores and
caches never mix descriptors made with other settings. Weights files record every setting in
``arch_kwargs``; a setting added later must default to the behaviour earlier files had, or
those files would no longer match their hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from osma_cli.errors import UsageError
from osma_cli.nets.base import DescriptorNet
from osma_cli.nets.registry import register_model
from osma_cli.nets.residual_filters import FILTER_SUPPORTS, fixed_filters, residuals
from osma_cli.nets.self_prediction import descriptor_dim, self_description

COLOURS = ("rgb", "grey")
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
"""Precision of the residual filtering; the self-prediction fit is always float64."""
DEFAULT_FILTERS = ("cross4", "square8", "square24")
LUMA = (0.299, 0.587, 0.114)


def raw_width(filters: Sequence[str], colour: str, *, block: int, mode: str, scales: int, scale_mode: str) -> int:
    """Length of the raw descriptor: one fit per residual channel (filter x colour plane) and scale."""
    n_channels = len(filters) * (3 if colour == "rgb" else 1)
    return descriptor_dim(n_channels, block=block, mode=mode, scales=scales, scale_mode=scale_mode)


class FSDDescriptor(DescriptorNet):
    """Residual filters (a buffer: fixed or learned) and the self-prediction fit's settings."""

    filters: Tensor  # a buffer (register_buffer)

    def __init__(
        self,
        *,
        embedding_dim: int,
        filters: Sequence[str],
        colour: str,
        block: int,
        scales: int,
        mode: str,
        scale_mode: str,
        constrained: bool,
        ridge: float,
        window: int,
        residual_precision: str,
        projected: bool,
        jpeg_regimes: Sequence[int] = (),
    ) -> None:
        if residual_precision not in PRECISIONS:
            raise UsageError(f"unknown residual precision {residual_precision!r}", hint=f"use {', '.join(PRECISIONS)}")
        if colour not in COLOURS:
            raise UsageError(f"unknown colour handling {colour!r}", hint=f"use {', '.join(COLOURS)}")
        unknown = [f for f in filters if f not in FILTER_SUPPORTS]
        if unknown or not filters:
            raise UsageError(
                f"unknown residual filters {unknown or '(none)'}", hint=f"available: {', '.join(FILTER_SUPPORTS)}"
            )
        bank = fixed_filters(list(filters))
        raw = raw_width(filters, colour, block=block, mode=mode, scales=scales, scale_mode=scale_mode)
        support = bank.shape[-1]
        super().__init__(
            embedding_dim=embedding_dim,
            raw_dim=raw,
            projected=projected,
            min_input_size=support - 1 + block,
            jpeg_regimes=jpeg_regimes,
        )
        self.register_buffer("filters", bank)
        self.settings: dict[str, Any] = {
            "filters": list(filters),
            "colour": colour,
            "block": block,
            "scales": scales,
            "mode": mode,
            "scale_mode": scale_mode,
            "constrained": bool(constrained),
            "ridge": float(ridge),
            "window": int(window),
            "residual_precision": residual_precision,
        }
        if len(self.regimes) > 1:  # absent otherwise, so files from before regimes keep their identity
            self.settings["jpeg_regimes"] = [r.jpeg_quality for r in self.regimes[1:]]

    def identity_config(self) -> dict:
        return {"architecture": "fsd", **self.settings}

    def describe(self, x: Tensor) -> Tensor:
        x = x.to(torch.float64)
        if self.settings["colour"] == "grey":
            x = (x * x.new_tensor(LUMA)[None, :, None, None]).sum(1, keepdim=True)
        channels = residuals(x, self.filters.to(x), compute_dtype=PRECISIONS[self.settings["residual_precision"]])
        return self_description(
            channels,
            block=self.settings["block"],
            mode=self.settings["mode"],
            constrained=self.settings["constrained"],
            scales=self.settings["scales"],
            scale_mode=self.settings["scale_mode"],
            ridge=self.settings["ridge"],
        )


@register_model("fsd", kind="descriptor")
def fsd(
    *,
    embedding_dim: int | None = None,
    filters: Sequence[str] = DEFAULT_FILTERS,
    colour: str = "rgb",
    block: int = 9,
    scales: int = 3,
    mode: str = "per-channel",
    scale_mode: str = "separate",
    constrained: bool = False,
    ridge: float = 1e-6,
    window: int = 256,
    residual_precision: str = "float32",
    projected: bool | None = None,
    jpeg_regimes: Sequence[int] = (),
) -> FSDDescriptor:
    """A self-description extractor; ``embedding_dim`` is the projection's width (raw width without one).

    The defaults are the settings that measured best on the built-in benchmark's splits 1-3
    (docs/descriptors.md): 9x9 neighbourhoods, 3 scales fitted separately, one unconstrained
    predictor per residual channel, three fixed filters on each colour channel.

    ``projected`` defaults to whether ``embedding_dim`` asks for another width than the raw one.
    ``jpeg_regimes``: JPEG qualities with a projection of their own (``osma_cli.regimes``).
    """
    raw = raw_width(filters, colour, block=block, mode=mode, scales=scales, scale_mode=scale_mode)
    if embedding_dim is None:
        embedding_dim = raw
    if projected is None:
        projected = embedding_dim != raw
    return FSDDescriptor(
        embedding_dim=embedding_dim,
        filters=list(filters),
        colour=colour,
        block=block,
        scales=scales,
        mode=mode,
        scale_mode=scale_mode,
        constrained=constrained,
        ridge=ridge,
        window=window,
        residual_precision=residual_precision,
        projected=projected,
        jpeg_regimes=jpeg_regimes,
    )
