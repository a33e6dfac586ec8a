"""A results file that a killed run resumes: ``osma attribute PATHS --out results.jsonl``.

Records are appended one by one as the files are done, and flushed, so a run stopped at
any moment loses at most the record being written. Re-run with the same ``--out``, the
run first reads what the file holds: a torn last record (the process was killed while
writing it) is cut off, the files already recorded are skipped, and the rest are appended
in the order one uninterrupted run would have written them. So the file ends up with
exactly the records of one run: none missing, none twice.

Each record carries what it was computed with (``RunIdentity``): the model's identity, the
reference store's content identity and a digest of the settings that change a record
(tau, ``--top``, crops, ...). A results file is resumed only by a run with the same three;
anything else would mix two runs in one file and is refused.

A file is told apart from another by its path and its ``file_id``: its size and
modification time (as ``make`` does), or with ``--hash`` the sha256 of its bytes. A file
recorded under another ``file_id`` has changed since: it is attributed again and its new
record appended after the old one (``osma merge`` keeps the one that matches the file).

Two layouts, told by the suffix: JSON lines (``.jsonl``, ``.ndjson``) and CSV (``.csv``,
whose header must then match the run's columns).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from osma_cli.data.files import file_sha256
from osma_cli.errors import DataError, UsageError

JSONL, CSV = "jsonl", "csv"
SUFFIXES = {".jsonl": JSONL, ".ndjson": JSONL, ".csv": CSV}
CSV_LINE_END = "\r\n"
"""What the csv module ends each row with: a CSV file not ending with it ends in a torn row."""

IDENTITY_FIELDS = ("model", "references", "settings")
"""The record fields that must agree for two records to belong to one run."""


def results_format(path: Path | str) -> str:
    """``jsonl`` or ``csv``, from the file's suffix; any other suffix is a usage error."""
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise UsageError(
            f"--out {os.fsdecode(path)}: cannot tell the format from the suffix",
            hint="name it .jsonl (JSON lines) or .csv",
        )
    return kind


def short_digest(data: Any) -> str:
    """16 hex digits of sha256 over canonical JSON: an identity short enough to repeat in every record."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


@dataclass(frozen=True)
class RunIdentity:
    """What a run's records were computed with; every record carries it (``fields``)."""

    model: str
    """The model's identity (its weights' ``sha256``), first 16 hex digits."""
    references: str | None
    """The reference store's ``store_identity``, first 16 hex digits; None for a classifier."""
    settings: str
    """``short_digest`` of the settings that change a record (tau, top-k, crops, ...)."""

    @classmethod
    def of(cls, model_sha256: str, store_identity: str | None, settings: Mapping[str, Any]) -> RunIdentity:
        return cls(
            model=model_sha256[:16],
            references=None if store_identity is None else store_identity[:16],
            settings=short_digest(settings),
        )

    def fields(self) -> dict[str, str | None]:
        return {"model": self.model, "references": self.references, "settings": self.settings}

    def as_tuple(self) -> tuple[str | None, ...]:
        return (self.model, self.references, self.settings)


def file_id(path: Path | str, *, content: bool = False) -> str | None:
    """``stat:SIZE:MTIME_NS``, or with ``content`` ``sha256:HEX`` of the bytes; None when unreadable."""
    if content:
        digest = file_sha256(path)
        return None if digest is None else f"sha256:{digest}"
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"stat:{st.st_size}:{st.st_mtime_ns}"


def path_key(path: Path | str) -> bytes:
    """A path's exact bytes: how records and listed files are matched."""
    return os.fsencode(path)


def record_path_key(record: Mapping[str, Any]) -> bytes:
    """The exact bytes of a record's path (``path_bytes_b64`` when it is not UTF-8, docs/output.md)."""
    raw = record.get("path_bytes_b64")
    if raw:
        return base64.b64decode(raw)
    return str(record["path"]).encode("utf-8")


@dataclass
class Entry:
    """One record of a results file, as much of it as resuming and merging need."""

    key: bytes
    file_id: str | None
    status: str
    identity: tuple[str | None, ...]
    """Shared by the entries of one run (one tuple object), so a million entries cost one."""
    span: tuple[int, int] = (0, 0)
    """Where the record's bytes are in its file, line end included: ``osma merge`` copies them."""


