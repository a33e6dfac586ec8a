"""``osma build``, ``osma enroll`` and ``osma refs``: the reference store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    RuleOpt,
    SmallOpt,
    WorkersOpt,
)
from osma_cli.cli.paths import check_output_file, list_image_inputs
from osma_cli.cli.session import command_line, embed_options, load_embedder, parse_rule, refs_path
from osma_cli.errors import EXIT_ERROR, EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError

STORE_SUFFIXES = (".h5", ".hdf5")


def check_generator_name(name: str) -> None:
    """A generator's name is a label, and also a folder name (``calibrate``, ``benchmark``):
    no path separators, no control characters, not empty."""
    import unicodedata

    if not name.strip():
        raise UsageError("--name is empty")
    bad = [c for c in name if c in "/\\" or unicodedata.category(c) in ("Cc", "Cf")]
    if bad:
        raise UsageError(
            f"--name {name!r} holds {', '.join(sorted(set(map(repr, bad))))}",
            hint="a generator's name is a folder name: no '/', '\\' or control characters",
        )


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
        raise UsageError(
            f"no image files found in the class folders of {output.path_text(root)}",
            hint="put the images of each class in a sub-folder named after it",
        )
    return folders


def build(
    root: Annotated[
        Path,
        typer.Argument(
            help="Folder with one sub-folder of images per generator.", exists=True, file_okay=False, show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Store to write. Default: $OSMA_HOME/references.h5.", dir_okay=False, show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing store.")] = False,
    rule: RuleOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 32,
    workers: WorkersOpt = None,
    crops: CropsOpt = 1,
    small: SmallOpt = "pad",
    max_pixels: MaxPixelsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build a reference store from folders, one per generator (searched recursively).

    Sets a provisional threshold from leave-one-out scores of the same images (95% of them
    accepted); calibrate on held-out images for a threshold you can report.
    """
    from osma_cli.api import build_references
    from osma_cli.cache import EmbeddingCache
    from osma_cli.home import refuse_shipped
    from osma_cli.references import replace_store

    check_output_file(out, "--out")
    if out is not None and out.suffix.lower() not in STORE_SUFFIXES:
        raise UsageError(
            f"--out {output.path_text(out)}: a reference store is an HDF5 file ending in .h5",
            hint=f"e.g. --out {output.path_text(out.with_suffix('.h5'))}",
        )
    target = out if out is not None else refs_path(None, write=True, model=model)
    refuse_shipped(target)
    if target.exists() and not force:
        raise UsageError(f"{target} exists", hint="pass --force to replace it, or --out another file")
    chosen_rule = parse_rule(rule)
    options = embed_options(crops, batch_size, workers, small, max_pixels)
    total = sum(len(f) for f in class_folders_or_usage(root).values())
    embedder = load_embedder(model, device)
    with output.progress_bar("embedding", total) as advance:
        result = build_references(
            embedder,
            root,
            options=options,
            rule=chosen_rule,
            on_progress=advance,
            cache=EmbeddingCache.for_embedder(embedder, n_crops=crops, small=small),
            command=command_line("build"),
        )
    unreadable = output.report_failures(result.failures)
    output.report_damaged(result.damaged)
    if result.repeated:
        output.stderr.print(
            f"skipped {plural(result.repeated, 'file')} whose bytes repeat another file of "
            "the same generator (each image counts once)"
        )
    replace_store(result.store, target)
    if json_out:
        output.write_json(
            {**store_summary(result.store, target), "unreadable": unreadable, "repeated": result.repeated},
            command="build",
        )
    else:
        render_store_summary(result.store, target)
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def enroll(
    dirs: Annotated[
        list[Path],
        typer.Argument(help="Images (files or folders) of the new generator.", exists=True, show_default=False),
    ],
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
    json_out: JsonOpt = False,
) -> None:
    """Enroll a new generator from its images, without retraining anything."""
    from osma_cli.api import enroll_generator

    check_generator_name(name)
    files, unlisted = list_image_inputs(dirs)
    for folder, reason in unlisted:
        output.file_problem(folder, f"{reason} (its images are not enrolled)")
    if not files:
        raise UsageError("no image files found in " + ", ".join(output.path_text(d) for d in dirs))
    options = embed_options(crops, batch_size, workers, small, max_pixels)
    store_file = refs_path(refs, write=True, model=model)
    embedder = load_embedder(model, device)
    with output.progress_bar("embedding", len(files)) as advance:
        result = enroll_generator(
            embedder,
            store_file,
            name,
            files,
            update=update,
            options=options,
            on_progress=advance,
            command=command_line("enroll"),
        )
    unreadable = output.report_failures(result.failures) + len(unlisted)
    output.report_damaged(result.damaged)
    ref = result.reference
    if result.already:
        output.stderr.print(f"skipped {plural(result.already, 'image')} already enrolled in {ref.name}")
    if result.repeated:
        output.stderr.print(f"skipped {plural(result.repeated, 'file')} whose bytes repeat another given file")
    verb = "added" if update else "enrolled"
    output.stderr.print(
        f"{verb} {result.n_added} images as {ref.name!r} in {store_file} ({ref.count} images, sigma {ref.sigma:.4g})"
    )
    if json_out:
        output.write_json(
            {
                "refs": str(store_file),
                "name": ref.name,
                "update": update,
                "added": result.n_added,
                "count": ref.count,
                "sigma": output.finite_or_none(ref.sigma),
                "already": result.already,
                "repeated": result.repeated,
                "unreadable": unreadable,
            },
            command="enroll",
        )
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def store_rows(store) -> list[list[str]]:
    return [[g.name, str(g.count), f"{g.sigma:.4g}", g.updated] for g in store.generators.values()]


