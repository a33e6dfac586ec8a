"""``osma attribute`` as a Ray Data job: the same records, spread over a machine or a cluster.

What runs where:

- the **driver** (the caller's process) checks the model and the store once, cheaply (the
  weights' header, the store file), splits the file list into blocks of paths (a Ray
  dataset), and streams the results back in input order;
- **actors** (``map_batches`` with a class, an actor pool) each load the ``Embedder`` and the
  store once and call ``osma_cli.api.attribute_files`` on each block of paths they are given,
  so that decoding, cropping, routing by compression, embedding and scoring are exactly the
  single-process code. One actor per GPU (``num_gpus=1``) when the device resolves to CUDA,
  else one single-threaded actor per CPU.

Decoding runs inside the actors' ``attribute_files`` call, not in separate Ray tasks. On the
CPU the pool already gives every core an actor that decodes and embeds, so decode tasks
would only add a copy of the crops through the object store; and decoding in the actor
keeps the decode-crop-route code in one place (a model with JPEG regimes re-encodes each
image per regime before cropping). A GPU actor decodes in DataLoader workers of its own
(``options.workers``, default: its share of the node's CPUs) and is given larger blocks, so
that starting those workers is paid per block of files, not per batch.

Files and model files are read by the actors: on a cluster they must be at the same path on
every node (a shared file system), and osma must be installed there (docs/ray.md).

Ray is optional (``pip install 'osma[ray]'``): this module imports it inside its functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import resource
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osma_cli.api import FileAttribution, attribute_files, granule_for
from osma_cli.embed import EmbedOptions
from osma_cli.errors import OsmaError, UsageError

RAY_HINT = "pip install 'osma[ray]'"

CPU_FILES_PER_TASK = 4
"""Files per actor call, in embedding batches, for a CPU actor: small blocks keep every
core busy until the end of the list."""
GPU_FILES_PER_TASK = 32
"""The same for a GPU actor: large blocks amortise starting its DataLoader workers."""


@dataclass(frozen=True)
class WorkerReport:
    """What one actor reports with each block it returns (for benchmarks and logs)."""

    pid: int
    host: str
    peak_rss_mb: float
    """The actor process's peak resident memory so far (``getrusage``, its own, not its loader workers')."""
    files: int
    """Files in the block it just returned."""


def import_ray() -> Any:
    """Ray, or a ``UsageError`` saying how to install it."""
    try:
        import ray
        import ray.data  # the Data library is a separate extra of ray
    except ImportError as exc:
        raise UsageError(f"the Ray engine needs Ray Data, which is not installed ({exc})", hint=RAY_HINT) from exc
    return ray


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (``ru_maxrss`` is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_model_and_store(weights: Path, store_path: Path | None) -> bool:
    """Fail in the driver, with osma's own message, on what every actor would fail on;
    True when the model routes files by compression (a store per JPEG regime).

    Reads only the weights' header and the store file: the actors load the model itself.
    ``scorer_for`` makes the same checks (``api.check_store``) in each actor; this is where the user sees them.
    """
    from osma_cli.api import check_store
    from osma_cli.regime_store import RegimeStores, load_store
    from osma_cli.weights import read_meta

    meta = read_meta(weights)
    store = None if store_path is None else load_store(store_path)
    check_store(meta, store, store_path=store_path)
    return isinstance(store, RegimeStores)


class AttributeActor:
    """One model and store, loaded once per actor; attributes the blocks of paths it is given.

    Returns each file as its pickled ``FileAttribution`` (exact floats, the embedding too),
    keyed by its index in the input. An ``OsmaError`` (here or at construction) is returned
    pickled in ``failure`` instead of raised: Ray would wrap it and lose its message and hint.
    """

    def __init__(
        self,
        weights: str,
        store_path: str | None,
        device: str,
        threshold: float | Mapping[str, float],
        top_k: int,
        options: EmbedOptions,
    ) -> None:
        self.threshold, self.top_k, self.options = threshold, top_k, options
        self.failure: OsmaError | None = None
        try:
            from osma_cli.embed import Embedder
            from osma_cli.regime_store import load_store

            self.embedder = Embedder.from_file(Path(weights), device=device)
            self.store = None if store_path is None else load_store(Path(store_path))
        except OsmaError as exc:
            self.failure = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices = batch["index"]
        records = np.empty(len(indices), dtype=object)
        failure = self.failure
        if failure is None:
            try:
                paths = [Path(os.fsdecode(bytes(p))) for p in batch["path"]]
                results = list(
                    attribute_files(
                        self.embedder,
                        self.store,
                        paths,
                        threshold=self.threshold,
                        top_k=self.top_k,
                        options=self.options,
                    )
                )
                records[:] = [pickle.dumps(r) for r in results]
            except OsmaError as exc:
                failure = exc
        n = len(indices)
        return {
            "index": indices,
            "record": records,
            "failure": np.array([pickle_failure(failure)] * n, dtype=object),
            "pid": np.full(n, os.getpid()),
            "host": np.array([socket.gethostname()] * n, dtype=object),
            "peak_rss_mb": np.full(n, peak_rss_mb()),
        }


def pickle_failure(failure: OsmaError | None) -> bytes:
    """An actor's error for the driver (empty: none); an error that does not pickle keeps its text."""
    if failure is None:
        return b""
    try:
        data = pickle.dumps(failure)
        pickle.loads(data)
        return data
    except (pickle.PicklingError, TypeError, AttributeError):
        return pickle.dumps(OsmaError(failure.message, hint=failure.hint))


