"""``osma zoo``: the built-in benchmark's generators (train, list) and images (build)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from osma_cli.cli import output
from osma_cli.cli.boundary import handle_errors
from osma_cli.cli.options import Command, Group, JsonOpt
from osma_cli.errors import EXIT_ERROR

zoo_app = typer.Typer(
    help="The built-in benchmark: a zoo of small trained generators (train, list, build).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    cls=Group,
)


def _command(name: str) -> Callable[[Callable], Callable]:
    """Register on ``zoo_app`` behind the CLI's error boundary (``boundary.handle_errors``)."""

    def decorate(func: Callable) -> Callable:
        zoo_app.command(name, cls=Command)(handle_errors(func))
        return func

    return decorate


WeightsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Folder of generator weights. Default: the shipped weights/zoo/.",
        file_okay=False,
        show_default=False,
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Where to build the benchmark. Default: $OSMA_HOME/benchmarks/zoo.",
        file_okay=False,
        show_default=False,
    ),
]


@_command("train")
def train(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for the weights. Default: the shipped weights/zoo/ (for osma's developers).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Train this generator only (repeatable).", show_default=False)
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", min=1, help="Training steps per generator. Default: the recipe's.", show_default=False),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Generators trained at once, one process and one thread each. Default: one per CPU, at most 4.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain generators that already have weights in --out.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train the zoo's generators that have no weights in --out yet (CPU, fixed seeds)."""
    from osma_cli.runtime import cpu_count
    from osma_cli.zoo.recipe import default_recipe
    from osma_cli.zoo.store import shipped_zoo_dir
    from osma_cli.zoo.train import generators_to_train, train_zoo

    folder = out if out is not None else shipped_zoo_dir()
    recipe = default_recipe()
    workers = workers if workers is not None else max(1, min(cpu_count(), 4))
    state: dict = {}

    def open_bar(description: str, total: int) -> None:
        state["bar"] = output.progress_bar(description, total)
        state["advance"] = state["bar"].__enter__()

    def close_bar() -> None:
        if "bar" in state:
            state.pop("bar").__exit__(None, None, None)

    def on_start(spec, n_steps: int) -> None:
        if workers == 1:
            open_bar(f"training {spec.name}", n_steps)
        elif "bar" not in state:
            open_bar(f"training generators ({workers} at a time)", state["n"])

    def on_step(step: int, l1: float) -> None:
        state["advance"](1)

    def on_done(result) -> None:
        if workers == 1:
            close_bar()
        else:
            state["advance"](1)
        r = result.record
        psnr = r.metrics.get("psnr_heldout")
        (output.stderr if json_out else output.stdout).print(
            f"{r.name}: {r.training['steps']} steps, PSNR {psnr if psnr is not None else '-'} dB on "
            f"held-out photos, {r.train_seconds:.0f} s -> {output.escape(str(result.path))}"
        )

    state["n"] = len(generators_to_train(recipe, folder, only=only or (), force=force))
    try:
        results = train_zoo(
            recipe,
            folder,
            only=only or (),
            steps=steps,
            force=force,
            workers=workers,
            on_start=on_start,
            on_step=on_step,
            on_done=on_done,
        )
    finally:
        close_bar()
    if json_out:
        output.write_json(
            {
                "weights": str(folder),
                "trained": [
                    {
                        "name": r.record.name,
                        "path": str(r.path),
                        "steps": r.record.training.get("steps"),
                        "psnr_heldout": r.record.metrics.get("psnr_heldout"),
                        "seconds": r.record.train_seconds,
                    }
                    for r in results
                ],
            },
            command="zoo train",
        )
    if not results:
        (output.stderr if json_out else output.stdout).print(
            f"nothing to train: every generator asked for has weights in {output.escape(str(folder))} "
            f"(--force retrains)"
        )


@_command("build")
def build(
    root: RootOpt = None,
    weights: WeightsDirOpt = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check a finished build's files against its manifest and osma's reference digests; build nothing.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete the previous build and make everything again.")
    ] = False,
    write_digests: Annotated[
        bool,
        typer.Option(
            "--write-digests", hidden=True, help="Write this build's digests as the reference, beside the weights."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Materialise the built-in benchmark (images and 5 POSE-layout splits); resumable."""
    from osma_cli.zoo import materialise

    if verify:
        verified = materialise.verify_benchmark(root, weights_dir=weights, progress=output.progress_bar)
        _render_verify(verified, json_out)
        if not verified.ok or verified.reference.get("status") == "mismatch":
            raise typer.Exit(EXIT_ERROR)
        return
    plan = materialise.plan_build(weights_dir=weights)
    report = materialise.build_benchmark(root, plan=plan, force=force, progress=output.progress_bar, log=output.note)
    if write_digests:
        manifest = materialise.read_manifest(report.root)
        if manifest is None:  # build_benchmark writes it last; gone only if removed meanwhile
            raise materialise.BenchmarkError(
                f"{report.root} holds no finished build's manifest", hint="build it again: `osma zoo build`"
            )
        target = plan.weights_dir / materialise.DIGESTS
        materialise.write_reference(target, manifest)
        output.note(f"wrote the reference digests to {target}")
    if json_out:
        output.write_json(
            {
                "root": str(report.root),
                "fingerprint": report.fingerprint,
                "images": report.n_images,
                "written": report.n_written,
                "kept": report.n_kept,
                "seconds": report.seconds,
                "bytes": report.bytes,
                "reference": report.reference,
            },
            command="zoo build",
        )
    else:
        output.stdout.print(
            f"built-in benchmark in {report.root}: {report.n_images} images "
            f"({report.n_written} made, {report.n_kept} kept), {report.bytes / 2**20:.0f} MiB, "
            f"{report.seconds:.0f} s\n  use it: osma benchmark split1 --data-root {report.root}"
        )
    _warn_reference(report.reference)


def _warn_reference(reference: dict) -> None:
    status = reference.get("status")
    if status == "mismatch":
        output.warn(
            f"{reference['n_differ']} files differ from osma's reference build "
            f"(first: {output.escape(reference['first'][0])}); this machine's arithmetic "
            f"or image libraries differ from the reference machine's. The benchmark is "
            f"usable; its figures may differ slightly from published ones."
        )
    elif status == "other-build":
        output.warn(
            "the reference digests are for another build (the generator weights or "
            "photos differ from those osma ships); nothing was compared"
        )


def _render_verify(report, json_out: bool) -> None:
    if json_out:
        output.write_json(
            {
                "root": str(report.root),
                "checked": report.n_checked,
                "missing": report.missing,
                "corrupt": report.corrupt,
                "stale": report.stale,
                "reference": report.reference,
                "ok": report.ok,
            },
            command="zoo build --verify",
        )
        return
    if report.ok:
        output.stdout.print(f"{report.n_checked} files checked in {report.root}: all intact")
    for label, paths in (("missing", report.missing), ("damaged", report.corrupt)):
        if paths:
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            output.error(f"{len(paths)} files {label}: {shown}")
    if not report.ok:
        output.stderr.print("  repair with `osma zoo build` (remakes what is missing or damaged)")
    if report.stale:
        output.warn("this build is not of the installed zoo (weights or photos changed): rebuild with `osma zoo build`")
    if report.reference.get("status") == "match":
        output.stdout.print("identical to osma's reference build")
    _warn_reference(report.reference)


@_command("list")
def list_generators(weights: WeightsDirOpt = None, json_out: JsonOpt = False) -> None:
    """List the zoo's generators: family, training set, seed, steps, PSNR, role per split."""
    from osma_cli.zoo.recipe import default_recipe
    from osma_cli.zoo.splits import all_roles
    from osma_cli.zoo.store import list_records, shipped_zoo_dir

    recipe = default_recipe()
    folder = weights if weights is not None else shipped_zoo_dir()
    records = list_records(folder)
    roles = all_roles(recipe)
    rows: list[dict[str, Any]] = []
    for spec in recipe.generators:
        record = records.get(spec.name)
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "dataset": spec.dataset,
                "seed": spec.seed,
                "steps": record.training.get("steps") if record else None,
                "psnr_heldout": record.metrics.get("psnr_heldout") if record else None,
                "params": record.params if record else None,
                "splits": {r.name: r.role(spec.name) for r in roles},
            }
        )
    if json_out:
        output.write_json({"weights": str(folder), "generators": rows}, command="zoo list")
        return
    letters = {"known": "K", "seed": "s", "arch": "a", "dataset": "d"}
    table_rows = [
        [
            r["name"],
            r["family"],
            r["dataset"],
            r["steps"] if r["steps"] is not None else "-",
            f"{r['psnr_heldout']:.2f}" if r["psnr_heldout"] is not None else "-",
            " ".join(letters[r["splits"][x.name]] for x in roles),
        ]
        for r in rows
    ]
    output.print_table(
        output.simple_table(
            f"{len(rows)} generators, {sum(r['steps'] is not None for r in rows)} with weights in {folder}",
            ["generator", "family", "set", "steps", "PSNR", "splits"],
            table_rows,
        )
    )
    output.stdout.print(
        f"set: training set. PSNR: dB on held-out photos. splits 1-{len(roles)}: "
        f"K known (real is known in all); unknown by unseen s seed, "
        f"a architecture, d training set."
    )
