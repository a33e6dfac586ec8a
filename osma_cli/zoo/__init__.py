"""The built-in benchmark: a zoo of small trained generators that osma ships.

POSE's benchmark (68 generators, ~50 GB) cannot be downloaded everywhere, so osma ships
its own, built the same way: known generators, and unknown ones that differ from them
only by training seed, by architecture (decoder family) or by training set.

- ``generators``: the networks (six decoder families, one shared encoder);
- ``recipe``: which generators, how trained, how the splits are cut (``default_recipe``);
- ``photos``: the shipped real photographs (training sets and held-out content);
- ``deadleaves``: the procedural third training set;
- ``train``: ``train_zoo`` (``osma zoo train``);
- ``splits``: known / unknown roles per split;
- ``materialise``: ``build_benchmark``, ``verify_benchmark``, ``ensure_builtin_benchmark``.

``docs/zoo.md`` describes the recipe, the splits and how to rebuild everything. Importing
this package is cheap (torch is imported by the submodules only when they are used).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from osma_cli.progress import Log, ProgressFactory

__all__ = ["builtin_benchmark_root", "ensure_builtin_benchmark"]


def builtin_benchmark_root() -> Path:
    """Where the built-in benchmark lives (``$OSMA_HOME/benchmarks/zoo``), built or not."""
    from osma_cli.zoo.materialise import default_root

    return default_root()


def ensure_builtin_benchmark(*, progress: ProgressFactory | None = None, log: Log | None = None) -> Path:
    """The data root of the built-in benchmark, for ``load_pose_split(root, "split1")``.

    Builds it on first use (a few minutes), announcing it through ``log`` and reporting
    through ``progress`` (``progress(description, total)`` -> context manager yielding
    ``advance(n)``, as ``osma_cli.cli.output.progress_bar``).
    """
    from osma_cli.progress import no_log, no_progress
    from osma_cli.zoo import materialise

    return materialise.ensure_builtin_benchmark(
        progress=no_progress if progress is None else progress, log=no_log if log is None else log
    )