@contextlib.contextmanager
def ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Ray for one job: the running one, the cluster at ``address`` or ``RAY_ADDRESS``, else a
    local one sized to this machine; shut down at the end only if started here."""
    if ray.is_initialized():
        yield
        return
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    target = address or os.environ.get("RAY_ADDRESS")
    try:
        if target:
            ray.init(address=target, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(num_cpus=usable_cpus(), **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(
            f"cannot start or reach Ray{f' at {target}' if target else ''}: {exc}",
            hint="check RAY_ADDRESS (`ray status` on the head node), or unset it for a local Ray",
        ) from exc
    try:
        yield
    finally:
        ray.shutdown()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def quiet_ordered_data_context(ray: Any) -> Iterator[None]:
    """Ray Data keeping blocks in input order, without its own progress bars and log lines
    (the caller reports progress through ``on_progress``; failures are raised, not logged)."""
    ctx = ray.data.DataContext.get_current()
    saved = (
        ctx.execution_options.preserve_order,
        ctx.enable_progress_bars,
        getattr(ctx, "print_on_execution_start", True),
    )
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        data_logger.setLevel(level)


@dataclass(frozen=True)
class Placement:
    """How many actors, on what, and each one's loader workers and files per call."""

    actors: int
    gpu: bool
    cpus_per_actor: int
    workers: int
    files_per_task: int


def checked_device(device: str) -> str:
    """``auto``, ``cpu`` or ``cuda`` (``cuda:N`` is taken as ``cuda``: Ray gives each actor its GPU)."""
    spec = device.strip().lower()
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    return "cuda" if spec.startswith("cuda") else spec


