"""The envelope of every JSON record osma writes, and its CSV rows (docs/output.md).

Below the CLI so that the core can write a command's files (a benchmark's ``metrics.json``
and ``scores.csv``) in the very format the command prints; ``osma_cli.cli.output`` uses the
same definitions.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import IO

SCHEMA = 1
"""Version of every command's JSON record (docs/output.md); raised on any change that is
not a new field."""


def record(command: str, data: dict) -> dict:
    """A command's JSON record: ``schema`` and ``command`` first, then its fields."""
    return {"schema": SCHEMA, "command": command, **data}


class CsvWriter:
    """Rows as dicts through the csv module, header from the first row's keys."""

    def __init__(self, stream: IO[str], fieldnames: Sequence[str]) -> None:
        self.writer = csv.DictWriter(stream, fieldnames=list(fieldnames), extrasaction="ignore")
        self.writer.writeheader()
        self.stream = stream

    def write(self, row: dict) -> None:
        self.writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self.stream.flush()
