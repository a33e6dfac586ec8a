"""``osma calibrate`` and ``osma benchmark``: choosing tau and measuring the whole protocol."""

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
    finite_threshold,
)
from osma_cli.cli.paths import check_output_file
from osma_cli.cli.session import command_line, embed_options, load_embedder, parse_rule, refs_path
from osma_cli.defaults import DEFAULT_ACCEPTANCE, DEVICE, EMBED_BATCH_SIZE, N_CROPS, SMALL
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError

BUILTIN_SPLITS = ("split1", "split2", "split3", "split4", "split5")
"""The built-in benchmark's splits, named in ``benchmark --help`` without loading the zoo's
recipe (a test checks they are the recipe's)."""

ModelsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--model",
        help="Weights file (.safetensors), or a shipped model by name: fsd (the default), mislnet. "
        "With --perturb, repeat it to compare models in one table and one plot per figure.",
        dir_okay=False,
        show_default=False,
    ),
]
PerturbOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--perturb",
        help="Also run with the test images perturbed (references clean): jpeg:Q, resize:S, "
        "blur:SIGMA, noise:SIGMA, crop:F, or standard (the sweep of docs/robustness.md). "
        "Repeatable.",
        show_default=False,
        metavar="NAME:STRENGTH",
    ),
]

AcceptanceOpt = Annotated[
    float,
    typer.Option("--acceptance", min=0.0, max=1.0, help="Fraction of known validation images to accept (sets tau)."),
]