def threshold_text(threshold) -> str:
    return "not set" if threshold is None else f"{threshold.value:.4g} ({threshold.method})"


def render_store_summary(store, path: Path) -> None:
    """The generators (with regimes: the lossless regime's counts) and each regime's threshold."""
    from osma_cli.regime_store import RegimeStores

    if isinstance(store, RegimeStores):
        primary = store.primary
        taus = "; ".join(f"{name} {threshold_text(single.threshold)}" for name, single in store.stores.items())
        title = (
            f"{path}: {len(primary)} generators, rule {primary.rule.name}, {len(store.stores)} "
            f"compression regimes, thresholds: {taus}"
        )
    else:
        primary = store
        title = f"{path}: {len(store)} generators, rule {store.rule.name}, threshold {threshold_text(store.threshold)}"
    output.print_table(output.simple_table(title, ["generator", "images", "sigma", "updated"], store_rows(primary)))


def store_summary(store, path: Path) -> dict:
    """The store as a JSON object; with regimes, the lossless regime's, plus ``regimes``."""
    from osma_cli.regime_store import RegimeStores

    if isinstance(store, RegimeStores):
        return {
            **single_store_summary(store.primary, path),
            "regimes": [
                {"name": name, "threshold": None if single.threshold is None else single.threshold.to_dict()}
                for name, single in store.stores.items()
            ],
        }
    return single_store_summary(store, path)


def single_store_summary(store, path: Path) -> dict:
    return {
        "path": str(path),
        "architecture": store.architecture,
        "weights_sha256": store.weights_sha256,
        "embedding_dim": store.embedding_dim,
        "rule": store.rule.spec(),
        "score": store.rule.score_name,
        "score_meaning": store.rule.meaning,
        "threshold": None if store.threshold is None else store.threshold.to_dict(),
        "created": store.created,
        "modified": store.modified,
        "generators": [
            {"name": g.name, "count": g.count, "sigma": g.sigma, "created": g.created, "updated": g.updated}
            for g in store.generators.values()
        ],
    }


StoreModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Without --refs: the user store of this shipped model (fsd, the default, or mislnet).",
        dir_okay=False,
        show_default=False,
    ),
]


def refs_list(refs: RefsOpt = None, json_out: JsonOpt = False, model: StoreModelOpt = None) -> None:
    """List the known generators and the threshold (--json adds the store's whole history)."""
    from osma_cli.regime_store import each_store, load_store

    path = refs_path(refs, write=False, model=model)
    store = load_store(path)
    primary = each_store(store)[0]
    if json_out:
        output.write_json(
            {
                **store_summary(store, path),
                "provenance_note": provenance_note(primary),
                "history": [{"index": i, **e} for i, e in enumerate(primary.history)],
            },
            command="refs list",
        )
    else:
        render_store_summary(store, path)


def provenance_note(store, ref=None) -> str | None:
    """What the provenance does not cover: a store from before it, or images enrolled before."""
    from osma_cli.references import NO_PROVENANCE_NOTE

    if store.provenance_since is None:
        return NO_PROVENANCE_NOTE
    if ref is not None and ref.unrecorded:
        return (
            f"{ref.unrecorded} of its {ref.count} images were enrolled before provenance was recorded "
            f"(since {store.provenance_since}, osma {store.provenance_since_version}): no hash or history"
        )
    return None


