"""Turning the shared options into core objects (weights on a device, a store path)."""

from __future__ import annotations

from pathlib import Path

from osma_cli.home import default_model_path, default_references_path


def model_path(model: Path | None) -> Path:
    return model if model is not None else default_model_path()


def refs_path(refs: Path | None) -> Path:
    return refs if refs is not None else default_references_path()


def load_embedder(model: Path | None, device: str):
    """The weights (given or shipped) on the requested device."""
    from osma_cli.embed import Embedder

    return Embedder.from_file(model_path(model), device=device)


def embed_options(crops: int, batch_size: int, workers: int | None, small: str,
                  max_pixels: int | None):
    from osma_cli.api import EmbedOptions
    from osma_cli.errors import UsageError

    if small not in ("pad", "skip"):
        raise UsageError(f"--small must be 'pad' or 'skip', got {small!r}")
    return EmbedOptions(n_crops=crops, batch_size=batch_size, workers=workers, small=small,
                        max_pixels=max_pixels)
