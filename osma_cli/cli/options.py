"""Options shared by several commands, defined once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

ModelOpt = Annotated[Optional[Path], typer.Option(
    "--model", help="Weights file (.safetensors). Default: the shipped model.",
    exists=True, dir_okay=False, show_default=False)]
RefsOpt = Annotated[Optional[Path], typer.Option(
    "--refs", help="Reference store (.h5). Default: $OSMA_HOME/references.h5, seeded from the shipped one.",
    dir_okay=False, show_default=False)]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto, cpu, cuda or cuda:N.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", min=0, help="Decoding processes (0: decode in the main process). Default: by CPU count.",
    show_default=False)]
CropsOpt = Annotated[int, typer.Option(
    "--crops", min=1, help="Average the embeddings of N non-overlapping crops of a large image.")]
SmallOpt = Annotated[str, typer.Option(
    "--small", help="Images smaller than the crop: 'pad' (mirror-pad, no resampling) or 'skip'.")]
MaxPixelsOpt = Annotated[Optional[int], typer.Option(
    "--max-pixels", min=1, help="Refuse images with more pixels (decompression bombs).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
RuleOpt = Annotated[Optional[str], typer.Option(
    "--rule", help="Open-set rule of the references: fang (Fang et al.'s normalized distance), mahalanobis "
                   "(shared covariance) or gmm (per-generator Gaussian mixtures); NAME or NAME:key=value,... "
                   "Default: the model's own, else fang.", show_default=False)]


def finite_threshold(value: float | None) -> float | None:
    """``--threshold`` must be a number: NaN and infinity are refused before the model loads.

    Its sign is checked once the rule is known (``attribution.check_tau``): a ``gmm`` store's
    scores (negative log-likelihoods) may be negative, other rules' may not.
    """
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value
