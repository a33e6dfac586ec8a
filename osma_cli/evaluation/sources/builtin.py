"""Benchmark source ``builtin``: the zoo osma ships (``osma_cli.zoo``), in the POSE layout.

It is built under ``$OSMA_HOME/benchmarks/zoo`` on first use (a few minutes, said through
``log``), then read as any POSE layout (``pose_layout.load_pose_split``).
"""

from __future__ import annotations

from pathlib import Path

from osma_cli.errors import UsageError
from osma_cli.evaluation.sources.base import BenchmarkSplit, register_source
from osma_cli.evaluation.sources.pose_layout import load_pose_split
from osma_cli.progress import Log, ProgressFactory


@register_source("builtin")
def open_builtin_split(
    location: Path | None, split: str | None, *, progress: ProgressFactory, log: Log
) -> BenchmarkSplit:
    """``osma benchmark SPLIT``: a split of the built-in benchmark; ``location`` is not used."""
    from osma_cli.zoo import ensure_builtin_benchmark
    from osma_cli.zoo.recipe import default_recipe

    names = [s.name for s in default_recipe().splits]
    if split not in names:
        raise UsageError(
            f"the built-in benchmark has no split {split!r}",
            hint=f"choose one of {', '.join(names)}, or pass --data-root DIR "
            f"(the POSE benchmark layout) or --manifest FILE",
        )
    return load_pose_split(ensure_builtin_benchmark(progress=progress, log=log), split)
