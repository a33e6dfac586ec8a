"""``osma detect``: real or synthetic, for each image, without having seen a generated image."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from osma_cli.cli import output
from osma_cli.cli.options import BatchOpt, CsvOpt, DeviceOpt, JsonOpt, MaxPixelsOpt, WorkersOpt, finite_threshold
from osma_cli.cli.paths import check_record_outputs, image_inputs
from osma_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_INPUTS_FAILED

COMMAND = "detect"
CSV_FIELDS = ["path", "path_bytes_b64", "status", "verdict", "score", "threshold", "margin", "nll", "error", "warnings"]


def status_of(item) -> str:
    if item.detection is not None:
        return "ok"
    return "skipped" if item.skipped else "error"


def detection_record(item) -> dict:
    """One file's result: the JSON object and the CSV row (docs/output.md, ``osma detect``)."""
    d = item.detection
    data = {
        "path": output.path_text(item.path),
        "path_bytes_b64": output.path_bytes_b64(item.path),
        "status": status_of(item),
        "verdict": None,
        "score": None,
        "threshold": None,
        "margin": None,
        "nll": None,
        "error": item.error,
        "warnings": list(item.warnings),
    }
    if d is not None:
        data.update(
            verdict=d.verdict,
            score=output.finite_or_none(d.score),
            threshold=output.finite_or_none(d.threshold),
            margin=output.finite_or_none(d.margin),
            nll=output.finite_or_none(d.nll),
        )
    return output.record(COMMAND, data)


def csv_row(record: dict) -> dict:
    return {**record, "warnings": "; ".join(record["warnings"])}


def report(item) -> None:
    """What is wrong with one file, on stderr, naming it."""
    if item.detection is None:
        output.file_problem(item.path, item.error or "skipped", level="note" if item.skipped else "warning")
        return
    for warning in item.warnings:
        output.file_problem(item.path, f"{warning} (detected anyway)")


def detect(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Image files and/or folders (searched recursively).", exists=True, show_default=False),
    ],
    detector: Annotated[
        Path | None,
        typer.Option(
            "--detector",
            help="Detector file (`osma train --method fsd-detector`). Default: the shipped one, "
            "fitted on camera photographs.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="The descriptor (fsd weights) the detector was fitted on. Default: the shipped "
            "osma-fsd.safetensors. Another one is refused.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Override the detector's threshold (on the score: synthetic when score >= it).",
            show_default=False,
            callback=finite_threshold,
        ),
    ] = None,
    json_out: JsonOpt = False,
    csv_out: CsvOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = None,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Say whether each image is a real photograph or synthetic (zero-shot: no generated image was seen).

    The detector is a Gaussian mixture of real photographs' forensic self-descriptions
    (Nguyen et al., CVPR 2025). The score is the image's negative log-likelihood under it,
    standardised by held-out real photos (0: a typical real photo; larger: less like one);
    synthetic when the score is at or above the threshold, which passes a stated share (95%)
    of held-out real photos. Exit code 0 when every file was processed, 3 when some could not
    be read (each is reported), 2 for usage errors, 130 when interrupted. The records and CSV
    columns are described in docs/output.md; the method and its measured figures in
    docs/detection.md.
    """
    from osma_cli.detect_files import FileDetection, detect_files, load

    csv_to_stdout = check_record_outputs(json_out, csv_out)
    files, unlisted = image_inputs(paths)
    loaded = load(detector, model, device)
    tau = loaded.detector.threshold if threshold is None else threshold

    counts = {"ok": 0, "error": 0, "skipped": 0}
    with contextlib.ExitStack() as stack:
        csv_writer = None
        if csv_out is not None:
            handle = (
                sys.stdout if csv_to_stdout else stack.enter_context(open(csv_out, "w", newline="", encoding="utf-8"))
            )
            csv_writer = output.CsvWriter(handle, CSV_FIELDS)

        sink = output.RecordSink(json_out=json_out, csv_writer=csv_writer, csv_to_stdout=csv_to_stdout, csv_row=csv_row)
        records = sink.records

        def emit(item) -> None:
            record = detection_record(item)
            report(item)
            sink.write(record)

        for folder, reason in unlisted:
            emit(FileDetection(path=folder, detection=None, error=reason))
        try:
            with output.progress_bar(
                "detecting", len(files), enabled=len(files) > 1, streams_stdout=json_out or csv_to_stdout
            ) as advance:
                for item in detect_files(
                    loaded,
                    files,
                    threshold=threshold,
                    batch_size=batch_size,
                    workers=workers,
                    max_pixels=max_pixels,
                    on_progress=advance,
                ):
                    emit(item)
                    counts[status_of(item)] += 1
        except KeyboardInterrupt:
            done = sum(counts.values())
            where = "" if csv_out is None or csv_to_stdout else f"; {done} results in {output.path_text(csv_out)}"
            if records:
                render_table(records, tau)
            output.stderr.print(f"interrupted after {done} of {len(files)} files{where}", soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    if records:
        render_table(records, tau)
    if unlisted:
        output.stderr.print(f"{len(unlisted)} folder(s) could not be listed.")
    if counts["error"]:
        output.stderr.print(f"{counts['error']} of {len(files)} files could not be read.")
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if counts["error"] or unlisted else EXIT_OK)


def render_table(records: list[dict], tau: float) -> None:
    from osma_cli.cli.attribute import short_paths

    root, names = short_paths([r["path"] for r in records])
    with_notes = any(r["status"] != "ok" or r["warnings"] for r in records)
    columns = ["file", "verdict", "score", "margin"] + (["note"] if with_notes else [])
    rows = []
    for r, name in zip(records, names):
        if r["status"] != "ok":
            row = [name, r["status"], "", ""]
        else:
            row = [name, r["verdict"], f"{r['score']:.2f}", f"{r['margin']:+.2f}"]
        if with_notes:
            row.append("; ".join(([r["error"]] if r["error"] else []) + r["warnings"]))
        rows.append(row)
    title = f"synthetic when score >= threshold = {tau:.2f} (score 0: a typical real photo)" + (
        f"; files under {root}" if root else ""
    )
    output.print_table(output.simple_table(title, columns, rows))