def place(
    ray: Any, device: str, n_files: int, options: EmbedOptions, files_per_task: int | None, routed: bool = False
) -> Placement:
    """One actor per GPU when ``device`` resolves to CUDA on the cluster, else one per CPU.

    ``auto`` means CUDA when the cluster has GPUs (the driver itself may have none). The
    default block is a whole number of batches (and of the routing chunk for a ``routed``
    model), so that each block forms the batches one process forms: floating-point results
    can depend on which images share a batch.
    """
    spec = checked_device(device)
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    gpu = spec != "cpu" and gpus > 0
    if spec.startswith("cuda") and not gpu:
        raise UsageError("CUDA was asked for but the Ray cluster has no GPU", hint="use --device cpu (or auto)")
    if files_per_task is None:
        granule = granule_for(options.batch_size, routed=routed)
        wanted = options.batch_size * (GPU_FILES_PER_TASK if gpu else CPU_FILES_PER_TASK)
        files_per_task = -(-wanted // granule) * granule
    per_task = files_per_task
    if per_task < 1:
        raise UsageError(f"files per task must be at least 1, not {per_task}")
    blocks = -(-n_files // per_task)
    if gpu:
        share = max(1, cpus // gpus)
        workers = min(8, share - 1) if options.workers is None else options.workers
        return Placement(
            actors=min(gpus, blocks),
            gpu=True,
            cpus_per_actor=min(share, 1 + workers),
            workers=workers,
            files_per_task=per_task,
        )
    return Placement(actors=max(1, min(cpus, blocks)), gpu=False, cpus_per_actor=1, workers=0, files_per_task=per_task)


def attribute_files_ray(
    weights: Path,
    store_path: Path | None,
    paths: Sequence[Path],
    *,
    device: str = "auto",
    threshold: float | Mapping[str, float],
    top_k: int = 1,
    options: EmbedOptions = EmbedOptions(),
    address: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    files_per_task: int | None = None,
    on_worker_report: Callable[[WorkerReport], None] | None = None,
) -> Iterator[FileAttribution]:
    """``osma_cli.api.attribute_files`` as a Ray Data job: the same records, in input order, streaming.

    ``weights`` is the model file and ``store_path`` its reference store (None for a
    classifier); ``threshold`` is tau as ``attribute_files`` takes it (a mapping of regime
    to tau for a model with JPEG regimes), already resolved by the caller. Each record
    equals the single-process one, its ``path`` the one given in ``paths`` (as a ``Path``).

    Ray: the one already running in this process, else the cluster at ``address`` or
    ``RAY_ADDRESS``, else a local Ray over this machine's CPUs (and GPUs), shut down when the
    iteration ends (closing the iterator early shuts it down too). ``device``: ``auto``
    (CUDA when the cluster has GPUs), ``cpu`` or ``cuda``; each GPU actor has its own GPU.
    ``options.workers`` is the DataLoader workers of each GPU actor (CPU actors decode
    in-process: the pool is the parallelism). ``files_per_task``: files per actor call
    (default: 4 batches on the CPU, 32 on a GPU, rounded up to a whole number of the
    routing chunks of a model with JPEG regimes; another size gives the same records to
    float tolerance, not always to the bit). ``on_progress(n)`` is called as records
    come back; ``on_worker_report`` with each block's ``WorkerReport``.

    Memory in the driver: the path list (and its copy as Arrow blocks in Ray's object store)
    and the records not yet consumed, which Ray Data's backpressure bounds whatever the
    number of files.
    Raises the actors' ``OsmaError`` as is; ``UsageError`` when Ray is not installed.
    """
    paths = list(paths)
    weights = Path(weights)
    store_path = None if store_path is None else Path(store_path)
    if top_k < 1:
        raise UsageError(f"top_k must be at least 1, not {top_k}")
    checked_device(device)
    ray = import_ray()
    routed = check_model_and_store(weights, store_path)
    if not paths:
        return
    with ray_session(ray, address), quiet_ordered_data_context(ray):
        where = place(ray, device, len(paths), options, files_per_task, routed)
        actor_options = dataclasses.replace(options, workers=where.workers)
        dataset = ray.data.from_arrow(path_blocks(paths, where.files_per_task)).map_batches(
            AttributeActor,
            batch_size=None,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=where.actors),
            num_cpus=where.cpus_per_actor,
            num_gpus=1 if where.gpu else 0,
            fn_constructor_kwargs={
                "weights": str(weights.absolute()),
                "store_path": None if store_path is None else str(store_path.absolute()),
                "device": "cuda" if where.gpu else "cpu",
                "threshold": threshold,
                "top_k": top_k,
                "options": actor_options,
            },
        )
        yield from in_input_order(
            dataset.iter_batches(batch_size=None, batch_format="numpy"), paths, on_progress, on_worker_report
        )


def path_blocks(paths: Sequence[Path], per_block: int) -> list[Any]:
    """The file list as Arrow tables of (index, path bytes), one per actor call.

    Paths travel as the file system's bytes (``os.fsencode``), so names that are not UTF-8
    reach the actors intact, and absolute, so actors need not share the driver's directory.
    """
    import pyarrow as pa

    blocks = []
    for start in range(0, len(paths), per_block):
        chunk = paths[start : start + per_block]
        blocks.append(
            pa.table(
                {
                    "index": pa.array(range(start, start + len(chunk)), pa.int64()),
                    "path": pa.array([os.fsencode(Path(p).absolute()) for p in chunk], pa.binary()),
                }
            )
        )
    return blocks


def in_input_order(
    batches: Iterator[dict[str, np.ndarray]],
    paths: Sequence[Path],
    on_progress: Callable[[int], None] | None,
    on_worker_report: Callable[[WorkerReport], None] | None,
) -> Iterator[FileAttribution]:
    """Unpickle the actors' records and yield them by input index.

    Ray Data is asked to preserve order, so the buffer of early records stays empty; it is
    there so that order never depends on that setting.
    """
    pending: dict[int, FileAttribution] = {}
    following = 0
    for batch in batches:
        failure = next((f for f in batch["failure"] if len(f)), None)
        if failure is not None:
            raise pickle.loads(failure)
        for index, record in zip(batch["index"], batch["record"]):
            result: FileAttribution = pickle.loads(record)
            pending[int(index)] = dataclasses.replace(result, path=Path(paths[int(index)]))
        if on_worker_report is not None and len(batch["index"]):
            on_worker_report(
                WorkerReport(
                    pid=int(batch["pid"][0]),
                    host=str(batch["host"][0]),
                    peak_rss_mb=float(batch["peak_rss_mb"][0]),
                    files=len(batch["index"]),
                )
            )
        while following in pending:
            yield pending.pop(following)
            following += 1
        if on_progress is not None:
            on_progress(len(batch["index"]))
    if following != len(paths) or pending:
        raise OsmaError(
            f"the Ray job returned {following} of {len(paths)} records in order", hint="report this as a bug"
        )