def calibrate(
    root: Annotated[
        Path,
        typer.Argument(
            help="Validation images: one folder per known generator; other folders count as unknown.",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ],
    acceptance: Annotated[
        float | None,
        typer.Option(
            "--acceptance",
            min=0.0,
            max=1.0,
            show_default=False,
            help=f"Fraction of known validation images to accept (sets tau). Default: {DEFAULT_ACCEPTANCE}.",
        ),
    ] = None,
    target_crr: Annotated[
        float | None,
        typer.Option(
            "--target-crr",
            min=0.0,
            max=1.0,
            show_default=False,
            help="Instead: reject this fraction of the images in folders of unknown generators.",
        ),
    ] = None,
    refs: RefsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = DEVICE,
    batch_size: BatchOpt = EMBED_BATCH_SIZE,
    workers: WorkersOpt = None,
    crops: CropsOpt = N_CROPS,
    small: SmallOpt = SMALL,
    max_pixels: MaxPixelsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set the threshold tau from validation images.

    With an embedding model tau goes into the reference store. With a classifier (POSE)
    it goes into the threshold file beside its weights (`<weights>.threshold.json`), where
    `osma attribute` finds it; --refs is not used. Reports what the new tau costs on the
    validation images (acceptance rate on known ones, CRR on unknown ones) and the tau it
    replaces.
    """
    from osma_cli.api import calibrate_classifier, calibrate_references
    from osma_cli.classifier import refuse_refs_for_classifier
    from osma_cli.cli.references import class_folders_or_usage

    if acceptance is not None and target_crr is not None:
        raise UsageError("--acceptance and --target-crr both set tau", hint="give one of them")
    acceptance = DEFAULT_ACCEPTANCE if acceptance is None else acceptance

    options = embed_options(crops, batch_size, workers, small, max_pixels)
    total = sum(len(v) for v in class_folders_or_usage(root).values())
    embedder = load_embedder(model, device)
    refuse_refs_for_classifier(embedder.meta, refs)
    with output.progress_bar("embedding", total) as advance:
        if embedder.is_classifier:
            result = calibrate_classifier(
                embedder, root, acceptance=acceptance, target_crr=target_crr, options=options, on_progress=advance
            )
        else:
            result = calibrate_references(
                embedder,
                refs_path(refs, write=True, model=model),
                root,
                acceptance=acceptance,
                target_crr=target_crr,
                options=options,
                on_progress=advance,
                command=command_line("calibrate"),
            )
    unreadable = output.report_failures(result.failures)
    if json_out:
        output.write_json(calibration_record(result, unreadable), command="calibrate")
    render_calibration(result)
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def calibration_record(result, unreadable: int) -> dict:
    """The calibration as JSON; with regimes, the lossless regime's, plus ``regimes`` (each one's)."""
    record = single_calibration_record(result, unreadable)
    if result.by_regime:
        record["regimes"] = [
            {"name": name, **single_calibration_record(each, unreadable)} for name, each in result.by_regime.items()
        ]
    return record


def single_calibration_record(result, unreadable: int) -> dict:
    cost = result.cost
    return {
        "written_to": str(result.written_to),
        "threshold": result.threshold.to_dict(),
        "old_threshold": None if result.old_threshold is None else result.old_threshold.to_dict(),
        "acceptance": output.finite_or_none(cost.acceptance),
        "n_known": cost.n_known,
        "crr": output.finite_or_none(cost.crr),
        "n_unknown": cost.n_unknown,
        "known_folders": list(result.known_folders),
        "unknown_folders": list(result.unknown_folders),
        "unreadable": unreadable,
    }


def render_calibration(result) -> None:
    """tau, what it costs on the validation images and the tau it replaces, on stderr (per regime)."""
    for name, each in (result.by_regime or {"": result}).items():
        render_single_calibration(each, f"{name}: " if name else "")


def render_single_calibration(result, regime: str) -> None:
    t, cost, old = result.threshold, result.cost, result.old_threshold
    say = output.stderr.print
    say(
        output.escape(
            f"{regime}tau = {t.value:.6g} in {output.path_text(result.written_to)} (was "
            f"{'not set' if old is None else f'{old.value:.6g}'})\n  {t.method}, "
            f"target {t.target}, {t.n_images} images"
        ),
        soft_wrap=True,
    )
    parts = (
        []
        if cost.acceptance is None
        else [f"accepts {pct(cost.acceptance)}% of the {cost.n_known} known validation images"]
    )
    if cost.crr is not None:
        parts.append(f"rejects {pct(cost.crr)}% (CRR) of the {cost.n_unknown} unknown ones")
    if parts:
        say("  " + "; ".join(parts))
    if result.unknown_folders:
        say(
            output.escape(f"  folders treated as unknown generators: {', '.join(result.unknown_folders)}"),
            soft_wrap=True,
        )


def benchmark(
    split: Annotated[
        str | None,
        typer.Argument(
            help=f"Split name: {', '.join(BUILTIN_SPLITS)} of the built-in benchmark (or of --data-root's "
            "POSE layout); not needed with --manifest.",
            show_default=False,
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="POSE benchmark download (holding dataset/split*_*/annotations).",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="TOML/JSON file naming known and unknown generators' folders.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write metrics.json, scores.csv, references.h5 and PNG plots here.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    acceptance: AcceptanceOpt = DEFAULT_ACCEPTANCE,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="Use this tau instead of calibrating.", show_default=False, callback=finite_threshold
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")] = False,
    rule: RuleOpt = None,
    keep_projection: Annotated[
        bool,
        typer.Option(
            "--keep-projection",
            help="Descriptor models: use the projection in the weights instead of fitting "
            "one on the split's own training images.",
        ),
    ] = False,
    json_out: JsonOpt = False,
    perturb: PerturbOpt = None,
    model: ModelsOpt = None,
    device: DeviceOpt = DEVICE,
    batch_size: BatchOpt = EMBED_BATCH_SIZE,
    workers: WorkersOpt = None,
    crops: CropsOpt = N_CROPS,
    small: SmallOpt = SMALL,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Run the open-set protocol on a benchmark split and report every metric.

    With --perturb, the protocol is run on the split as it is and once per perturbation of
    its test images (known and unknown; training and validation images stay clean), and
    the table has one row per model and perturbation (docs/robustness.md).
    """
    from osma_cli.cache import EmbeddingCache
    from osma_cli.evaluation.outputs import write_benchmark_outputs
    from osma_cli.evaluation.protocol import run_benchmark

    if out is not None and not out.is_dir():
        check_output_file(out, "--out")  # a new folder: its parent must exist
    models: list[Path | None] = [*model] if model else [None]  # None: the default model
    if perturb:
        from osma_cli.data.perturb import parse_perturbations

        perturbations = parse_perturbations(perturb)
    elif len(models) > 1:
        raise UsageError(
            "several --model are compared only with --perturb", hint="give one --model, or add e.g. --perturb standard"
        )
    bench_split = load_split(split, data_root, manifest)
    chosen_rule = parse_rule(rule)
    options = embed_options(crops, batch_size, workers, small, max_pixels)
    if perturb:
        settings = dict(
            options=options,
            acceptance=acceptance,
            threshold=threshold,
            rule=chosen_rule,
            refit_projection=not keep_projection,
        )
        robustness(
            bench_split,
            models,
            perturbations,
            settings,
            device=device,
            no_cache=no_cache,
            crops=crops,
            small=small,
            out=out,
            json_out=json_out,
        )
        return
    embedder = load_embedder(models[0], device)
    cache = None if no_cache else EmbeddingCache.for_embedder(embedder, n_crops=crops, small=small)
    run = run_benchmark(
        embedder,
        bench_split,
        options=options,
        cache=cache,
        acceptance=acceptance,
        threshold=threshold,
        rule=chosen_rule,
        refit_projection=not keep_projection,
        progress=output.progress_bar,
    )
    unreadable = output.report_failures(run.failures)
    if out is not None:
        write_benchmark_outputs(run, out)
    if json_out:
        output.write_json(run.to_dict(), command="benchmark")
    else:
        render_report(run)
        if out is not None:
            output.stdout.print(f"wrote metrics.json, scores.csv, references.h5 and plots to {out}")
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def robustness(
    bench_split,
    models: list,
    perturbations,
    settings: dict,
    *,
    device: str,
    no_cache: bool,
    crops: int,
    small: str,
    out: Path | None,
    json_out: bool,
) -> None:
    """``benchmark --perturb``: every model's clean and perturbed runs, one table (or JSON line) per row."""
    from osma_cli.cache import EmbeddingCache
    from osma_cli.evaluation.outputs import write_robustness_outputs
    from osma_cli.evaluation.robustness import model_labels, records, run_perturbed, unique_failures

    rows = []
    for label, path in zip(model_labels(models), models):
        embedder = load_embedder(path, device)
        cache = None if no_cache else EmbeddingCache.for_embedder(embedder, n_crops=crops, small=small)
        rows += run_perturbed(
            embedder, bench_split, perturbations, model=label, cache=cache, progress=output.progress_bar, **settings
        )
    unreadable = output.report_failures(unique_failures(rows))
    data = records(rows)
    if out is not None:
        write_robustness_outputs(rows, out)
    if json_out:
        for row in data:
            output.write_json_line(output.record("benchmark", row))
    else:
        render_robustness(bench_split, data)
        if out is not None:
            output.stdout.print(f"wrote robustness.json and robustness_*.png plots to {out}")
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if unreadable else EXIT_OK)


