"""Errors raised by the osma core.

The core raises ``OsmaError`` subclasses with a message that says what went wrong and,
where possible, what to do. The CLI turns each into one clean line and an exit code; no
traceback reaches a user for an error we anticipated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOME_INPUTS_FAILED = 3
EXIT_INTERRUPTED = 130
"""128 + SIGINT: stopped by Ctrl-C, as a shell reports it."""
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: the reader of stdout went away (``osma attribute --json | head -1``)."""


class OsmaError(Exception):
    """Base class for every anticipated failure; ``hint`` says what the user can do."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class UsageError(OsmaError):
    """The command line or the arguments of a library call are invalid."""

    exit_code = EXIT_USAGE


class ImageError(OsmaError):
    """One input file cannot be used as an image; batches report it and go on."""

    def __init__(self, path: Path | str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = Path(path)
        self.reason = reason


class WeightsError(OsmaError):
    """A weights file is missing, corrupt, or does not match what it is used with."""


class ReferenceStoreError(OsmaError):
    """A reference store is missing, corrupt, or inconsistent with the request."""


class StoreWriteError(ReferenceStoreError, OSError):
    """A reference store, its lock or its seed copy cannot be written (full disk, read-only
    folder, no permission); the store is left as it was. Also an ``OSError``, so code that
    catches those around a write still does."""

    def __init__(self, message: str, *, hint: str | None = None, errno: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.errno = errno


class DataError(OsmaError):
    """A dataset, folder tree or annotation file is malformed or empty."""


class TooFewReadable(DataError):
    """Too few of the given images could be read; ``unreadable`` names the others and why."""

    def __init__(self, message: str, *, unreadable: Sequence[tuple[Path, str]] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.unreadable = list(unreadable)