@dataclass
class Contents:
    """What a results file holds: its entries in order, and where its valid part ends."""

    path: Path
    format: str
    header: list[str] | None = None
    header_span: tuple[int, int] = (0, 0)
    entries: list[Entry] = field(default_factory=list)
    valid_bytes: int = 0
    """Length of the file up to the end of its last whole record."""
    size: int = 0

    @property
    def torn(self) -> bool:
        """Whether the file ends in a record cut off by a kill (what follows ``valid_bytes``)."""
        return self.size > self.valid_bytes


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


TAIL_BLOCK = 1 << 16
"""Bytes read at a time from the end of a results file to find where its last record ends."""


def read_contents(path: Path | str) -> Contents:
    """Parse a results file written by ``ResultsFile`` (a missing or empty file holds nothing).

    A last record without its line end is a torn write: it is left out (``torn``). Any other
    malformed record means the file is not osma's, or was edited: refused, naming the line.
    The file is read line by line, so memory holds the entries, not the file.
    """
    path = Path(path)
    kind = results_format(path)
    contents = Contents(path=path, format=kind)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return contents
    except OSError as exc:
        raise DataError(f"{os.fsdecode(path)}: cannot be read ({exc.strerror or exc})") from None
    with handle:
        contents.size = os.fstat(handle.fileno()).st_size
        contents.valid_bytes = _end_of_last_record(
            handle, contents.size, CSV_LINE_END.encode() if kind == CSV else b"\n"
        )
        handle.seek(0)
        lines = _lines(path, handle, contents.valid_bytes)
        if kind == JSONL:
            contents.entries = list(_json_entries(path, lines))
        else:
            _read_csv(path, lines, contents)
    return contents


def _end_of_last_record(handle: BinaryIO, size: int, end: bytes) -> int:
    """The offset just past the last ``end`` in the file (0: none), read from the end backwards."""
    stop, after = size, b""
    while stop > 0:
        start = max(0, stop - TAIL_BLOCK)
        handle.seek(start)
        chunk = handle.read(stop - start) + after[: len(end) - 1]  # an ``end`` across two blocks
        found = chunk.rfind(end)
        if found >= 0:
            return start + found + len(end)
        stop, after = start, chunk
    return 0


