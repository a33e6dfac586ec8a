"""Paths from the command line, checked before any work is done.

A typo in a path is a usage error (exit 2) naming the path, found before the model loads,
not a traceback or a silently created folder after minutes of embedding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from osma_cli.cli.output import path_text
from osma_cli.errors import UsageError

STDOUT = "-"
"""The file name that means stdout (``--csv -``)."""


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == STDOUT


def check_record_outputs(json_out: bool, csv_out: Path | None) -> bool:
    """Refuse ``--json`` with ``--csv -`` (both would be stdout) and an unwritable CSV file;
    True when the CSV goes to stdout."""
    csv_to_stdout = is_stdout(csv_out)
    if json_out and csv_to_stdout:
        raise UsageError("--json and --csv - both write to stdout", hint="pick one, or --csv a file")
    check_output_file(csv_out, "--csv")
    return csv_to_stdout


def check_output_file(path: Path | None, option: str) -> None:
    """Refuse an output file that cannot be written: a folder, or in a missing or read-only folder.

    Missing folders are not created: a misspelt folder would otherwise receive the results.
    """
    if path is None or is_stdout(path):
        return
    shown = path_text(path)
    if path.is_dir():
        raise UsageError(f"{option} {shown} is a folder", hint="give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"{option} {shown}: folder {path_text(parent)} does not exist",
            hint=f"create it first (mkdir -p {path_text(parent)}) or give another path",
        )
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {shown}: folder {path_text(parent)} is not writable")


def list_image_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files under ``paths``, and the folders that could not be listed (with why).

    A folder named on the command line that holds no image files is a usage error, like a
    missing path (``typer``'s ``exists=True`` refuses those): it is most likely a mistake.
    A path given twice (the same file or folder once resolved), or a file also found in a
    folder given, is processed once, with a note on stderr.
    """
    from osma_cli.cli import output
    from osma_cli.data import iter_image_files

    files: list[Path] = []
    unlisted: list[tuple[Path, str]] = []
    for path in unique(paths, lambda p: output.file_problem(p, "given more than once (processed once)", level="note")):
        before = (len(files), len(unlisted))
        files.extend(iter_image_files([path], on_error=lambda folder, reason: unlisted.append((folder, reason))))
        if path.is_dir() and (len(files), len(unlisted)) == before:
            raise UsageError(
                f"no image files found in {path_text(path)}",
                hint="pass image files or folders holding .jpg/.png/... images",
            )
    repeated: list[Path] = []
    files = unique(files, repeated.append)
    if repeated:
        output.note(
            f"{len(repeated)} file(s) found more than once (a file and a folder holding it, or "
            f"overlapping folders) are processed once"
        )
    return files, unlisted


def unique(paths: Sequence[Path], on_repeat) -> list[Path]:
    """``paths`` in order without repeats (told by resolved path); ``on_repeat(path)`` for each left out."""
    seen: set[str] = set()
    kept = []
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            on_repeat(path)
            continue
        seen.add(key)
        kept.append(path)
    return kept


def image_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``list_image_inputs``, refusing a command line that names no image at all (a usage error)."""
    files, unlisted = list_image_inputs(paths)
    if not files and not unlisted:
        raise UsageError(
            "no image files found in " + ", ".join(path_text(p) for p in paths),
            hint="pass image files or folders holding .jpg/.png/... images",
        )
    return files, unlisted
