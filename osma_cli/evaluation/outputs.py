"""The files a benchmark writes (``osma benchmark --out``): what a run leaves to look at later.

- ``write_benchmark_outputs``: ``metrics.json`` (the command's JSON record), ``scores.csv``
  (one row per test image, its verdict from ``attribution.is_accepted``), ``references.h5``
  (the split's reference store; none for a classifier) and the plots (``plots.py``);
- ``write_robustness_outputs``: ``robustness.json`` (every row's record) and one plot per figure.

The core writes them, so that a pipeline gets the same files as the command.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from osma_cli.atomic import atomic_write_bytes
from osma_cli.attribution import is_accepted
from osma_cli.evaluation.protocol import BenchmarkRun
from osma_cli.evaluation.robustness import RobustnessRow, records
from osma_cli.records import CsvWriter, record

COMMAND = "benchmark"
SCORE_FIELDS = ("path", "label", "true_class", "unknown_kind", "candidate", "score", "accepted")
"""The columns of ``scores.csv``."""


def write_benchmark_outputs(run: BenchmarkRun, out: Path) -> None:
    """metrics.json, per-image scores.csv, the split's references and the plots, under ``out``."""
    from osma_cli.evaluation.plots import write_benchmark_plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(record(COMMAND, run.to_dict()), indent=2) + "\n")
    names = list(run.split.class_names)
    accepted = is_accepted(run.scores, run.threshold.value)
    with open(out / "scores.csv", "w", newline="", encoding="utf-8") as handle:
        writer = CsvWriter(handle, SCORE_FIELDS)
        for im, cand, score, ok in zip(run.test_images, run.candidates, run.scores, accepted):
            writer.write(
                {
                    "path": str(im.path),
                    "label": im.label,
                    "true_class": names[im.label] if im.label >= 0 else "unknown",
                    "unknown_kind": im.kind,
                    "candidate": names[cand],
                    "score": f"{score:.6g}",
                    "accepted": int(ok),
                }
            )
    if run.store is not None:  # a classifier's run has no references
        run.store.save(out / "references.h5")
    write_benchmark_plots(
        out,
        y_true=run.y_true,
        candidates=run.candidates,
        scores=run.scores,
        n_classes=len(names),
        tau=run.threshold.value,
        unknown_kind=run.unknown_kind if any(run.unknown_kind) else None,
    )


def write_robustness_outputs(rows: Sequence[RobustnessRow], out: Path) -> None:
    """robustness.json (every row's JSON record) and one plot per figure against strength."""
    from osma_cli.evaluation.plots import write_robustness_plots

    out.mkdir(parents=True, exist_ok=True)
    data = [record(COMMAND, row) for row in records(rows)]
    atomic_write_bytes(out / "robustness.json", (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    write_robustness_plots(out, rows)
