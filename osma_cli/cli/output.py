"""Rendering results for people (rich tables on stdout, progress on stderr) and pipelines.

Data goes to stdout, everything else (progress, warnings, per-file problems) to stderr, so
``osma attribute --json dir/ > out.jsonl`` captures exactly the results, whether or not
stderr is a terminal (docs/output.md). Data is written to the real ``sys.stdout``, never
through a rich console that a live progress display could redirect.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from osma_cli.records import SCHEMA, CsvWriter, record  # noqa: F401  (the commands' names for them)

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False)


def path_text(path: str | os.PathLike) -> str:
    """A path as text any stream can write: bytes that are not UTF-8 become ``\\xNN``.

    Lossy only for names that are not UTF-8 (a literal backslash reads the same), so the
    records carry ``path_bytes_b64`` for those.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def path_bytes_b64(path: str | os.PathLike) -> str | None:
    """The path's exact bytes in base64 when it is not valid UTF-8, else None."""
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")
    return None


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


def file_problem(path: str | os.PathLike, message: str, *, level: str = "warning") -> None:
    """One line on stderr about one input file, naming it (``level``: warning, error or note)."""
    colour = {"error": "red", "warning": "yellow"}.get(level, "cyan")
    stderr.print(
        f"[{colour}]{level}:[/] {escape(path_text(path))}: {escape(message)}",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )


def report_failures(items) -> int:
    """Each file that was not embedded (``EmbeddedImage``), named on stderr; returns how many
    were unreadable (files skipped on purpose, ``--small skip``, are noted but not counted)."""
    unreadable = 0
    for item in items:
        if getattr(item, "skipped", False):
            file_problem(item.path, item.error or "skipped", level="note")
        else:
            unreadable += 1
            file_problem(item.path, f"{item.error} (skipped)")
    return unreadable


def report_damaged(items) -> None:
    """Each file used although it carries warnings (damage that still decoded), named on stderr."""
    for item in items:
        file_problem(item.path, f"{'; '.join(item.warnings)} (used anyway)")


def note(message: str) -> None:
    """What a long step is doing, on stderr so that --json on stdout stays clean."""
    stderr.print(escape(message), soft_wrap=True)


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}")


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool = True, streams_stdout: bool = False
) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; yields a callback ``advance(n)``.

    The bar never captures ``print`` or ``sys.stdout`` (rich would send them to stderr), so
    data written while it runs still reaches stdout. ``streams_stdout``: the caller writes
    data lines while the bar runs; when stdout is the same terminal, those lines would
    tear the bar, so there is none (the lines show the progress).
    """
    if not enabled or not stderr.is_terminal or (streams_stdout and _stdout_is_terminal()):
        yield lambda n: None
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=stderr, transient=True, redirect_stdout=False, redirect_stderr=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: write them as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def write_json_line(record: dict, stream: IO[str] | None = None) -> None:
    """One JSON object per line, straight to the real stdout (or ``stream``), flushed."""
    target = sys.stdout if stream is None else stream
    target.write(json.dumps(record, ensure_ascii=False) + "\n")
    target.flush()


def write_json(data: Any, *, command: str | None = None) -> None:
    """One indented JSON document on the real stdout; ``command`` makes it a record (``record``)."""
    if command is not None:
        data = record(command, data)
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class RecordSink:
    """Where a command's per-file records go: JSON lines on stdout, or kept for the table (not
    when the CSV goes to stdout, nor with a results file, whose runs may be of any length),
    the CSV when one is asked for, and the results file (``--out``); each record as it comes."""

    def __init__(
        self,
        *,
        json_out: bool,
        csv_writer: CsvWriter | None,
        csv_to_stdout: bool,
        csv_row: Callable[[dict], dict],
        results: Any = None,
    ) -> None:
        self.json_out = json_out
        self.csv_writer = csv_writer
        self.results = results
        self.keep = not json_out and not csv_to_stdout and results is None
        self.csv_row = csv_row
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        if self.results is not None:
            self.results.append(record)
        if self.json_out:
            write_json_line(record)
        elif self.keep:
            self.records.append(record)
        if self.csv_writer is not None:
            self.csv_writer.write(self.csv_row(record))


def print_table(table: Table) -> None:
    """A table on stdout with every cell whole.

    On a terminal it takes the terminal's width (cells fold, lines are never cut). Into a
    file or a pipe it takes ``$COLUMNS`` when that is set, otherwise the table's natural
    width: rich's default of 80 columns would cut whole columns off.
    """
    width = None
    if not _stdout_is_terminal() and not os.environ.get("COLUMNS", "").isdigit():
        wide = Console(file=sys.stdout, width=1_000_000)
        width = max(1, Measurement.get(wide, wide.options, table).maximum)
    Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width).print(table, crop=False)


def simple_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=any(columns))  # blank names: no header row
    first_width = min(40, max((len(str(r[0])) for r in rows), default=0))
    for i, col in enumerate(columns):
        table.add_column(col, overflow="fold", min_width=first_width if i == 0 else None)
    for row in rows:
        table.add_row(*[escape(str(v)) for v in row])
    return table
