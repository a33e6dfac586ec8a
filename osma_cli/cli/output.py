"""Rendering results for people (rich tables on stdout, progress on stderr) and pipelines.

Data goes to stdout, everything else (progress, warnings, per-file problems) to stderr, so
``osma attribute --json dir/ > out.jsonl`` captures exactly the results.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from typing import IO, Any, Iterator, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


def note(message: str) -> None:
    """What a long step is doing, on stderr so that --json on stdout stays clean."""
    stderr.print(escape(message), soft_wrap=True)


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}")


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape
    return rich_escape(text)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; yields a callback ``advance(n)``."""
    if not enabled or not stderr.is_terminal:
        yield lambda n: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: write them as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def write_json_line(record: dict, stream: IO[str] | None = None) -> None:
    text = json.dumps(record, ensure_ascii=False)
    if stream is None:
        print(text, flush=True)
    else:
        stream.write(text + "\n")


def write_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


class CsvWriter:
    """Rows as dicts through the csv module, header from the first row's keys."""

    def __init__(self, stream: IO[str], fieldnames: Sequence[str]) -> None:
        self.writer = csv.DictWriter(stream, fieldnames=list(fieldnames), extrasaction="ignore")
        self.writer.writeheader()
        self.stream = stream

    def write(self, row: dict) -> None:
        self.writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self.stream.flush()


def simple_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    first_width = min(40, max((len(str(r[0])) for r in rows), default=0))
    for i, col in enumerate(columns):
        table.add_column(col, overflow="fold", min_width=first_width if i == 0 else None)
    for row in rows:
        table.add_row(*[escape(str(v)) for v in row])
    return table
