"""Ray stays optional: everything imports without it, and the engine says how to install it;
the driver's side of the engine (order, errors) tested without Ray.

Runs whether Ray is installed or not: a child process hides it (``sys.modules["ray"] = None``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WITHOUT_RAY = """
import sys
sys.modules["ray"] = None
import osma_cli, osma_cli.api, osma_cli.cli.app, osma_cli.ray_engine
from osma_cli.errors import UsageError
assert "ray" not in [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] == "ray"]
try:
    osma_cli.ray_engine.import_ray()
except UsageError as exc:
    print(exc.hint)
"""


def test_osma_imports_without_ray_and_the_engine_names_the_extra():
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_RAY], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pip install 'osma[ray]'"


def actor_batch(indices, records, failure=None) -> dict:
    """A block as an ``AttributeActor`` returns it."""
    import pickle

    import numpy as np

    from osma_cli.ray_engine import pickle_failure

    n = len(indices)
    out = np.empty(n, dtype=object)
    out[:] = [pickle.dumps(r) for r in records]
    return {
        "index": np.array(indices),
        "record": out,
        "failure": np.array([pickle_failure(failure)] * n, dtype=object),
        "pid": np.full(n, 7),
        "host": np.array(["node"] * n, dtype=object),
        "peak_rss_mb": np.full(n, 1.5),
    }


def test_records_are_put_back_in_input_order_with_the_callers_paths():
    from osma_cli.api import FileAttribution
    from osma_cli.ray_engine import in_input_order

    given = [f"in/{name}.png" for name in "abcde"]
    made = [FileAttribution(path=Path("/abs") / p, attribution=None, error=f"bad {i}") for i, p in enumerate(given)]
    blocks = [actor_batch([3, 4], made[3:]), actor_batch([0, 1], made[:2]), actor_batch([2], made[2:3])]
    progress, reports = [], []
    out = list(in_input_order(iter(blocks), given, progress.append, reports.append))
    assert [r.path for r in out] == [Path(p) for p in given]
    assert [r.error for r in out] == [f"bad {i}" for i in range(5)]
    assert progress == [2, 2, 1] and [r.files for r in reports] == [2, 2, 1]
    assert reports[0].pid == 7 and reports[0].peak_rss_mb == 1.5


def test_an_actors_osma_error_reaches_the_caller_as_is_and_a_short_job_is_refused():
    import pytest

    from osma_cli.api import FileAttribution
    from osma_cli.errors import ImageError, OsmaError, ReferenceStoreError
    from osma_cli.ray_engine import in_input_order

    record = FileAttribution(path=Path("a.png"), attribution=None, error="x")
    failing = actor_batch([0], [record], ReferenceStoreError("the store is gone", hint="rebuild it"))
    with pytest.raises(ReferenceStoreError, match="the store is gone") as caught:
        list(in_input_order(iter([failing]), ["a.png"], None, None))
    assert caught.value.hint == "rebuild it"
    odd = actor_batch([0], [record], ImageError("a.png", "truncated", hint="copy it again"))
    with pytest.raises(OsmaError, match="truncated") as caught:
        list(in_input_order(iter([odd]), ["a.png"], None, None))
    assert caught.value.hint == "copy it again"
    with pytest.raises(OsmaError, match="1 of 2 records"):
        list(in_input_order(iter([actor_batch([0], [record])]), ["a.png", "b.png"], None, None))


class FakeCluster:
    """What ``place`` asks of Ray: the cluster's resources."""

    def __init__(self, **resources: float) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict:
        return self.resources


def test_one_actor_per_gpu_else_one_per_cpu_and_bad_devices_refused():
    import pytest

    from osma_cli.embed import EmbedOptions
    from osma_cli.errors import UsageError
    from osma_cli.ray_engine import place

    options = EmbedOptions(batch_size=8)
    cpu = place(FakeCluster(CPU=16.0), "auto", 1000, options, None)
    assert (cpu.gpu, cpu.actors, cpu.cpus_per_actor, cpu.workers, cpu.files_per_task) == (False, 16, 1, 0, 32)
    assert place(FakeCluster(CPU=16.0), "cpu", 40, options, None).actors == 2, "no more actors than blocks"
    gpu = place(FakeCluster(CPU=32.0, GPU=4.0), "auto", 10_000, options, None)
    assert (gpu.gpu, gpu.actors, gpu.workers, gpu.cpus_per_actor, gpu.files_per_task) == (True, 4, 7, 8, 256)
    assert not place(FakeCluster(CPU=32.0, GPU=4.0), "cpu", 10_000, options, None).gpu
    assert (
        place(FakeCluster(CPU=4.0), "cpu", 10_000, EmbedOptions(batch_size=24), None, routed=True).files_per_task == 768
    ), "whole routing chunks (256) and batches (24)"
    assert place(FakeCluster(CPU=8.0, GPU=2.0), "cuda:1", 100, EmbedOptions(workers=2), 10).workers == 2
    with pytest.raises(UsageError, match="no GPU"):
        place(FakeCluster(CPU=8.0), "cuda", 100, options, None)
    with pytest.raises(UsageError, match="unknown device"):
        place(FakeCluster(CPU=8.0), "tpu", 100, options, None)
