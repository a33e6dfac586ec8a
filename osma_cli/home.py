"""Where osma keeps things: the shipped models, their stores, and the user's own stores.

osma ships named models (``SHIPPED_MODELS``), each a weights file and a reference store in
``weights/``; ``DEFAULT_MODEL`` is the one used when ``--model`` is not given, and ``--model
NAME`` picks another by name. Each shipped model has its own user store under ``$OSMA_HOME``
(stores hold one model's embeddings), so changing the default never mixes one model's
enrolments with another's.

Shipped files (``weights/`` in the source tree) are read-only: osma never writes to them,
whatever ``--refs`` or ``$OSMA_HOME`` say (``refuse_shipped``). The user's store lives under
``$OSMA_HOME`` (default ``~/.osma``) and is seeded from the shipped reference store the
first time it is needed, under the store's lock, so enrolling a generator changes the user's
copy and never the package. Where no copy can be made, reading commands use the shipped
store read-only and say so.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from osma_cli.atomic import atomic_write, describe, is_full, is_not_writable, lock_path, locked
from osma_cli.errors import OsmaError, ReferenceStoreError, StoreWriteError


@dataclass(frozen=True)
class ShippedModel:
    """A model osma ships: its weights and store in ``weights/``, and its user store's name."""

    name: str
    weights: str
    references: str
    user_references: str
    """File under ``$OSMA_HOME`` seeded from ``references`` on first use."""
    summary: str


SHIPPED_MODELS = {
    "fsd": ShippedModel(
        "fsd",
        "osma-fsd.safetensors",
        "references-fsd.h5",
        "references-fsd.h5",
        "forensic self-descriptions with JPEG regimes (docs/descriptors.md)",
    ),
    "mislnet": ShippedModel(
        "mislnet",
        "osma-mislnet.safetensors",
        "references-mislnet.h5",
        "references.h5",
        "MISLNet embedding, Fang et al.'s method (docs/defaults.md)",
    ),
}
DEFAULT_MODEL = "fsd"


def osma_home() -> Path:
    """``$OSMA_HOME`` or ``~/.osma``; created on demand by the callers that write."""
    return Path(os.environ.get("OSMA_HOME", "~/.osma")).expanduser()


