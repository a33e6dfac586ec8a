"""``osma attribute``: which known generator made each image, or unknown."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from osma_cli.cli import output
from osma_cli.cli.options import (BatchOpt, CropsOpt, DeviceOpt, JsonOpt, MaxPixelsOpt, ModelOpt,
                                  RefsOpt, SmallOpt, WorkersOpt)
from osma_cli.cli.session import embed_options, load_embedder, refs_path
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError


def attribution_record(item, top_k: int) -> dict:
    """One file's result as a flat-ish dict: the JSON object and the CSV row."""
    a = item.attribution
    record = {"path": str(item.path), "status": "ok" if a is not None else "error",
              "verdict": None, "candidate": None, "score": None, "threshold": None,
              "margin": None, "error": item.error, "top": []}
    if a is not None:
        record.update(verdict=a.verdict, candidate=a.candidate,
                      score=output.finite_or_none(a.score),
                      threshold=output.finite_or_none(a.threshold),
                      margin=output.finite_or_none(a.margin),
                      top=[{"name": c.name, "distance": output.finite_or_none(c.distance),
                            "normalized_distance": output.finite_or_none(c.normalized_distance)}
                           for c in a.top[:top_k]])
    return record


def csv_fields(top_k: int) -> list[str]:
    fields = ["path", "status", "verdict", "candidate", "score", "threshold", "margin", "error"]
    for i in range(1, top_k + 1):
        fields += [f"top{i}", f"top{i}_distance", f"top{i}_normalized_distance"]
    return fields


def csv_row(record: dict) -> dict:
    row = {k: v for k, v in record.items() if k != "top"}
    for i, cand in enumerate(record["top"], start=1):
        row[f"top{i}"] = cand["name"]
        row[f"top{i}_distance"] = cand["distance"]
        row[f"top{i}_normalized_distance"] = cand["normalized_distance"]
    return row


def attribute(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).",
                                                show_default=False)],
    top: Annotated[int, typer.Option("--top", min=1, help="Show the K nearest generators.")] = 1,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", help="Override tau (on the normalized distance; on 1 - max softmax for a classifier).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
    csv_out: Annotated[Optional[Path], typer.Option(
        "--csv", help="Also write the results to this CSV file.", dir_okay=False,
        show_default=False)] = None,
    model: ModelOpt = None,
    refs: RefsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    crops: CropsOpt = 1,
    small: SmallOpt = "pad",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Attribute images to known generators, or say unknown.

    The verdict is the nearest generator's name when the normalized distance to it is below
    the threshold, otherwise 'unknown'. With a classifier model (POSE) the candidate is its
    most probable class and the score is 1 - max softmax, with the same rule; its classes
    and threshold come from its weights, so --refs is not used. Exit code 0 when every
    file was processed, 3 when some could not be read (each is reported), 2 for usage errors.
    """
    from osma_cli.api import attribute_files
    from osma_cli.attribution import resolve_threshold
    from osma_cli.classifier import refuse_refs_for_classifier, resolve_classifier_threshold
    from osma_cli.data import iter_image_files
    from osma_cli.references import ReferenceStore

    options = embed_options(crops, batch_size, workers, small, max_pixels)
    files = list(iter_image_files(paths))
    if not files:
        raise UsageError("no image files found in " + ", ".join(str(p) for p in paths),
                         hint="pass image files or folders holding .jpg/.png/... images")
    embedder = load_embedder(model, device)
    refuse_refs_for_classifier(embedder.meta, refs)
    if embedder.is_classifier:
        store = None
        tau = resolve_classifier_threshold(embedder.weights_path, embedder.meta, threshold)
    else:
        store_file = refs_path(refs)
        store = ReferenceStore.load(store_file)
        store.check_weights(embedder.meta, store_path=store_file)
        tau = resolve_threshold(store, threshold)

    csv_handle = open(csv_out, "w", newline="", encoding="utf-8") if csv_out else None
    csv_writer = output.CsvWriter(csv_handle, csv_fields(top)) if csv_handle else None
    records, n_failed = [], 0
    try:
        with output.progress_bar("attributing", len(files), enabled=len(files) > 1) as advance:
            for item in attribute_files(embedder, store, files, threshold=tau, top_k=top,
                                        options=options, on_progress=advance):
                record = attribution_record(item, top)
                if item.error is not None:
                    n_failed += 1
                    output.warn(f"skipped {output.escape(item.error)}")
                if json_out:
                    output.write_json_line(record)
                else:
                    records.append(record)
                if csv_writer is not None:
                    csv_writer.write(csv_row(record))
    finally:
        if csv_handle is not None:
            csv_handle.close()

    if not json_out:
        render_table(records, top, tau, "1 - max softmax" if embedder.is_classifier else "norm. distance")
    if n_failed:
        output.stderr.print(f"{n_failed} of {len(files)} files could not be read.")
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)
    raise typer.Exit(EXIT_OK)


def short_paths(paths: list[str]) -> tuple[str, list[str]]:
    """The folder all files share, and each file relative to it (tables stay narrow)."""
    if len(paths) < 2:
        return "", paths
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return root, [os.path.relpath(p, root) if root else p for p in paths]


def render_table(records: list[dict], top_k: int, tau: float, score_name: str = "norm. distance") -> None:
    root, names = short_paths([r["path"] for r in records])
    columns = ["file", "verdict", "candidate", score_name, "margin"]
    if top_k > 1:
        columns.append(f"top {top_k}")
    rows = []
    for r, name in zip(records, names):
        if r["status"] != "ok":
            rows.append([name, "error", "", "", ""] + ([""] if top_k > 1 else []))
            continue
        row = [name, r["verdict"], r["candidate"], f"{r['score']:.3f}", f"{r['margin']:+.3f}"]
        if top_k > 1:
            row.append(", ".join(f"{c['name']} ({c['normalized_distance']:.2f})" for c in r["top"]))
        rows.append(row)
    title = f"threshold tau = {tau:.3f}" + (f"; files under {root}" if root else "")
    output.stdout.print(output.simple_table(title, columns, rows))
