"""``osma discover``: group the images rejected as unknown, perhaps a few new generators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from osma_cli.cli import output
from osma_cli.cli.options import (
    BatchOpt,
    CropsOpt,
    DeviceOpt,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    RefsOpt,
    SmallOpt,
    WorkersOpt,
    finite_threshold,
)
from osma_cli.cli.paths import image_inputs
from osma_cli.cli.session import command_line, embed_options, load_embedder, refs_path
from osma_cli.defaults import DISCOVERY_CUT_SCALE, DISCOVERY_METHOD, DISCOVERY_METHODS, DISCOVERY_MIN_CLUSTER_SIZE
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError

if TYPE_CHECKING:
    from osma_cli.discovery import Discovery
    from osma_cli.embed import EmbedOptions

COMMAND = "discover"
EXAMPLES = 3


def discover(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image files and/or folders (searched recursively); none with --enroll.",
            exists=True,
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for clusters.json, one contact sheet per cluster (cluster-ID.png) and "
            "the t-SNE map (map.png, or map-REGIME.png per JPEG regime).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    min_cluster_size: Annotated[
        int, typer.Option("--min-cluster-size", min=2, help="Fewest images that make a cluster.")
    ] = DISCOVERY_MIN_CLUSTER_SIZE,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="agglomerative (average linkage cut at --cut-scale x the known generators' "
            "median sigma), or hdbscan (density-based, needs no cut).",
        ),
    ] = DISCOVERY_METHOD,
    cut_scale: Annotated[
        float,
        typer.Option(
            "--cut-scale",
            min=0.01,
            help="With --method agglomerative: the distance cut in units of the known generators' median sigma.",
        ),
    ] = DISCOVERY_CUT_SCALE,
    enroll: Annotated[
        int | None,
        typer.Option(
            "--enroll",
            help="Enrol this cluster of a previous run (--from) as generator --name; embeds and "
            "writes as `osma enroll` does.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="With --enroll: the new generator's name.", show_default=False)
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="With --enroll: the --out folder (or clusters.json) of the run whose contact sheet you looked at.",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Override tau (as for `osma attribute`): images scoring at or above it are unknown.",
            show_default=False,
            callback=finite_threshold,
        ),
    ] = None,
    json_out: JsonOpt = False,
    model: ModelOpt = None,
    refs: RefsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    crops: CropsOpt = 1,
    small: SmallOpt = "pad",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Group the images the store calls unknown: clusters of look-alikes may be new generators.

    Attributes the images as `osma attribute` does, clusters the unknowns' embeddings
    (agglomerative by default, or HDBSCAN; per JPEG regime for a model with regimes) and
    shows each cluster's size, its nearest known generator with the distance of the
    cluster's mean to that generator's centroid, and a few of its files. `--enroll N --name NAME --from DIR` then enrols
    cluster N of that run, refusing if its files, the model or the store changed since.
    Exit code 0 when every file was processed, 3 when some could not be read (each is
    reported), 2 for usage errors. See docs/discovery.md.
    """
    from osma_cli.attribution import resolve_threshold
    from osma_cli.classifier import require_embedding_model
    from osma_cli.discovery import discover_files
    from osma_cli.discovery_enroll import run_identity
    from osma_cli.regime_store import load_store

    options = embed_options(crops, batch_size, workers, small, max_pixels)
    if enroll is not None or name is not None or source is not None:
        enroll_from_run(enroll, name, source, paths, options, model=model, refs=refs, device=device, json_out=json_out)
    if not paths:
        raise UsageError("no images given", hint="pass image files or folders, or --enroll N --name NAME --from DIR")
    if method not in DISCOVERY_METHODS:
        raise UsageError(
            f"--method {method!r}: not a clustering method", hint=f"choose one of {', '.join(DISCOVERY_METHODS)}"
        )
    files, unlisted = image_inputs(paths)
    embedder = load_embedder(model, device)
    require_embedding_model(embedder.meta, "group unknown images")
    store_file = refs_path(refs, write=False, model=model)
    store = load_store(store_file)
    store.check_weights(embedder.meta, store_path=store_file)
    with output.progress_bar("attributing", len(files), enabled=len(files) > 1) as advance:
        found = discover_files(
            embedder,
            store,
            files,
            threshold=resolve_threshold(store, threshold),
            min_cluster_size=min_cluster_size,
            method=method,
            cut_scale=cut_scale,
            options=options,
            on_progress=advance,
        )
    unreadable = report_failures(found, unlisted)
    data = clusters_record(found, min_cluster_size, run_identity(store_file, embedder.meta))
    if out is not None:
        write_outputs(out, found, data)
    if json_out:
        output.write_json(data)
    else:
        render(found)
    if unreadable:
        output.stderr.print(f"{unreadable} of {len(files) + len(unlisted)} inputs could not be read.")
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)
    raise typer.Exit(EXIT_OK)


def report_failures(found: Discovery, unlisted: list[tuple[Path, str]]) -> int:
    """Each file that was not attributed, and each folder that could not be listed, on stderr;
    returns how many were unreadable (files skipped on purpose are noted, not counted)."""
    for folder, reason in unlisted:
        output.file_problem(folder, reason)
    unreadable = len(unlisted)
    for item in found.failures:
        if item.skipped:
            output.file_problem(item.path, item.error or "skipped", level="note")
        else:
            unreadable += 1
            output.file_problem(item.path, f"{item.error} (not attributed)")
    return unreadable