def generator_record(store, ref) -> dict:
    """One generator, its images' hashes and the history about it (``refs show --json``)."""
    return {
        "name": ref.name,
        "count": ref.count,
        "sigma": ref.sigma,
        "centroid_norm": float((ref.centroid**2).sum() ** 0.5),
        "rule": store.rule.spec(),
        "score": store.rule.score_name,
        "score_meaning": store.rule.meaning,
        "statistics": sorted(store.rule.requires),
        "created": ref.created,
        "updated": ref.updated,
        "images_recorded": len(ref.image_sha256),
        "images_unrecorded": ref.unrecorded,
        "provenance_since": store.provenance_since,
        "provenance_note": provenance_note(store, ref),
        "history": [{"index": i, **e} for i, e in store.events_for(ref.name)],
        "images": [{"sha256": h, "event": e} for h, e in zip(ref.image_sha256, ref.image_event)],
    }


def history_rows(events) -> list[list[str]]:
    rows = []
    for e in events:
        if e["event"] == "calibrate":
            old = "not set" if e.get("old_tau") is None else f"{e['old_tau']:.4g}"
            what = f"tau {old} -> {e['new_tau']:.4g} ({e.get('method', '')})"
        elif e["event"] == "remove":
            what = f"removed {e['generator']} ({e.get('n_images')} images)"
        else:
            what = f"{e.get('n_images')} images -> {e.get('count')}"
        rows.append([str(e["index"]), e["time"], e["event"], what, e.get("command") or ""])
    return rows


def refs_show(
    name: Annotated[str, typer.Argument(help="Generator name.", show_default=False)],
    refs: RefsOpt = None,
    json_out: JsonOpt = False,
    model: StoreModelOpt = None,
) -> None:
    """Show one generator's reference and its provenance: the history of its enrolments
    (when, by which command, how many images) and of the store's thresholds; --json adds
    the sha256 of every image enrolled into it."""
    from osma_cli.regime_store import each_store, load_store

    path = refs_path(refs, write=False, model=model)
    store = each_store(load_store(path))[0]
    info = generator_record(store, store.get(name))
    if json_out:
        output.write_json(info, command="refs show")
        return
    fields = [
        [k, str(info[k])]
        for k in (
            "name",
            "count",
            "sigma",
            "centroid_norm",
            "created",
            "updated",
            "images_recorded",
            "images_unrecorded",
        )
    ]
    fields.insert(1, ["rule", f"{store.rule.name} {store.rule.params() or ''}".strip()])
    fields.insert(2, ["score", store.rule.meaning])
    output.print_table(output.simple_table(f"{name} in {path}", ["field", "value"], fields))
    if info["provenance_note"]:
        output.stderr.print(output.escape(info["provenance_note"]), soft_wrap=True)
    if info["history"]:
        output.print_table(
            output.simple_table(
                f"history of {name}", ["#", "time", "event", "what", "command"], history_rows(info["history"])
            )
        )


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")]


def stdin_is_terminal() -> bool:
    import sys

    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def refs_remove(
    name: Annotated[str, typer.Argument(help="Generator name.", show_default=False)],
    refs: RefsOpt = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
    model: StoreModelOpt = None,
) -> None:
    """Remove a generator from the store, after asking (--yes: without).

    The removal is recorded in the store's history. A generator whose values are
    inconsistent (a store that refuses to load) can be removed this way.
    """
    from osma_cli.references import open_store_for_update
    from osma_cli.regime_store import load_store

    path = refs_path(refs, write=True, model=model)
    ref = load_store(path, allow_invalid=[name]).get(name)
    if not yes:
        if not stdin_is_terminal():
            raise UsageError(
                f"not removing {name!r} ({ref.count} images) from {path} without confirmation",
                hint="pass --yes to remove it",
            )
        if not typer.confirm(f"remove {name!r} ({ref.count} images) from {path}?", default=False, err=True):
            output.stderr.print(f"kept {name!r}; nothing was removed")
            raise typer.Exit(EXIT_ERROR)
    with open_store_for_update(path, allow_invalid=[name]) as store:
        removed = store.remove(name, command=command_line("refs remove"))
    output.stderr.print(
        f"removed {removed.name!r} ({removed.count} images) from {path}; the removal is recorded in its history"
    )
    if json_out:
        output.write_json(
            {"refs": str(path), "name": removed.name, "count": removed.count, "remaining": len(store)},
            command="refs remove",
        )
