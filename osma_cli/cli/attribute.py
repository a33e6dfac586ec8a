"""``osma attribute``: which known generator made each image, or unknown."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from osma_cli.cli import output
from osma_cli.cli.options import (
    BatchOpt,
    CropsOpt,
    CsvOpt,
    DeviceOpt,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    RefsOpt,
    SmallOpt,
    WorkersOpt,
    finite_threshold,
)
from osma_cli.cli.paths import check_output_file, check_record_outputs, image_inputs, is_stdout
from osma_cli.cli.session import embed_options, load_embedder, model_path, refs_path
from osma_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError
from osma_cli.sharding import Shard

if TYPE_CHECKING:
    from osma_cli.results_file import ResultsFile, RunIdentity


SCHEMA = output.SCHEMA
"""Version of the JSON record of ``osma attribute`` (docs/output.md); raised on any change
that is not a new field."""


def status_of(item) -> str:
    """ok, error (unreadable), or skipped (left out on purpose, not a failure)."""
    if item.attribution is not None:
        return "ok"
    return "skipped" if item.skipped else "error"


def attribution_record(item, top_k: int, command: str, detect: bool, run: Mapping[str, str | None]) -> dict:
    """One file's result as a flat-ish dict: the JSON object and the CSV row (docs/output.md).

    ``run``: the fields that tie it to its file and run (``file_id`` and ``RunIdentity.fields``).
    """
    a = item.attribution
    record = {
        "schema": SCHEMA,
        "command": command,
        "path": output.path_text(item.path),
        "path_bytes_b64": output.path_bytes_b64(item.path),
        "status": status_of(item),
        "verdict": None,
        "candidate": None,
        "score": None,
        "threshold": None,
        "margin": None,
        "error": item.error,
        "warnings": list(item.warnings),
        "regime": getattr(item, "regime", None),
        "top": [],
    }
    record.update(run)
    if detect:
        d = getattr(item, "detection", None)
        record["detection"] = (
            None
            if d is None
            else {
                "verdict": d.verdict,
                "score": output.finite_or_none(d.score),
                "threshold": output.finite_or_none(d.threshold),
            }
        )
    if a is not None:
        record.update(
            verdict=item.verdict,
            candidate=a.candidate,
            score=output.finite_or_none(a.score),
            threshold=output.finite_or_none(a.threshold),
            margin=output.finite_or_none(a.margin),
            top=[
                {
                    "name": c.name,
                    "distance": output.finite_or_none(c.distance),
                    "normalized_distance": output.finite_or_none(c.normalized_distance),
                }
                for c in a.top[:top_k]
            ],
        )
    return record


RUN_FIELDS = ("file_id", "model", "references", "settings")
"""What ties a record to its file and its run (docs/output.md; ``osma_cli.results_file``)."""


def csv_fields(top_k: int, detect: bool = False) -> list[str]:
    fields = [
        "path",
        "path_bytes_b64",
        "status",
        "verdict",
        "candidate",
        "score",
        "threshold",
        "margin",
        "error",
        "warnings",
        "regime",
        *RUN_FIELDS,
    ]
    if detect:
        fields += ["detection_verdict", "detection_score", "detection_threshold"]
    for i in range(1, top_k + 1):
        fields += [f"top{i}", f"top{i}_distance", f"top{i}_normalized_distance"]
    return fields


def csv_row(record: dict) -> dict:
    row = {k: v for k, v in record.items() if k not in ("top", "schema", "command", "detection")}
    row["warnings"] = "; ".join(record["warnings"])
    if "detection" in record:
        for key in ("verdict", "score", "threshold"):
            row[f"detection_{key}"] = (record["detection"] or {}).get(key)
    for i, cand in enumerate(record["top"], start=1):
        row[f"top{i}"] = cand["name"]
        row[f"top{i}_distance"] = cand["distance"]
        row[f"top{i}_normalized_distance"] = cand["normalized_distance"]
    return row


def report(item) -> None:
    """What is wrong with one file, on stderr, naming it."""
    if item.attribution is None:
        if item.skipped:
            output.file_problem(item.path, item.error, level="note")
        else:
            output.file_problem(item.path, f"{item.error} (not attributed)")
    for warning in item.warnings:
        output.file_problem(item.path, f"{warning} (attributed anyway)")


def attribute(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Image files and/or folders (searched recursively).", exists=True, show_default=False),
    ],
    top: Annotated[int, typer.Option("--top", min=1, help="Show the K nearest generators.")] = 1,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Override tau (on the store's score, e.g. the normalized distance; on 1 - max "
            "softmax for a classifier).",
            show_default=False,
            callback=finite_threshold,
        ),
    ] = None,
    json_out: JsonOpt = False,
    csv_out: CsvOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Append the records to this file (.jsonl or .csv) as they come. Run the same command "
            "again after a stop and it resumes: files already recorded are skipped. No table.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    hash_files: Annotated[
        bool,
        typer.Option(
            "--hash",
            help="Tell files apart by the sha256 of their bytes, not by size and modification time "
            "(for --out: a copied or touched file is not attributed again).",
        ),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Take only shard I of N (I/N, from 1): a deterministic 1/N of the files, by a hash "
            "of each path; combine the shards' --out files with `osma merge`.",
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache",
            help="Keep each file's features in the embedding cache ($OSMA_HOME/cache) and reuse "
            "them: re-attributing after an enrolment or with another tau describes nothing "
            "again.",
        ),
    ] = False,
    from_cache: Annotated[
        bool,
        typer.Option(
            "--from-cache",
            help="Score from the embedding cache only, reading no image: a file it lacks is an error saying so.",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process, its loader workers) or ray (a Ray Data job: the model in "
            "actors, one per GPU or a CPU pool; the local Ray, or the cluster at $RAY_ADDRESS; "
            "needs pip install 'osma[ray]'). The same records either way.",
        ),
    ] = "local",
    model: ModelOpt = None,
    refs: RefsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    crops: CropsOpt = 1,
    small: SmallOpt = "pad",
    max_pixels: MaxPixelsOpt = None,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect",
            help="Ask the zero-shot detector first (`osma detect`): an image it calls real is "
            "answered real; the others are attributed or called unknown.",
        ),
    ] = False,
    detector: Annotated[
        Path | None,
        typer.Option(
            "--detector",
            help="With --detect: the detector file. Default: the shipped one.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Attribute images to known generators, or say unknown.

    The verdict is the nearest generator's name when its score (by the store's rule: by
    default the normalized distance) is below the threshold, otherwise 'unknown'. With a
    classifier model (POSE) the candidate is its most probable class and the score is
    1 - max softmax, with the same rule; its classes and threshold come from its weights, so
    --refs is not used. Exit code 0 when every file was processed, 3 when some could not be
    read (each is reported), 2 for usage errors, 130 when interrupted, 141 when the reader of
    stdout went away. The records and CSV columns are described in docs/output.md; --out,
    --shard and the cache in docs/scale.md.
    """
    if detector is not None and not detect:
        raise UsageError("--detector is for --detect", hint="add --detect, or leave --detector out")
    run = LargeRun(
        out=out,
        hash_files=hash_files,
        shard=None if shard is None else Shard.parse(shard),
        cache=cache or from_cache,
        from_cache=from_cache,
        engine=engine,
    )
    attribute_paths(
        paths,
        top=top,
        threshold=threshold,
        json_out=json_out,
        csv_out=csv_out,
        model=model,
        refs=refs,
        device=device,
        batch_size=batch_size,
        workers=workers,
        crops=crops,
        small=small,
        max_pixels=max_pixels,
        detect=detect,
        detector=detector,
        run=run,
    )