def render_robustness(bench_split, data: list[dict]) -> None:
    """One row per model and perturbation: accuracy, AUC, OSCR and CRR at tau, in percent."""
    several = len({row["model"] for row in data}) > 1
    routed = any(row["regime"] for row in data)
    columns = (
        (["model"] if several else [])
        + ["test images", "accuracy %", "AUC %", "OSCR %", "CRR %"]
        + (["regime"] if routed else [])
    )
    rows = [
        ([row["model"]] if several else [])
        + [row["perturbation"], pct(row["accuracy"]), pct(row["auc"]), pct(row["oscr"]), pct(row["crr"])]
        + ([row["regime"] or ""] if routed else [])
        for row in data
    ]
    output.stdout.print(
        f"{bench_split.name} ({bench_split.source}): {len(bench_split.class_names)} known "
        f"generators; references and tau from the clean training and validation images"
    )
    output.print_table(output.simple_table("robustness: the test images perturbed (CRR at tau)", columns, rows))


def load_split(split: str | None, data_root: Path | None, manifest: Path | None):
    """The split the options name: which source reads it (``evaluation.sources``), and from where."""
    from osma_cli.evaluation.sources import open_split

    if data_root is not None and manifest is not None:
        raise UsageError("pass either --data-root or --manifest, not both")
    if manifest is not None:
        return open_split("manifest", manifest)
    if split is None:
        raise UsageError("name a split, e.g. `osma benchmark split1 --data-root DIR`")
    if data_root is None:
        return open_split("builtin", None, split, progress=output.progress_bar, log=output.note)
    return open_split("pose", data_root, split)


def pct(value: float) -> str:
    """Tables report percentages, as the papers do; JSON keeps fractions."""
    return f"{100 * value:.2f}"


def render_report(run) -> None:
    """POSE Table 4's shape (accuracy; AUC and OSCR per unknown kind) plus Fang's aF1/CRR."""
    r = run.report.to_dict()
    rows = [
        [kind, str(k["n_unknown"]), pct(k["auc"]), pct(k["oscr"]), pct(k["crr"]), pct(k["af1"]), pct(k["af1_crr_auc"])]
        for kind, k in r["per_kind"].items()
    ]
    rows.append(
        ["all", str(r["n_unknown"]), pct(r["auc"]), pct(r["oscr"]), pct(r["crr"]), pct(r["af1"]), pct(r["af1_crr_auc"])]
    )
    output.stdout.print(
        f"{run.split.name} ({run.split.source}): {len(run.split.class_names)} known "
        f"generators, {r['n_known']} known and {r['n_unknown']} unknown test images"
    )
    output.stdout.print(f"closed-set accuracy: {pct(r['closed_set_accuracy'])}%")
    output.stdout.print(f"threshold tau: {run.threshold.value:.4g} on the {run.score_name} ({run.threshold.method})")
    output.print_table(
        output.simple_table(
            "open-set figures by unknown kind (aF1 and CRR at tau)",
            ["unknown kind", "images", "AUC %", "OSCR %", "CRR %", "aF1 %", "aF1-CRR area %"],
            rows,
        )
    )
