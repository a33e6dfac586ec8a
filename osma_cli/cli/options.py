"""Options shared by several commands, defined once."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Weights file (.safetensors), or a shipped model by name: fsd (the default), mislnet.",
        dir_okay=False,
        show_default=False,
    ),
]
RefsOpt = Annotated[
    Path | None,
    typer.Option(
        "--refs",
        help="Reference store (.h5). Default: $OSMA_HOME/references.h5, seeded from the shipped one.",
        dir_okay=False,
        show_default=False,
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Decoding processes (0: decode in the main process). Default: by CPU count.",
        show_default=False,
    ),
]
CropsOpt = Annotated[
    int, typer.Option("--crops", min=1, help="Average the embeddings of N non-overlapping crops of a large image.")
]
SmallOpt = Annotated[
    str, typer.Option("--small", help="Images smaller than the crop: 'pad' (mirror-pad, no resampling) or 'skip'.")
]
MAX_PIXELS = 2**26
"""``osma_cli.data.DEFAULT_MAX_PIXELS``, named in --help without importing the data package
(a test checks they agree)."""
MaxPixelsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-pixels",
        min=1,
        help=f"Refuse images with more pixels (decompression bombs). Default: "
        f"{MAX_PIXELS:,} (2^26, e.g. 8192x8192). Decoding takes about 10 bytes "
        "per pixel, so about 650 MB per decode worker at the default and 2.6 GB "
        "at 2^28.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
CsvOpt = Annotated[
    Path | None,
    typer.Option(
        "--csv",
        help="Also write the results to this CSV file ('-': to stdout, instead of the table).",
        dir_okay=False,
        allow_dash=True,
        show_default=False,
    ),
]
RuleOpt = Annotated[
    str | None,
    typer.Option(
        "--rule",
        help="Open-set rule of the references: fang (Fang et al.'s normalized distance), mahalanobis "
        "(shared covariance) or gmm (per-generator Gaussian mixtures); NAME or NAME:key=value,... "
        "Default: the model's own, else fang.",
        show_default=False,
    ),
]


def finite_threshold(value: float | None) -> float | None:
    """``--threshold`` must be a number: NaN and infinity are refused before the model loads.

    Its sign is checked once the rule is known (``attribution.check_tau``): a ``gmm`` store's
    scores (negative log-likelihoods) may be negative, other rules' may not.
    """
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def readable_type(shown: str | None, *, flag: bool) -> str | None:
    """Typer's type column in words a user reads: no ``<bool>`` beside a flag, ``<path>...``
    for ``<list[Path]>``, ``<text>`` for ``<str>``."""
    if shown is None:
        return None
    if flag:
        return ""
    if shown.startswith("<list[") and shown.endswith("]>"):
        return f"<{shown[6:-2].lower()}>..."
    return "<text>" if shown == "<str>" else shown


def tidy_param(param) -> None:
    """Help that reads like a command line, not like Python: argument names as PATHS...
    (not ``{paths}``), no ``<bool>`` after a flag, no ``<list[Path]>`` (``readable_type``)."""
    if getattr(param, "_osma_tidy", False):
        return
    param._osma_tidy = True
    if param.param_type_name == "argument" and param.metavar is None and param.name:
        param.metavar = param.name.upper()
        name = param.metavar + ("..." if param.nargs != 1 else "")
        param._rich_display_name = lambda: name  # typer's own: "{paths}..." on the usage line
        param._usage_display_name = lambda: name if param.required else f"[{name}]"
    shown = getattr(param, "display_type_rich", None)
    if shown is not None:
        flag = bool(getattr(param, "is_flag", False))
        param.display_type_rich = lambda ctx: readable_type(shown(ctx), flag=flag)


def tidy_params(params: list[Any]) -> list[Any]:
    """Every parameter of a command (its ``--help`` included) goes through ``tidy_param``."""
    for param in params:
        tidy_param(param)
    return params


# get_params overridden in each class, not in a shared mixin: a mixin's super().get_params cannot be
# type-checked (recent typer subclasses its own vendored copy of click, older typer click itself)
class Command(TyperCommand):
    """The class of every osma command (``app.command``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return tidy_params(super().get_params(ctx))


class Group(TyperGroup):
    """The class of osma and its sub-command groups."""

    def get_params(self, ctx: Any) -> list[Any]:
        return tidy_params(super().get_params(ctx))


HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}
