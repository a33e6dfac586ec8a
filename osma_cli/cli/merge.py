"""``osma merge``: the ``--out`` files of a run's shards, checked and combined into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from osma_cli.cli import output
from osma_cli.cli.paths import check_output_file, list_image_inputs


def merge(
    parts: Annotated[
        list[Path],
        typer.Argument(
            help="The shards' --out files (.jsonl or .csv).", exists=True, dir_okay=False, show_default=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The merged file (.jsonl or .csv, as the parts); written atomically.",
            dir_okay=False,
            show_default=False,
        ),
    ],
    inputs: Annotated[
        list[Path],
        typer.Option(
            "--inputs",
            help="The image files and folders the shards were given, written the same way "
            "(repeat the option for several): each must have exactly one record.",
            exists=True,
            show_default=False,
        ),
    ],
) -> None:
    """Combine the results files of `osma attribute --shard I/N --out ...` into one run's file.

    Refused, with nothing written, when an input file has no record or several, when a part
    holds a record of a file not under --inputs, or when the parts come from different runs
    (another model, reference store or settings). The merged records are in the order one
    run writes them, each exactly as its shard wrote it (docs/scale.md).
    """
    from osma_cli.merge_results import merge_results

    check_output_file(out, "--out")
    files, unlisted = list_image_inputs(inputs)
    report = merge_results(parts, [folder for folder, _ in unlisted] + files, out)
    for part in report.torn:
        output.file_problem(part, "ends in a torn record (its shard was stopped while writing): left out", level="note")
    if report.stale:
        output.note(f"{report.stale} older record(s) of files that changed since were left out")
    output.note(f"{report.records} records from {report.parts} part(s) in {output.path_text(out)}")
