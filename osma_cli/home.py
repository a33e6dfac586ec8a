"""Where osma keeps things: the shipped defaults and the user's own store.

Shipped files (``weights/`` in the source tree) are read-only: osma never writes to them.
The user's store lives under ``$OSMA_HOME`` (default ``~/.osma``) and is seeded from the
shipped reference store the first time it is needed, so enrolling a generator changes the
user's copy and never the package.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from osma_cli.errors import OsmaError

DEFAULT_WEIGHTS_NAME = "osma-default.safetensors"
DEFAULT_REFERENCES_NAME = "references.h5"


def osma_home() -> Path:
    """``$OSMA_HOME`` or ``~/.osma``; created on demand by the callers that write."""
    return Path(os.environ.get("OSMA_HOME", "~/.osma")).expanduser()


def shipped_dir() -> Path:
    """The folder holding the shipped weights and references (``weights/``)."""
    override = os.environ.get("OSMA_WEIGHTS_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_weights() -> Path | None:
    path = shipped_dir() / DEFAULT_WEIGHTS_NAME
    return path if path.is_file() else None


def shipped_references() -> Path | None:
    path = shipped_dir() / DEFAULT_REFERENCES_NAME
    return path if path.is_file() else None


def user_references() -> Path:
    return osma_home() / DEFAULT_REFERENCES_NAME


class MissingDefaultsError(OsmaError):
    """Raised when a command needs the shipped defaults and none are installed."""


def default_model_path() -> Path:
    """The shipped default weights, or a clear error saying how to supply some."""
    path = shipped_weights()
    if path is None:
        raise MissingDefaultsError(
            f"no default model is installed (looked for {shipped_dir() / DEFAULT_WEIGHTS_NAME})",
            hint="pass --model FILE.safetensors (an osma weights file) and --refs "
                 "FILE.h5; trained default weights are not shipped yet",
        )
    return path


def default_references_path(seed: bool = True) -> Path:
    """The user's store, seeded from the shipped one on first use when ``seed``.

    The copy goes through a temporary file and a rename so that two first runs at once
    cannot leave a half-copied store behind.
    """
    target = user_references()
    if target.exists() or not seed:
        return target
    source = shipped_references()
    if source is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.seed-{os.getpid()}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return target