ENGINES = ("local", "ray")


@dataclass(frozen=True)
class LargeRun:
    """The options of a long run: where records go to be resumed, which shard, the cache."""

    out: Path | None = None
    hash_files: bool = False
    shard: Shard | None = None
    cache: bool = False
    from_cache: bool = False
    engine: str = "local"

    def check(self, *, json_out: bool, csv_out: Path | None, detect: bool) -> None:
        from osma_cli.results_file import results_format

        if self.engine not in ENGINES:
            raise UsageError(f"--engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.engine == "ray" and (detect or self.cache):
            raise UsageError(
                "--engine ray runs the attribution alone, without --detect or the cache",
                hint="leave out --detect, --cache and --from-cache, or use --engine local",
            )
        if self.out is not None:
            if is_stdout(self.out):
                raise UsageError("--out - : records on stdout are --json", hint="use --json, or give --out a file")
            results_format(self.out)
            check_output_file(self.out, "--out")
            if (
                csv_out is not None
                and not is_stdout(csv_out)
                and os.path.realpath(csv_out) == os.path.realpath(self.out)
            ):
                raise UsageError("--csv and --out name the same file", hint="give one of them")
        if self.from_cache and detect:
            raise UsageError(
                "--from-cache reads no image, and --detect must",
                hint="leave one out (--cache with --detect reuses the attribution's features)",
            )


def attribute_paths(
    paths: list[Path],
    *,
    top: int,
    threshold: float | None,
    json_out: bool,
    csv_out: Path | None,
    model: Path | None,
    refs: Path | None,
    device: str,
    batch_size: int,
    workers: int | None,
    crops: int,
    small: str,
    max_pixels: int | None,
    command: str = "attribute",
    extra: dict | None = None,
    detect: bool = False,
    detector: Path | None = None,
    run: LargeRun = LargeRun(),
) -> None:
    """``osma attribute``'s work; ``command`` names the records, ``extra`` (path -> fields)
    adds fields to the records of those files (``osma demo``: the expected verdict)."""
    from osma_cli.api import FileAttribution, attribute_detected, attribute_files, batch_granule, scorer_for
    from osma_cli.attribution import resolve_threshold
    from osma_cli.cache import EmbeddingCache
    from osma_cli.classifier import refuse_refs_for_classifier, resolve_classifier_threshold
    from osma_cli.regime_store import load_store
    from osma_cli.results_file import ResultsFile, file_id

    csv_to_stdout = check_record_outputs(json_out, csv_out)
    run.check(json_out=json_out, csv_out=csv_out, detect=detect)
    options = embed_options(crops, batch_size, workers, small, max_pixels)
    files, unlisted = image_inputs(paths)
    if run.shard is not None:
        files = run.shard.select(files)
        unlisted = run.shard.select(unlisted, key=lambda entry: entry[0])
    embedder = load_embedder(model, device)
    refuse_refs_for_classifier(embedder.meta, refs)
    store_file = None
    tau: float | dict[str, float]  # per regime for a store with JPEG regimes
    if embedder.is_classifier:
        store = None
        tau = resolve_classifier_threshold(embedder.weights_path, embedder.meta, threshold)
    else:
        store_file = refs_path(refs, write=False, model=model)
        store = load_store(store_file)
        store.check_weights(embedder.meta, store_path=store_file)
        tau = resolve_threshold(store, threshold)
    scorer = scorer_for(embedder, store)
    loaded = load_chained_detector(detector, model, embedder, device) if detect else None
    identity = run_identity(
        embedder, store, tau=tau, top=top, options=options, detector=loaded, hash_files=run.hash_files
    )
    file_ids = {path: file_id(path, content=run.hash_files) for path in files}
    embedding_cache = (
        EmbeddingCache.for_embedder(embedder, n_crops=options.n_crops, small=options.small) if run.cache else None
    )

    counts = {"ok": 0, "error": 0, "skipped": 0}
    recorded: set[Path] = set()
    written = [0]
    with contextlib.ExitStack() as stack:
        results = None
        if run.out is not None:
            results = stack.enter_context(
                ResultsFile(run.out, identity, csv_fields=csv_fields(top, detect), csv_row=csv_row)
            )
            files, unlisted, recorded = resume(
                results, files, unlisted, file_ids, granule=batch_granule(embedder, options, embedding_cache)
            )
            for status, n in results.counts.items():
                counts[status] = counts.get(status, 0) + n
        csv_writer = None
        if csv_out is not None:
            handle = (
                sys.stdout if csv_to_stdout else stack.enter_context(open(csv_out, "w", newline="", encoding="utf-8"))
            )
            csv_writer = output.CsvWriter(handle, csv_fields(top, detect))

        sink = output.RecordSink(
            json_out=json_out, csv_writer=csv_writer, csv_to_stdout=csv_to_stdout, csv_row=csv_row, results=results
        )
        records = sink.records
        identity_fields = identity.fields()

        def emit(item) -> None:
            record = attribution_record(
                item, top, command, detect, run={"file_id": file_ids.get(item.path), **identity_fields}
            )
            record.update((extra or {}).get(item.path, {}))
            report(item)
            sink.write(record)
            written[0] += 1

        for folder, reason in unlisted:
            emit(FileAttribution(path=folder, attribution=None, error=reason))
        try:
            with output.progress_bar(
                "attributing", len(files), enabled=len(files) > 1, streams_stdout=json_out or csv_to_stdout
            ) as advance:
                if files:
                    if run.engine == "ray":
                        from osma_cli.ray_engine import attribute_files_ray

                        results_stream = attribute_files_ray(
                            model_path(model),
                            store_file,
                            files,
                            device=device,
                            threshold=tau,
                            top_k=top,
                            options=options,
                            on_progress=advance,
                        )
                    elif loaded is None:
                        results_stream = attribute_files(
                            embedder,
                            store,
                            files,
                            threshold=tau,
                            top_k=top,
                            options=options,
                            cache=embedding_cache,
                            cached_only=run.from_cache,
                            on_progress=advance,
                        )
                    else:
                        results_stream = attribute_detected(
                            embedder,
                            store,
                            files,
                            detector=loaded,
                            threshold=tau,
                            top_k=top,
                            options=options,
                            cache=embedding_cache,
                            on_progress=advance,
                        )
                    for item in results_stream:
                        if item.path not in recorded:
                            emit(item)
                            counts[status_of(item)] += 1
        except KeyboardInterrupt:
            done = sum(counts.values())
            where = "" if csv_out is None or csv_to_stdout else f"; {done} results in {output.path_text(csv_out)}"
            if run.out is not None:
                where = f"; run the same command again to resume into {output.path_text(run.out)}"
            if records:
                render_table(records, top, tau, scorer.score_name)
            output.stderr.print(
                f"interrupted after {written[0]} of {len(files) - len(recorded) + len(unlisted)} files{where}",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None

    if records:
        render_table(records, top, tau, scorer.score_name)
    if run.out is not None:
        output.note(f"{sum(counts.values())} records in {output.path_text(run.out)} ({written[0]} written by this run)")
    total = sum(counts.values())
    if counts["skipped"]:
        output.stderr.print(f"{counts['skipped']} of {total} files skipped on purpose (--small skip).")
    if unlisted:
        output.stderr.print(f"{len(unlisted)} folder(s) could not be listed.")
    if counts["error"]:
        output.stderr.print(f"{counts['error']} of {total} files could not be read.")
    if counts["error"] or unlisted:
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)
    raise typer.Exit(EXIT_OK)


def run_identity(embedder, store, *, tau, top: int, options, detector, hash_files: bool) -> RunIdentity:
    """What this run's records are computed with: the model, the store's contents, and every
    setting that changes a record (``results_file.RunIdentity``)."""
    from osma_cli.data.files import file_sha256
    from osma_cli.regime_store import store_identity
    from osma_cli.results_file import RunIdentity

    settings = {
        "tau": dict(tau) if isinstance(tau, Mapping) else float(tau),
        "top": top,
        "crops": options.n_crops,
        "small": options.small,
        "max_pixels": options.max_pixels,
        "detector": None if detector is None else file_sha256(detector.path),
        "hash": hash_files,
    }
    return RunIdentity.of(embedder.meta.sha256, None if store is None else store_identity(store), settings)


def resume(
    results: ResultsFile,
    files: list[Path],
    unlisted: list[tuple[Path, str]],
    file_ids: Mapping[Path, str | None],
    *,
    granule: int,
) -> tuple[list[Path], list[tuple[Path, str]], set[Path]]:
    """What is left to do after the records already in ``results``: the files to run, the folders
    to report, and which of those files are recorded already (run again, not written again).

    The run restarts at the multiple of ``granule`` (``api.batch_granule``) before the first file
    not recorded, so its batches are those of one uninterrupted run and so are its numbers, to
    the last bit. Says on stderr what it found.
    """
    if results.torn_bytes:
        output.note(
            f"{output.path_text(results.path)}: removed a torn last record ({results.torn_bytes} bytes; "
            "the run was stopped while writing it): that file is attributed again"
        )
    status = {p: results.status_of(p, file_ids[p]) for p in files}
    todo = [p for p in files if status[p] != "done"]
    changed = [p for p in todo if status[p] == "changed"]
    folders = [entry for entry in unlisted if results.status_of(entry[0], None) == "new"]
    if results.resumed:
        output.note(
            f"resuming {output.path_text(results.path)}: {results.resumed} records already there, "
            f"{len(todo) + len(folders)} files to go"
        )
    if changed:
        output.warn(
            f"{len(changed)} file(s) changed since they were recorded (e.g. {output.path_text(changed[0])}): "
            "attributed again, the new record after the old (`osma merge` keeps the new one)"
        )
    if not todo:
        return [], folders, set()
    first = files.index(todo[0])
    rerun = files[first - first % granule :]
    return rerun, folders, {p for p in rerun if status[p] == "done"}


def load_chained_detector(detector: Path | None, model: Path | None, embedder, device: str):
    """The detector for ``--detect``, on the attribution model's own descriptor when the detector
    was fitted on it (described once more, not loaded twice from elsewhere), else on the shipped one."""
    from osma_cli.detect_files import load
    from osma_cli.errors import OsmaError

    if embedder.is_descriptor:
        try:
            return load(detector, model_path(model), device)
        except OsmaError:
            pass  # fitted on another descriptor: the shipped one, which load checks in turn
    return load(detector, None, device)


def short_paths(paths: list[str]) -> tuple[str, list[str]]:
    """The folder all files share, and each file relative to it (tables stay narrow)."""
    if len(paths) < 2:
        return "", paths
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return root, [os.path.relpath(p, root) if root else p for p in paths]


def top_ranking(score_name: str) -> str:
    """How the ``--top`` list is ranked (docs/output.md, ``top``): by the verdict's score, except
    for Fang's rule, which ranks by the raw distance and decides on the normalized one."""
    from osma_cli.rules.fang import FangRule

    if score_name != FangRule.score_name:
        return f"top list ranked by {score_name}"
    return f"top list ranked by distance to each centroid; verdict on the {score_name}"


def tau_text(tau: float | Mapping[str, float]) -> str:
    """The table's caption of tau: one value, or one per compression regime."""
    if isinstance(tau, Mapping):
        return "threshold tau per regime: " + ", ".join(f"{name} {value:.3f}" for name, value in tau.items())
    return f"threshold tau = {tau:.3f}"


def render_table(
    records: list[dict], top_k: int, tau: float | Mapping[str, float], score_name: str = "norm. distance"
) -> None:
    root, names = short_paths([r["path"] for r in records])
    routed = any(r.get("regime") for r in records)
    detected = any("detection" in r for r in records)
    columns = (
        ["file", "verdict", "candidate", score_name, "margin"]
        + (["regime"] if routed else [])
        + (["detector"] if detected else [])
    )
    if top_k > 1:
        columns.append(f"top {top_k} ({score_name})")
    with_notes = any(r["status"] != "ok" or r["warnings"] for r in records)
    if with_notes:
        columns.append("note")
    rows = []
    for r, name in zip(records, names):
        notes = ([r["error"]] if r["error"] else []) + r["warnings"]
        if r["status"] != "ok":
            row = (
                [name, r["status"], "", "", ""]
                + ([""] if routed else [])
                + ([""] if detected else [])
                + ([""] if top_k > 1 else [])
            )
        else:
            row = [name, r["verdict"], r["candidate"], f"{r['score']:.3f}", f"{r['margin']:+.3f}"]
            if routed:
                row.append(r.get("regime") or "")
            if detected:
                row.append((r.get("detection") or {}).get("verdict") or "")
            if top_k > 1:
                row.append(", ".join(f"{c['name']} ({c['normalized_distance']:.2f})" for c in r["top"]))
        if with_notes:
            row.append("; ".join(notes))
        rows.append(row)
    title = tau_text(tau) + (f"; files under {root}" if root else "")
    if top_k > 1:
        title += "\n" + top_ranking(score_name)
    output.print_table(output.simple_table(title, columns, rows))