def enroll_from_run(
    cluster: int | None,
    name: str | None,
    source: Path | None,
    paths: list[Path] | None,
    options: EmbedOptions,
    *,
    model: Path | None,
    refs: Path | None,
    device: str,
    json_out: bool,
) -> None:
    """``--enroll N --name NAME --from DIR``: one cluster of a recorded run, through `osma enroll`'s path."""
    from osma_cli.cli.references import check_generator_name, plural
    from osma_cli.discovery_enroll import enroll_cluster

    if cluster is None or name is None or source is None:
        missing = [
            flag for flag, value in (("--enroll", cluster), ("--name", name), ("--from", source)) if value is None
        ]
        raise UsageError(
            f"{', '.join(missing)} missing: enrolling a cluster takes --enroll N --name NAME --from DIR",
            hint="DIR is the --out folder of the `osma discover` run whose contact sheet you looked at",
        )
    if paths:
        raise UsageError(
            "--enroll takes no image paths: the cluster's files come from --from",
            hint=f"osma discover --enroll {cluster} --name {name} --from {output.path_text(source)}",
        )
    check_generator_name(name)
    store_file = refs_path(refs, write=True, model=model)
    embedder = load_embedder(model, device)
    result, files = enroll_cluster(
        embedder, store_file, source, cluster, name, options=options, command=command_line(COMMAND)
    )
    unreadable = output.report_failures(result.failures)
    output.report_damaged(result.damaged)
    ref = result.reference
    if result.repeated:
        output.stderr.print(f"skipped {plural(result.repeated, 'file')} whose bytes repeat another file of the cluster")
    output.stderr.print(
        f"enrolled cluster {cluster} ({plural(len(files), 'file')}) as {ref.name!r} in {store_file} "
        f"({ref.count} images, sigma {ref.sigma:.4g})"
    )
    if json_out:
        output.write_json(
            {
                "refs": str(store_file),
                "name": ref.name,
                "cluster": cluster,
                "from": output.path_text(source),
                "added": result.n_added,
                "count": ref.count,
                "sigma": output.finite_or_none(ref.sigma),
                "repeated": result.repeated,
                "unreadable": unreadable,
            },
            command=COMMAND,
        )
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def clusters_record(found: Discovery, min_cluster_size: int, identity: dict) -> dict:
    """The clusters as one JSON record (``--json``, and clusters.json under ``--out``); ``identity``
    (model, store, working folder) and each file's sha256 let ``--enroll`` check the run."""
    return output.record(
        COMMAND,
        {
            "min_cluster_size": min_cluster_size,
            "method": found.method,
            "distance_cut": {str(k): v for k, v in found.distance_cuts.items()} or None,
            **identity,
            "n_files": found.n_files,
            "n_unknown": found.n_unknown,
            "clusters": [
                {
                    "id": c.id,
                    "regime": c.regime,
                    "size": c.size,
                    "nearest": c.nearest,
                    "distance": output.finite_or_none(c.distance),
                    "files": [output.path_text(f) for f in c.files],
                    "sha256": list(c.sha256),
                }
                for c in found.clusters
            ],
            "unclustered": [output.path_text(f) for f in found.unclustered],
            "failures": [
                {"path": output.path_text(item.path), "error": item.error, "skipped": item.skipped}
                for item in found.failures
            ],
        },
    )


def write_outputs(out: Path, found: Discovery, data: dict) -> None:
    from osma_cli.discovery_enroll import RECORD_NAME

    """One contact sheet per cluster, a map per space and clusters.json in ``out``, each written atomically."""
    from osma_cli.atomic import atomic_write_bytes
    from osma_cli.contact_sheet import write_contact_sheet
    from osma_cli.discovery_map import map_file_name, write_map

    for cluster in found.clusters:
        write_contact_sheet(out / f"cluster-{cluster.id}.png", cluster.files)
    maps = [map_file_name(view.regime) for view in found.views]
    for view, file in zip(found.views, maps):
        write_map(out / file, view)
    atomic_write_bytes(out / RECORD_NAME, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
    output.note(
        f"wrote {RECORD_NAME}, {len(found.clusters)} contact sheet(s) and {', '.join(maps) or 'no map'} "
        f"in {output.path_text(out)}"
    )


def render(found: Discovery) -> None:
    """A row per cluster, and how many unknowns fell in none."""
    routed = any(c.regime for c in found.clusters)
    columns = ["cluster", "size"] + (["regime"] if routed else []) + ["nearest known", "distance", "files"]
    rows = [
        [c.id, c.size]
        + ([c.regime or ""] if routed else [])
        + [
            c.nearest,
            f"{c.distance:.3f}",
            ", ".join(f.name for f in c.files[:EXAMPLES]) + (", ..." if c.size > EXAMPLES else ""),
        ]
        for c in found.clusters
    ]
    title = (
        f"{found.n_unknown} of {found.n_files} images unknown; {len(found.clusters)} cluster(s), "
        f"{len(found.unclustered)} unclustered"
    )
    if rows:
        output.print_table(output.simple_table(title, columns, rows))
    else:
        typer.echo(title)
