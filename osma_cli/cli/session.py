"""Turning the shared options into core objects (weights on a device, a store path)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from osma_cli.home import (
    DEFAULT_MODEL,
    SHIPPED_MODELS,
    default_model_path,
    default_references_path,
    references_for_reading,
    shipped_model_of,
)


def model_path(model: Path | None) -> Path:
    """``--model``: a weights file, or the name of a shipped model; the default one when None."""
    from osma_cli.errors import UsageError

    if model is None:
        return default_model_path()
    if model.exists():
        return model
    if str(model) in SHIPPED_MODELS:
        return default_model_path(str(model))
    raise UsageError(
        f"--model {model}: no such file, and osma ships no model of that name",
        hint=f"give a .safetensors weights file, or a shipped model: {', '.join(SHIPPED_MODELS)}",
    )


def shipped_name(model: Path | None) -> str:
    """Which shipped model's user store goes with ``--model`` (the default's for other weights)."""
    if model is None:
        return DEFAULT_MODEL
    if str(model) in SHIPPED_MODELS and not model.exists():
        return str(model)
    return shipped_model_of(model) or DEFAULT_MODEL


def refs_path(refs: Path | None, *, write: bool, model: Path | None = None) -> Path:
    """``--refs``, else the user's store of the shipped model in use (seeded from its shipped one
    on first use; other weights get the default model's user store).

    A command that only reads falls back to the shipped store, read-only, when the user's
    cannot be made (read-only or full ``$OSMA_HOME``), and says so on stderr; a command
    that writes fails with the place it cannot write. A shipped file is never written
    (``osma_cli.home.refuse_shipped``, checked where the store is written).
    """
    if refs is not None:
        return refs
    name = shipped_name(model)
    if write:
        return default_references_path(name=name)
    path, note = references_for_reading(name)
    if note:
        from osma_cli.cli import output

        output.warn(output.escape(note))
    return path


def command_line(name: str) -> str:
    """The command as typed, recorded in a store's history (provenance).

    ``name`` (``enroll``, ``refs remove``) stands in where the process is not the osma
    command itself (a test runner, a script calling the Typer app): its argv is not osma's.
    """
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program in ("osma", "osma.exe", "__main__.py"):
        return shlex.join(["osma", *sys.argv[1:]])
    return f"osma {name} (called from {program or 'python'})"


def load_embedder(model: Path | None, device: str):
    """The weights (given or shipped) on the requested device."""
    from osma_cli.embed import Embedder

    return Embedder.from_file(model_path(model), device=device)


def embed_options(crops: int, batch_size: int, workers: int | None, small: str, max_pixels: int | None):
    from osma_cli.embed import EmbedOptions
    from osma_cli.errors import UsageError

    if small not in ("pad", "skip"):
        raise UsageError(f"--small must be 'pad' or 'skip', got {small!r}")
    return EmbedOptions(n_crops=crops, batch_size=batch_size, workers=workers, small=small, max_pixels=max_pixels)


def parse_rule(spec: str | None):
    """``--rule NAME`` or ``NAME:key=value,...`` -> a registered rule (None: the model's default)."""
    if spec is None:
        return None
    from osma_cli.rules import get_rule

    name, _, settings = spec.partition(":")
    return get_rule(name.strip(), **parse_settings(settings, "--rule"))


def parse_settings(text: str | None, option: str) -> dict:
    """``key=value,key=value`` -> a dict; values read as JSON where they parse (numbers, true, lists)."""
    import json

    from osma_cli.errors import UsageError

    params: dict = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{option} setting {item!r} is not key=value", hint=f"e.g. {option} key=3")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value.strip()
        if key.strip() == "filters" and isinstance(params["filters"], str):
            params["filters"] = params["filters"].split("+")
    return params
