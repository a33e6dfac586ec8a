"""``osma train --method fsd-detector``: options in, the training job (``osma_cli.training.fsd_detector``),
a summary out."""

from __future__ import annotations

from pathlib import Path

import typer

from osma_cli.cli import output
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED, UsageError


def train_detector_command(
    real: Path | None,
    out: Path,
    *,
    model: Path | None,
    copies: str | None,
    held_out: float,
    acceptance: float,
    pca_dim: int,
    components: int,
    covariance: str,
    restarts: int,
    seed: int,
    device: str,
    json_out: bool,
) -> None:
    """Fit the real-photo model, write it, report on stderr (or ``--json`` on stdout); exit 3 if files were skipped."""
    from osma_cli.data.resave import parse_resaves
    from osma_cli.detector_file import default_descriptor_path
    from osma_cli.training.fsd_detector import DEFAULT_COPIES, DetectorConfig, train_detector

    if real is None:
        raise UsageError("--method fsd-detector needs REAL_DIR: a folder of real photographs (no generated images)")
    descriptor = model if model is not None else default_descriptor_path()
    if descriptor is None:
        raise UsageError(
            "no descriptor given and the shipped weights/osma-fsd.safetensors is not installed",
            hint="pass --model FSD.safetensors (made by `osma train --method fsd`)",
        )
    chosen = tuple(c.name for c in parse_resaves(copies, DEFAULT_COPIES))
    config = DetectorConfig(
        real=real,
        out=out,
        descriptor=descriptor,
        copies=chosen,
        held_out=held_out,
        acceptance=acceptance,
        pca_dim=pca_dim,
        components=components,
        covariance=covariance,
        restarts=restarts,
        seed=seed,
        device=device,
    )
    with output.progress_bar("describing real photos", None) as advance:
        result = train_detector(config, on_progress=advance)
    for path, reason in result.failures:
        output.file_problem(path, f"{reason} (skipped)")
    summary = {
        "out": str(out),
        "kind": "detector",
        "sha256": result.meta.sha256,
        "descriptor": result.meta.descriptor,
        "copies": list(chosen),
        "n_fit_photos": result.n_fit_photos,
        "n_held_out_photos": result.n_held_out_photos,
        "held_out_groups": result.held_out_groups,
        "fit": result.meta.fit,
        "threshold": result.meta.threshold,
        "acceptance": result.meta.acceptance,
        "held_out_acceptance": result.acceptance_by_copy,
        "unreadable": len(result.failures),
    }
    if json_out:
        output.write_json(summary, command="train")
    else:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in result.acceptance_by_copy.items())
        output.stdout.print(
            f"wrote {out}: detector on {result.n_fit_photos} real photos x {len(chosen)} copies, "
            f"PCA {result.meta.fit['pca_dim']}, {result.meta.fit['components']} "
            f"{result.meta.fit['covariance']} component(s) (start {result.meta.fit['seed']} of "
            f"{result.meta.fit.get('restarts', 1)}); threshold {result.meta.threshold:.2f}; "
            f"held-out real photos passed: {shares}",
            soft_wrap=True,
        )
    raise typer.Exit(EXIT_SOME_INPUTS_FAILED if result.failures else EXIT_OK)