def _lines(path: Path, handle: BinaryIO, limit: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, text) of each line up to ``limit`` (a line end), decoded, line end kept."""
    start = 0
    for raw in handle:
        if start >= limit:
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _not_ours(path, f"bytes that are not UTF-8 in the line at offset {start}") from None
        yield start, start + len(raw), text
        start += len(raw)


def _not_ours(path: Path, what: str) -> DataError:
    return DataError(
        f"{os.fsdecode(path)}: {what}; it is not a results file written by osma, or it was edited",
        hint="give --out a new file name",
    )


def _json_entries(path: Path, lines: Iterator[tuple[int, int, str]]) -> Iterator[Entry]:
    shared: dict[Any, Any] = {}
    for number, (start, end, line) in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            identity = tuple(record.get(name) for name in IDENTITY_FIELDS)
            yield Entry(
                key=record_path_key(record),
                file_id=record.get("file_id"),
                status=shared.setdefault(record["status"], record["status"]),
                identity=shared.setdefault(identity, identity),
                span=(start, end),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _not_ours(path, f"line {number} is not an attribution record") from None


def _read_csv(path: Path, lines: Iterator[tuple[int, int, str]], contents: Contents) -> None:
    """The header and entries of a CSV results file into ``contents``; each row's span is where
    the csv reader stopped reading for it (a quoted field may hold a line end)."""
    consumed = [0]

    def texts() -> Iterator[str]:
        for _, end, text in lines:
            consumed[0] = end
            yield text

    rows = csv.reader(texts())
    try:
        header = next(rows, None)
        if header is None:
            return
        contents.header, contents.header_span = header, (0, consumed[0])
        missing = [
            name for name in ("path", "path_bytes_b64", "status", "file_id", *IDENTITY_FIELDS) if name not in header
        ]
        if missing:
            raise _not_ours(path, f"its header lacks the column(s) {', '.join(missing)}")
        shared: dict[Any, Any] = {}
        start = consumed[0]
        for number, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise _not_ours(path, f"row {number} has {len(row)} fields, the header {len(header)}")
            record = {name: _none_if_empty(value) for name, value in zip(header, row)}
            identity = tuple(record[name] for name in IDENTITY_FIELDS)
            status = record["status"] or ""
            contents.entries.append(
                Entry(
                    key=record_path_key(record),
                    file_id=record["file_id"],
                    status=shared.setdefault(status, status),
                    identity=shared.setdefault(identity, identity),
                    span=(start, consumed[0]),
                )
            )
            start = consumed[0]
    except csv.Error as exc:
        raise _not_ours(path, f"a row is not CSV ({exc})") from None


def check_identity(contents: Contents, identity: RunIdentity) -> None:
    """Refuse a results file whose records were computed with another model, store or settings."""
    names = {
        "model": "another model",
        "references": "other reference-store contents (a generator enrolled or removed, or a new tau, since)",
        "settings": "other settings (--threshold, --top, --crops, --small, --max-pixels, --detect or --hash)",
    }
    for number, entry in enumerate(contents.entries, start=1):
        for name, theirs, ours in zip(IDENTITY_FIELDS, entry.identity, identity.as_tuple()):
            if theirs != ours:
                raise UsageError(
                    f"{os.fsdecode(contents.path)}: record {number} was made with {names[name]} "
                    f"({name} {theirs}, this run {ours}): resuming would mix two runs in one file",
                    hint="give --out a new file name, or delete this file to start again",
                )


class ResultsFile:
    """The ``--out`` file of a run: what it holds already, and the records this run appends."""

    def __init__(
        self,
        path: Path | str,
        identity: RunIdentity,
        *,
        csv_fields: Sequence[str] | None = None,
        csv_row: Callable[[dict], dict] | None = None,
    ) -> None:
        """Read ``path`` (resuming) or start it; ``csv_fields`` and ``csv_row``: the CSV layout."""
        self.path = Path(path)
        self.format = results_format(self.path)
        if self.format == CSV and (csv_fields is None or csv_row is None):
            raise UsageError("a CSV results file needs its columns (csv_fields, csv_row)")
        contents = read_contents(self.path)
        check_identity(contents, identity)
        if self.format == CSV and contents.header is not None and contents.header != list(csv_fields or ()):
            raise UsageError(
                f"{os.fsdecode(self.path)}: its columns differ from this run's (another --top or "
                "--detect?): resuming would mix two layouts in one file",
                hint="give --out a new file name, or the same options as the run that wrote it",
            )
        self.torn_bytes = contents.size - contents.valid_bytes
        self.recorded: dict[bytes, str | None] = {e.key: e.file_id for e in contents.entries}
        self.counts: Counter[str] = Counter(e.status for e in contents.entries)
        self.resumed = len(contents.entries)
        self._csv_row = csv_row
        self._handle = self._open_for_append(contents)
        self._writer = (
            csv.DictWriter(self._handle, fieldnames=list(csv_fields or ()), extrasaction="ignore")
            if self.format == CSV
            else None
        )
        if self._writer is not None and contents.header is None:
            self._writer.writeheader()
            self._handle.flush()

    def _open_for_append(self, contents: Contents):
        try:
            if contents.torn:
                os.truncate(self.path, contents.valid_bytes)
            return open(self.path, "a", encoding="utf-8", newline="" if self.format == CSV else None)
        except OSError as exc:
            raise DataError(
                f"--out {os.fsdecode(self.path)}: cannot be written ({exc.strerror or exc})",
                hint="check the folder's permissions and free space",
            ) from None

    def status_of(self, path: Path | str, identity_of_file: str | None) -> str:
        """``new``, ``done`` (recorded under the same ``file_id``) or ``changed`` (recorded under another)."""
        key = path_key(path)
        if key not in self.recorded:
            return "new"
        return "done" if self.recorded[key] == identity_of_file else "changed"

    def append(self, record: dict) -> None:
        """Write one record and flush it: a kill after this returns cannot lose it."""
        if self._writer is not None:
            assert self._csv_row is not None
            self._writer.writerow({k: ("" if v is None else v) for k, v in self._csv_row(record).items()})
        else:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Flush and fsync (the records survive a power cut, not only a kill), then close."""
        if self._handle.closed:
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
