"""``osma build``, ``osma enroll`` and ``osma refs``: the reference store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from osma_cli.cli import output
from osma_cli.cli.options import (BatchOpt, CropsOpt, DeviceOpt, JsonOpt, MaxPixelsOpt, ModelOpt,
                                  RefsOpt, RuleOpt, SmallOpt, WorkersOpt)
from osma_cli.cli.paths import check_output_file, list_image_inputs
from osma_cli.cli.session import embed_options, load_embedder, parse_rule, refs_path
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError


def class_folders_or_usage(root: Path) -> dict[str, list[Path]]:
    """The class folders under ``root``; none, or no images in any, is a usage error."""
    from osma_cli.data import class_folders
    from osma_cli.errors import DataError

    try:
        folders = class_folders(root)
    except DataError as exc:
        if "no class folders" not in exc.message:
            raise
        raise UsageError(exc.message, hint=exc.hint) from None
    if not any(folders.values()):
        raise UsageError(f"no image files found in the class folders of {output.path_text(root)}",
                         hint="put the images of each class in a sub-folder named after it")
    return folders


def build(
    root: Annotated[Path, typer.Argument(help="Folder with one sub-folder of images per generator.",
                                         exists=True, file_okay=False, show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Store to write. Default: $OSMA_HOME/references.h5.", dir_okay=False,
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing store.")] = False,
    rule: RuleOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    crops: CropsOpt = 1,
    small: SmallOpt = "pad",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Build a reference store from folders, one per generator (searched recursively).

    Sets a provisional threshold from leave-one-out scores of the same images (95% of them
    accepted); calibrate on held-out images for a threshold you can report.
    """
    from osma_cli.api import build_references
    from osma_cli.cache import EmbeddingCache

    check_output_file(out, "--out")
    target = out if out is not None else refs_path(None)
    if target.exists() and not force:
        raise UsageError(f"{target} exists", hint="pass --force to replace it, or --out another file")
    chosen_rule = parse_rule(rule)
    options = embed_options(crops, batch_size, workers, small, max_pixels)
    total = sum(len(f) for f in class_folders_or_usage(root).values())
    embedder = load_embedder(model, device)
    with output.progress_bar("embedding", total) as advance:
        result = build_references(embedder, root, options=options, rule=chosen_rule, on_progress=advance,
                                  cache=EmbeddingCache.for_embedder(embedder, n_crops=crops, small=small))
    unreadable = output.report_failures(result.failures)
    result.store.save(target)
    render_store_summary(result.store, target)
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def enroll(
    dirs: Annotated[list[Path], typer.Argument(help="Images (files or folders) of the new generator.",
                                               exists=True, show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Name of the generator.", show_default=False)],
    update: Annotated[bool, typer.Option("--update", help="Add the images to an existing generator.")] = False,
    refs: RefsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    crops: CropsOpt = 1,
    small: SmallOpt = "pad",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Enroll a new generator from its images, without retraining anything."""
    from osma_cli.api import enroll_generator

    files, unlisted = list_image_inputs(dirs)
    for folder, reason in unlisted:
        output.file_problem(folder, f"{reason} (its images are not enrolled)")
    if not files:
        raise UsageError("no image files found in " + ", ".join(output.path_text(d) for d in dirs))
    options = embed_options(crops, batch_size, workers, small, max_pixels)
    embedder = load_embedder(model, device)
    store_file = refs_path(refs)
    with output.progress_bar("embedding", len(files)) as advance:
        result = enroll_generator(embedder, store_file, name, files, update=update,
                                  options=options, on_progress=advance)
    unreadable = output.report_failures(result.failures) + len(unlisted)
    ref = result.reference
    verb = "added" if update else "enrolled"
    output.stderr.print(f"{verb} {result.n_added} images as {ref.name!r} in {store_file} "
                        f"({ref.count} images, sigma {ref.sigma:.4g})")
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def store_rows(store) -> list[list[str]]:
    return [[g.name, str(g.count), f"{g.sigma:.4g}", g.updated] for g in store.generators.values()]


def render_store_summary(store, path: Path) -> None:
    tau = "not set" if store.threshold is None else f"{store.threshold.value:.4g} ({store.threshold.method})"
    output.print_table(output.simple_table(
        f"{path}: {len(store)} generators, rule {store.rule.name}, threshold {tau}",
        ["generator", "images", "sigma", "updated"], store_rows(store)))


def store_summary(store, path: Path) -> dict:
    return {"path": str(path), "architecture": store.architecture,
            "weights_sha256": store.weights_sha256, "embedding_dim": store.embedding_dim,
            "rule": store.rule.spec(), "score": store.rule.score_name, "score_meaning": store.rule.meaning,
            "threshold": None if store.threshold is None else store.threshold.to_dict(),
            "created": store.created, "modified": store.modified,
            "generators": [{"name": g.name, "count": g.count, "sigma": g.sigma,
                            "created": g.created, "updated": g.updated}
                           for g in store.generators.values()]}


def refs_list(refs: RefsOpt = None, json_out: JsonOpt = False) -> None:
    """List the known generators and the threshold."""
    from osma_cli.references import ReferenceStore

    path = refs_path(refs)
    store = ReferenceStore.load(path)
    if json_out:
        output.write_json(store_summary(store, path))
    else:
        render_store_summary(store, path)


def refs_show(name: Annotated[str, typer.Argument(help="Generator name.", show_default=False)],
              refs: RefsOpt = None, json_out: JsonOpt = False) -> None:
    """Show one generator's reference."""
    from osma_cli.references import ReferenceStore

    path = refs_path(refs)
    ref = ReferenceStore.load(path).get(name)
    info = {"name": ref.name, "count": ref.count, "sigma": ref.sigma,
            "centroid_norm": float((ref.centroid ** 2).sum() ** 0.5),
            "created": ref.created, "updated": ref.updated}
    if json_out:
        output.write_json(info)
    else:
        output.print_table(output.simple_table(f"{name} in {path}", ["field", "value"],
                                                [[k, v] for k, v in info.items()]))


def refs_remove(name: Annotated[str, typer.Argument(help="Generator name.", show_default=False)],
                refs: RefsOpt = None) -> None:
    """Remove a generator from the store."""
    from osma_cli.references import open_store_for_update

    path = refs_path(refs)
    with open_store_for_update(path) as store:
        removed = store.remove(name)
    output.stderr.print(f"removed {removed.name!r} ({removed.count} images) from {path}")
