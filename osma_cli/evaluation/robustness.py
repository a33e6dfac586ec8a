"""How verdicts hold up when the test images are perturbed and the references stay clean.

``run_perturbed`` runs the open-set protocol (``run_benchmark``) once on the split as it is
(``clean``) and once per perturbation on a copy whose test images, known and unknown, are
perturbed files (``osma_cli.evaluation.perturbed``); training and validation images are
the same files in every run, so the references, the projection refitted on them and tau
are the clean run's (embedded once, served by the embedding cache afterwards). What
changes is only what a user's re-shared, resized or blurred image would change: the test
images. docs/robustness.md gives the measured figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from osma_cli.cache import EmbeddingCache
from osma_cli.calibration import DEFAULT_ACCEPTANCE
from osma_cli.data.perturb import Perturbation
from osma_cli.embed import EmbeddedImage, Embedder, EmbedOptions
from osma_cli.evaluation.perturbed import perturbed_split
from osma_cli.evaluation.protocol import BenchmarkRun, ProgressFactory, no_progress, run_benchmark
from osma_cli.evaluation.sources import BenchmarkSplit
from osma_cli.rules import OpenSetRule

CLEAN = "clean"
METRICS: dict[str, str] = {"accuracy": "closed_set_accuracy", "auc": "auc", "oscr": "oscr", "crr": "crr"}
"""The figures of a robustness row (name -> ``OpenSetReport`` field); CRR is at tau."""


@dataclass(frozen=True)
class RobustnessRow:
    """One model's run on the clean split or on one perturbation of its test images."""

    model: str
    perturbation: Perturbation | None
    """None: the clean split."""
    run: BenchmarkRun
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return CLEAN if self.perturbation is None else self.perturbation.spec

    def metrics(self) -> dict[str, float]:
        return {name: float(getattr(self.run.report, field)) for name, field in METRICS.items()}

    def to_dict(self, clean: RobustnessRow | None = None) -> dict:
        """The row as JSON; ``kept``: each figure as a fraction of the clean run's (null when that is 0)."""
        p = self.perturbation
        figures = self.metrics()
        base = clean.metrics() if clean is not None else None
        report = self.run.report
        return {
            "model": self.model,
            "split": self.run.split.name,
            "perturbation": self.label,
            "name": CLEAN if p is None else p.name,
            "strength": None if p is None else p.strength,
            **figures,
            "kept": None if base is None else {k: (v / base[k] if base[k] else None) for k, v in figures.items()},
            "threshold": self.run.threshold.value,
            "regime": self.run.regime,
            "n_known": report.n_known,
            "n_unknown": report.n_unknown,
            "unreadable_files": len(self.run.failures),
            "seconds": round(self.seconds, 3),
        }


def run_perturbed(
    embedder: Embedder,
    split: BenchmarkSplit,
    perturbations: Sequence[Perturbation],
    *,
    model: str,
    options: EmbedOptions = EmbedOptions(),
    cache: EmbeddingCache | None = None,
    acceptance: float = DEFAULT_ACCEPTANCE,
    threshold: float | None = None,
    rule: OpenSetRule | None = None,
    refit_projection: bool = True,
    progress: ProgressFactory = no_progress,
    root: Path | None = None,
) -> list[RobustnessRow]:
    """The clean run, then one run per perturbation of the test images; ``model`` names the rows.

    ``root`` is where perturbed files are kept (default ``$OSMA_HOME/cache/perturbed/v1``).
    Settings are ``run_benchmark``'s, the same for every run.
    """
    settings = dict(
        options=options,
        cache=cache,
        acceptance=acceptance,
        threshold=threshold,
        rule=rule,
        refit_projection=refit_projection,
        progress=progress,
    )
    rows = [_timed(model, None, embedder, split, settings)]
    limit = {} if options.max_pixels is None else {"max_pixels": options.max_pixels}
    for perturbation in perturbations:
        with progress(f"perturbing test images: {perturbation.spec}", len(split.test)) as advance:
            changed = perturbed_split(split, perturbation, root=root, on_progress=advance, **limit)
        rows.append(_timed(model, perturbation, embedder, changed, settings))
    return rows


def _timed(
    model: str, perturbation: Perturbation | None, embedder: Embedder, split: BenchmarkSplit, settings: dict
) -> RobustnessRow:
    start = time.perf_counter()
    run = run_benchmark(embedder, split, **settings)
    return RobustnessRow(model=model, perturbation=perturbation, run=run, seconds=time.perf_counter() - start)


def clean_row(rows: Sequence[RobustnessRow], model: str) -> RobustnessRow | None:
    return next((r for r in rows if r.model == model and r.perturbation is None), None)


def records(rows: Sequence[RobustnessRow]) -> list[dict]:
    """Every row as JSON, each with its figures kept relative to its model's clean run."""
    return [row.to_dict(clean_row(rows, row.model)) for row in rows]


def unique_failures(rows: Sequence[RobustnessRow]) -> list[EmbeddedImage]:
    """Unreadable files over every run, each once (training files fail in every run alike)."""
    seen: dict[str, EmbeddedImage] = {}
    for row in rows:
        for failure in row.run.failures:
            seen.setdefault(str(failure.path), failure)
    return list(seen.values())


def model_labels(paths: Sequence[Path | None]) -> list[str]:
    """A short name per model for tables and legends: the file's stem, its path where stems repeat."""
    stems = ["default" if p is None else Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return ["default" if p is None else str(p) for p in paths]