def shipped_dir() -> Path:
    """The folder holding the shipped weights and references (``weights/``)."""
    override = os.environ.get("OSMA_WEIGHTS_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent.parent / "weights"


def shipped_model(name: str = DEFAULT_MODEL) -> ShippedModel:
    try:
        return SHIPPED_MODELS[name]
    except KeyError:
        shipped = ", ".join(SHIPPED_MODELS)
        raise MissingDefaultsError(
            f"osma ships no model named {name!r}", hint=f"shipped models: {shipped}; or give a weights file"
        ) from None


def shipped_weights(name: str = DEFAULT_MODEL) -> Path | None:
    path = shipped_dir() / shipped_model(name).weights
    return path if path.is_file() else None


def shipped_references(name: str = DEFAULT_MODEL) -> Path | None:
    path = shipped_dir() / shipped_model(name).references
    return path if path.is_file() else None


def user_references(name: str = DEFAULT_MODEL) -> Path:
    return osma_home() / shipped_model(name).user_references


def shipped_model_of(weights: Path | str) -> str | None:
    """The name of the shipped model whose weights file ``weights`` is, else None."""
    for name, model in SHIPPED_MODELS.items():
        candidate = shipped_dir() / model.weights
        try:
            if candidate.is_file() and os.path.samefile(candidate, weights):
                return name
        except OSError:
            continue
    return None


class MissingDefaultsError(OsmaError):
    """Raised when a command needs the shipped defaults and none are installed."""


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The shipped weights of model ``name`` (the default one), or a clear error saying how to supply some."""
    path = shipped_weights(name)
    if path is None:
        raise MissingDefaultsError(
            f"no {'default ' if name == DEFAULT_MODEL else ''}model {name!r} is installed "
            f"(looked for {shipped_dir() / shipped_model(name).weights})",
            hint="pass --model FILE.safetensors (an osma weights file) and --refs "
            "FILE.h5; trained default weights are not shipped yet",
        )
    return path


def default_references_path(seed: bool = True, name: str = DEFAULT_MODEL) -> Path:
    """The user's store of shipped model ``name``, seeded from its shipped one on first use when ``seed``.

    Raises ``StoreWriteError`` when the copy cannot be made (read-only or full disk); read-only
    commands use ``references_for_reading``, which falls back to the shipped store.
    """
    target = user_references(name)
    if seed and not target.exists():
        seed_user_store(target, shipped_references(name))
    return target


def seed_user_store(target: Path, source: Path | None = None) -> None:
    """Copy the shipped store to ``target`` unless it exists, under the lock every writer takes.

    Under the lock and re-checked there: a first-use command that is slow to copy can
    never overwrite an enrolment that another command made meanwhile. The copy goes
    through ``atomic_write`` (temporary file carrying the PID, fsync, rename), so a full
    disk or a kill leaves no half-copied store and nothing a later writer cannot clear.
    """
    from filelock import Timeout

    if source is None:
        return
    try:
        with locked(target):
            if not target.exists():
                atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    except Timeout:
        raise lock_timeout_error(target) from None
    except OSError as exc:
        raise write_error(target, exc, f"cannot copy the shipped reference store to {target}") from None


def references_for_reading(name: str = DEFAULT_MODEL) -> tuple[Path, str | None]:
    """The store a read-only command uses with shipped model ``name``, and a note to show
    when it is not the user's own.

    When the user's store cannot be seeded (``$OSMA_HOME`` read-only, disk full), reading
    still works: from the shipped store, read-only, with a note saying why.
    """
    try:
        return default_references_path(name=name), None
    except StoreWriteError as exc:
        source = shipped_references(name)
        if source is None:
            raise
        return source, (
            f"{exc.message}; using the shipped reference store {source} read-only "
            f"(commands that change the store will fail until {osma_home()} is writable)"
        )


def is_shipped(path: Path | str) -> bool:
    """Whether ``path`` is (or would be) a file osma ships: inside ``shipped_dir()``."""
    path = Path(path).expanduser()
    shipped = shipped_dir().expanduser()
    try:
        resolved, root = path.resolve(), shipped.resolve()
    except OSError:
        return False
    if resolved == root or root in resolved.parents:
        return True
    for name in SHIPPED_MODELS:  # a hard link or another mount of the same file
        source = shipped_references(name)
        try:
            if source is not None and path.exists() and os.path.samefile(path, source):
                return True
        except OSError:
            continue
    return False


def refuse_shipped(path: Path | str, what: str = "reference store") -> None:
    """osma never changes the files it ships; changes go to a copy the user owns."""
    if is_shipped(path):
        raise ReferenceStoreError(
            f"{path} is the {what} osma ships (in {shipped_dir()}); osma does not change it",
            hint=f"copy it (cp {path} my-{Path(path).name}) and pass --refs the copy, or leave "
            "--refs out to use the copy under $OSMA_HOME seeded from it; if $OSMA_HOME "
            "points at the shipped folder, point it elsewhere",
        )


def write_error(path: Path | str, exc: OSError, message: str | None = None) -> StoreWriteError:
    """An OSError met while writing ``path`` as a message that names the place and what to do."""
    folder = Path(path).parent
    text = f"{message or f'cannot write {path}'}: {describe(exc)}"
    if is_full(exc):
        hint = f"free space on the disk holding {folder} and run the command again; nothing was changed"
    elif is_not_writable(exc):
        hint = (
            f"{folder} is not writable: set $OSMA_HOME to a writable folder or pass --refs/--out "
            "a file in one; nothing was changed"
        )
    else:
        hint = "nothing was changed; check the disk and run the command again"
    return StoreWriteError(text, hint=hint, errno=exc.errno)


def lock_timeout_error(path: Path | str) -> StoreWriteError:
    return StoreWriteError(
        f"{path} is locked by another osma process",
        hint=f"wait for it to finish, or remove the stale {lock_path(path).name} if no osma is running",
    )
