"""``osma merge``: the results files of a run's shards (``--shard i/n``) as one run's file.

The merge is checked before anything is written: every input file must have exactly one
record across the parts, no part may hold a record of a file outside the inputs, and all
records must come from one run (the same model, reference store and settings:
``results_file.RunIdentity``). The merged file lists the records in the order one
uninterrupted run writes them (the inputs' listing order), each record's text exactly as
its shard wrote it, so it equals one run's file byte for byte. It is written atomically.

A file recorded twice because it changed between two resumed runs (``results_file``) is
not a duplicate when exactly one of its records matches the file as it is now: that one
is kept.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osma_cli.atomic import atomic_write
from osma_cli.errors import DataError, UsageError
from osma_cli.results_file import CSV, Contents, Entry, file_id, path_key, read_contents, results_format

SHOWN = 5
"""File names quoted in a refusal; the count says how many more."""


@dataclass(frozen=True)
class MergeReport:
    records: int
    parts: int
    stale: int
    """Records left out because the file changed after they were made (a newer one was kept)."""
    torn: list[Path]
    """Parts that ended in a torn record (their shard was killed while writing)."""


def _names(keys: Sequence[bytes]) -> str:
    shown = ", ".join(os.fsdecode(k) for k in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def merge_results(parts: Sequence[Path], expected: Sequence[Path], out: Path) -> MergeReport:
    """Merge ``parts`` into ``out``; ``expected``: every input, in the order one run lists them."""
    if not parts:
        raise UsageError("no results files to merge", hint="give the --out files of every shard")
    kind = results_format(out)
    contents = [read_contents(part) for part in parts]
    _check_alike(contents, kind)
    by_key: dict[bytes, list[tuple[int, Entry]]] = defaultdict(list)
    for number, part in enumerate(contents):
        for entry in part.entries:
            by_key[entry.key].append((number, entry))
    order = [path_key(p) for p in expected]
    wanted = set(order)
    outside = [k for k in by_key if k not in wanted]
    if outside:
        raise DataError(
            f"{len(outside)} record(s) are of files not under the inputs given: {_names(outside)}",
            hint="give --inputs the same paths the shards were given (written the same way)",
        )
    missing = [k for k in order if k not in by_key]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(order)} input files have no record in the parts: {_names(missing)}",
            hint="re-run the shard(s) that should hold them (with the same --out, they resume)",
        )
    kept, stale, doubled = [], 0, []
    for key, path in zip(order, expected):
        entries = by_key[key]
        if len(entries) > 1:
            first = entries[0][1].file_id
            current = file_id(path, content=bool(first and first.startswith("sha256:")))
            matching = [(n, e) for n, e in entries if e.file_id == current]
            if len(matching) != 1:
                doubled.append(key)
                continue
            stale += len(entries) - 1
            entries = matching
        kept.append(entries[0])
    if doubled:
        raise DataError(
            f"{len(doubled)} file(s) have more than one record: {_names(doubled)}",
            hint="a part was given twice, or two shards took the same file (were they given the same --shard count?)",
        )
    atomic_write(out, lambda tmp: _copy_records(tmp, contents, kept, with_header=kind == CSV))
    return MergeReport(
        records=len(kept), parts=len(parts), stale=stale, torn=[part.path for part in contents if part.torn]
    )


def _copy_records(
    target: Path, contents: Sequence[Contents], kept: Sequence[tuple[int, Entry]], *, with_header: bool
) -> None:
    """Each kept record's bytes, copied from its part in the merged order (the header first for CSV)."""
    handles = [open(part.path, "rb") for part in contents]
    try:
        with open(target, "wb") as sink:
            spans = ([(0, contents[0].header_span)] if with_header else []) + [(n, e.span) for n, e in kept]
            for number, (start, end) in spans:
                handles[number].seek(start)
                sink.write(handles[number].read(end - start))
    finally:
        for handle in handles:
            handle.close()


def _check_alike(contents: Sequence[Contents], kind: str) -> None:
    """One format, one CSV layout and one run's identity across every part."""
    for part in contents:
        if part.format != kind:
            raise UsageError(
                f"{os.fsdecode(part.path)} is {part.format.upper()}, the merged file {kind.upper()}",
                hint="merge parts into a file of their own format (.jsonl or .csv)",
            )
        if kind == CSV and part.header is not None and part.header != contents[0].header:
            raise DataError(
                f"{os.fsdecode(part.path)}: its columns differ from {os.fsdecode(contents[0].path)}'s",
                hint="the shards were run with other --top or --detect options",
            )
    identities = {entry.identity for part in contents for entry in part.entries}
    if len(identities) > 1:
        raise DataError(
            "the parts come from different runs (model, reference store or settings differ: "
            f"{'; '.join(sorted(str(i) for i in identities))})",
            hint="merge only the shards of one run; re-run the odd ones with the same model, store and options",
        )
