"""Materialising the built-in benchmark: the zoo's images and POSE-layout splits on disk.

``build_benchmark`` writes, under ``$OSMA_HOME/benchmarks/zoo/`` by default::

    dataset/zoo/real/<tile>.png               held-out photo tiles, through no generator
    dataset/zoo/fake/<generator>/<tile>.png   each generator's re-synthesis of the tiles
    dataset/split{1..5}_{train,val,test}/annotations/...   POSE layout (write_pose_annotations)
    manifest.json                             fingerprint, splits, a digest per file

Every generator re-synthesises the tiles it needs: all of them if some split knows it,
the test tiles only if it is never known. A tile's part (train / val / test) is its
source photo's, so a split's training and test images never share a photo.

**Deterministic.** Images come from ``render`` (float64, deterministic, fixed threads)
and are written as PNG. The digest of an image is the sha256 of its decoded pixels (so a
different zlib, which compresses the same pixels into other bytes, is not a difference);
that of an annotation file the sha256 of its bytes. The manifest records them all and the
build's **fingerprint**: a hash of the recipe, the generator weights and the photos. osma
ships the digests of its own build (``weights/zoo/benchmark-digests.json``); a build with
the same fingerprint is compared with them, and any image that differs is reported (the
build is still usable: its figures are those of that machine's images).

**Resumable.** Images are written through a temporary file and a rename, and listed in a
journal as they are made; an interrupted build resumes where it stopped, re-checking the
digest of every image already there. A finished build is recognised by its manifest.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from osma_cli import __version__
from osma_cli.atomic import atomic_write
from osma_cli.data.decode import load_rgb
from osma_cli.errors import ImageError, OsmaError
from osma_cli.evaluation.sources import (
    UNKNOWN_KINDS,
    PoseAnnotations,
    pose_annotation_files,
    write_pose_annotations,
)
from osma_cli.home import osma_home
from osma_cli.progress import Log, ProgressFactory, no_log, no_progress
from osma_cli.runtime import cpu_count
from osma_cli.zoo.photos import PhotoSet, Tile, cut
from osma_cli.zoo.recipe import REAL, ZooRecipe, default_recipe
from osma_cli.zoo.render import deterministic_torch, keep_freed_memory, render
from osma_cli.zoo.splits import SplitRoles, all_roles
from osma_cli.zoo.store import (
    GeneratorRecord,
    list_records,
    load_generator,
    shipped_zoo_dir,
    weights_path,
)

FORMAT = 1
MANIFEST = "manifest.json"
JOURNAL = ".build-journal.tsv"
DIGESTS = "benchmark-digests.json"
"""The shipped digests of osma's own build, beside the generator weights."""
IMAGE_DIR = "dataset/zoo"


class BenchmarkError(OsmaError):
    """The built-in benchmark cannot be built or is not intact."""


def default_root() -> Path:
    """``$OSMA_HOME/benchmarks/zoo``: where the built-in benchmark is materialised."""
    return osma_home() / "benchmarks" / "zoo"


# --------------------------------------------------------------------------- digests


def pixel_digest(image: np.ndarray) -> str:
    """sha256 of an ``(H, W, 3) uint8`` image's shape and pixels."""
    header = f"{image.shape[0]} {image.shape[1]} {image.shape[2]}\n".encode()
    return hashlib.sha256(header + np.ascontiguousarray(image).tobytes()).hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_file_digest(path: Path) -> str:
    """The pixel digest of a PNG on disk; raises ``ImageError`` if it cannot be decoded."""
    return pixel_digest(load_rgb(path))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedImage:
    relpath: str
    """Relative to the benchmark root, with ``/``."""
    generator: str
    """``real`` or a generator name."""
    tile: Tile


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build will write, and the fingerprint that names it."""

    recipe: ZooRecipe
    photos: PhotoSet
    weights_dir: Path
    records: dict[str, GeneratorRecord]
    roles: list[SplitRoles]
    images: tuple[PlannedImage, ...]
    fingerprint: str

    def by_generator(self) -> dict[str, list[PlannedImage]]:
        groups: dict[str, list[PlannedImage]] = defaultdict(list)
        for image in self.images:
            groups[image.generator].append(image)
        return dict(groups)


def image_relpath(generator: str, tile: Tile) -> str:
    folder = REAL if generator == REAL else f"fake/{generator}"
    return f"{IMAGE_DIR}/{folder}/{tile.id}.png"


def plan_build(
    recipe: ZooRecipe | None = None, *, weights_dir: Path | None = None, photos: PhotoSet | None = None
) -> BuildPlan:
    """The images and splits of ``recipe`` (default: osma's) from the weights in
    ``weights_dir`` (default: the shipped ``weights/zoo``); checks both are complete."""
    recipe = recipe or default_recipe()
    weights_dir = Path(weights_dir) if weights_dir is not None else shipped_zoo_dir()
    photos = photos or PhotoSet.open(recipe.photos)
    photos.check()
    records = list_records(weights_dir)
    missing = [spec.name for spec in recipe.generators if spec.name not in records]
    if missing:
        raise BenchmarkError(
            f"{len(missing)} of the zoo's {len(recipe.generators)} generators have no weights in "
            f"{weights_dir} (first: {missing[0]})",
            hint="osma ships them in weights/zoo/ (reinstall osma from its sources); "
            "`osma zoo train --out DIR` trains them",
        )
    for spec in recipe.generators:
        record = records[spec.name]
        if record.config != recipe.training.config(spec.family).to_dict():
            raise BenchmarkError(
                f"{weights_path(weights_dir, spec.name)}: architecture {record.config} is not the recipe's",
                hint="retrain it with `osma zoo train --only NAME --force`",
            )
    roles = all_roles(recipe)
    ever_known = {name for r in roles for name in r.known}
    tiles = photos.tiles(recipe.tile)
    if not tiles:
        raise BenchmarkError(f"no held-out photo in {photos.root} holds a {recipe.tile}-pixel tile")
    for part in ("train", "test"):
        if not any(t.part == part for t in tiles):
            raise BenchmarkError(f"no held-out tile for the benchmark's {part} part")
    images = [PlannedImage(image_relpath(REAL, t), REAL, t) for t in tiles]
    for spec in recipe.generators:
        needed = tiles if spec.name in ever_known else [t for t in tiles if t.part == "test"]
        images += [PlannedImage(image_relpath(spec.name, t), spec.name, t) for t in needed]
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "format": FORMAT,
                "recipe": recipe.benchmark_dict(),
                "weights": {spec.name: records[spec.name].sha256 for spec in recipe.generators},
                "photos": photos.digest(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return BuildPlan(recipe, photos, weights_dir, records, roles, tuple(images), fingerprint)


def split_annotations(plan: BuildPlan, roles: SplitRoles) -> PoseAnnotations:
    """One split's annotation lines: real is label 0, known generators 1..K-1 in recipe
    order; unknown generators are numbered within their kind, in recipe order."""
    groups = plan.by_generator()
    label = {REAL: 0, **{name: i + 1 for i, name in enumerate(roles.known)}}
    parts: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for generator in (REAL, *roles.known):
        for image in groups[generator]:
            parts[image.tile.part].append((image.relpath, label[generator]))
    unknown: dict[str, list[tuple[str, int]]] = {}
    for kind in UNKNOWN_KINDS:
        lines = unknown.setdefault(kind, [])
        for number, generator in enumerate(roles.unknown_of_kind(kind)):
            lines += [(image.relpath, number) for image in groups[generator] if image.tile.part == "test"]
    return PoseAnnotations(train=parts["train"], val=parts["val"], test=parts["test"], unknown=unknown)


# --------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    fingerprint: str
    images: dict[str, str]
    annotations: dict[str, str]
    splits: dict[str, dict]
    reference: dict = field(default_factory=dict)
    generators: dict[str, str] = field(default_factory=dict)
    tile: int = 0
    build_seconds: float = 0.0
    osma_version: str = __version__
    format: int = FORMAT

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "osma_version": self.osma_version,
            "fingerprint": self.fingerprint,
            "tile": self.tile,
            "build_seconds": self.build_seconds,
            "generators": self.generators,
            "splits": self.splits,
            "reference": self.reference,
            "annotations": self.annotations,
            "images": self.images,
        }


def read_manifest(root: Path) -> Manifest | None:
    """The manifest of a finished build under ``root``; None if there is none."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest(
            fingerprint=data["fingerprint"],
            images=data["images"],
            annotations=data["annotations"],
            splits=data["splits"],
            reference=data.get("reference", {}),
            generators=data.get("generators", {}),
            tile=data.get("tile", 0),
            build_seconds=data.get("build_seconds", 0.0),
            osma_version=data.get("osma_version", ""),
            format=data.get("format", 0),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"{path} is unreadable ({exc})", hint="rebuild it: `osma zoo build --force`") from None


def read_reference(weights_dir: Path) -> dict | None:
    """The shipped digests (``benchmark-digests.json``) beside the weights, if any."""
    path = Path(weights_dir) / DIGESTS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"fingerprint": data["fingerprint"], "images": data["images"], "annotations": data["annotations"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"{path} is unreadable ({exc})") from None


def write_reference(path: Path, manifest: Manifest) -> None:
    """Write a build's digests as the reference other machines compare with."""
    data = {
        "about": "sha256 of every file of osma's built-in benchmark as built by osma's "
        "developers: images by decoded pixels, annotation files by bytes. "
        "`osma zoo build` compares a build with the same fingerprint with these.",
        "fingerprint": manifest.fingerprint,
        "annotations": manifest.annotations,
        "images": manifest.images,
    }
    text = json.dumps(data, indent=0, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def compare_with_reference(manifest: Manifest, reference: dict | None) -> dict:
    """``status``: ``match``, ``mismatch`` (with the first files that differ), ``absent``
    (no shipped digests) or ``other-build`` (shipped digests of another fingerprint)."""
    if reference is None:
        return {"status": "absent"}
    if reference["fingerprint"] != manifest.fingerprint:
        return {"status": "other-build"}
    differ = [
        path
        for kind in ("images", "annotations")
        for path, digest in getattr(manifest, kind).items()
        if reference[kind].get(path) != digest
    ]
    differ += [
        path for kind in ("images", "annotations") for path in reference[kind] if path not in getattr(manifest, kind)
    ]
    if differ:
        return {"status": "mismatch", "n_differ": len(differ), "first": sorted(differ)[:10]}
    return {"status": "match"}


# --------------------------------------------------------------------------- build


@dataclass(frozen=True)
class BuildReport:
    root: Path
    fingerprint: str
    n_images: int
    n_written: int
    n_kept: int
    seconds: float
    bytes: int
    reference: dict
    """``compare_with_reference``'s verdict on this build."""


def _read_journal(root: Path, fingerprint: str) -> dict[str, str]:
    path = root / JOURNAL
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != f"# {fingerprint}":
        return {}
    entries = {}
    for line in lines[1:]:
        relpath, _, digest = line.partition("\t")
        if relpath and len(digest) == 64:
            entries[relpath] = digest
    return entries


def _clear(root: Path) -> bool:
    """Remove what a build writes under ``root`` (and nothing else); refuse a ``dataset/``
    folder that no zoo build made (a POSE download, say). True if a build was removed."""
    ours = (root / MANIFEST).is_file() or (root / JOURNAL).is_file()
    if (root / "dataset").exists() and not ours:
        raise BenchmarkError(
            f"{root} holds a dataset/ folder that `osma zoo build` did not make",
            hint="choose another --root (osma deletes and rebuilds its own dataset/ folder there)",
        )
    removed = (root / "dataset").exists()
    shutil.rmtree(root / "dataset", ignore_errors=True)
    for name in (MANIFEST, JOURNAL):
        (root / name).unlink(missing_ok=True)
    return removed


def _write_png(path: Path, image: np.ndarray) -> None:
    """PNG through a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=6)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


JOB_SIZE = 8
"""Images per task handed to a worker process."""


def default_workers() -> int:
    return max(1, min(cpu_count(), 4))


@dataclass(frozen=True)
class _Job:
    """Images of one generator (or ``real``) for one worker: tiles in, PNGs and digests out."""

    generator: str
    weights: str | None
    photos_root: str
    root: str
    tiles: tuple[Tile, ...]
    relpaths: tuple[str, ...]


def _run_job(job: _Job, *, worker: bool = True) -> list[tuple[str, str]]:
    """Make a job's images; returns ``(relpath, pixel digest)`` for each."""
    if worker:
        keep_freed_memory()
    photos = PhotoSet(Path(job.photos_root), ())
    decoded: dict[str, np.ndarray] = {}
    results = []
    with deterministic_torch():
        model = load_generator(Path(job.weights))[0] if job.weights is not None else None
        for tile, relpath in zip(job.tiles, job.relpaths):
            if tile.photo.id not in decoded:
                decoded[tile.photo.id] = photos.read(tile.photo)
            pixels = cut(decoded[tile.photo.id], tile)
            if model is not None:
                pixels = render(model, pixels)
            _write_png(Path(job.root) / relpath, pixels)
            results.append((relpath, pixel_digest(pixels)))
    return results


def _run_jobs(jobs: list[_Job], workers: int) -> Iterator[list[tuple[str, str]]]:
    """Each job's results as it finishes: in this process (``workers == 0``) or in a pool
    of fresh ("spawn") processes, which share no threads or state with this one."""
    if workers == 0 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(job, worker=False)
        return
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context)
    try:
        futures = [executor.submit(_run_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _kept(root: Path, image: PlannedImage, journal: dict[str, str]) -> bool:
    """Whether an image already on disk is the one the journal recorded."""
    digest = journal.get(image.relpath)
    path = root / image.relpath
    if digest is None or not path.is_file():
        return False
    try:
        return image_file_digest(path) == digest
    except ImageError:
        return False


def build_benchmark(
    root: Path | None = None,
    *,
    plan: BuildPlan | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: ProgressFactory = no_progress,
    log: Log = no_log,
) -> BuildReport:
    """Materialise the benchmark of ``plan`` (default: osma's shipped zoo) under ``root``.

    Images already there with the digest recorded for them (by a finished build of the
    same fingerprint, or by an interrupted one) are kept after their pixels are checked;
    missing or damaged ones are made again. A build of another fingerprint is replaced.
    ``force`` starts from nothing. Images are made by ``workers`` processes of one torch
    thread each (default: one per CPU, at most 4; 0: in this process); the result does
    not depend on how many.
    """
    start = time.perf_counter()
    root = Path(root) if root is not None else default_root()
    plan = plan or plan_build()
    journal: dict[str, str] = {}
    if not force:
        existing = read_manifest(root)
        if existing is not None and existing.fingerprint == plan.fingerprint:
            journal.update(existing.images)
        journal.update(_read_journal(root, plan.fingerprint))
    if not journal and _clear(root):
        log(f"removed the previous build in {root}")
    root.mkdir(parents=True, exist_ok=True)
    journal_path = root / JOURNAL
    journal_text = "".join(f"{k}\t{v}\n" for k, v in journal.items())
    journal_path.write_text(f"# {plan.fingerprint}\n{journal_text}", encoding="utf-8")
    (root / MANIFEST).unlink(missing_ok=True)

    digests: dict[str, str] = {}
    todo: dict[str, list[PlannedImage]] = defaultdict(list)
    with progress("checking images already built", len(journal)) as advance:
        for image in plan.images:
            if image.relpath in journal:
                advance(1)
                if _kept(root, image, journal):
                    digests[image.relpath] = journal[image.relpath]
                    continue
            todo[image.generator].append(image)
    n_kept = len(digests)
    if n_kept:
        log(f"{n_kept} of {len(plan.images)} images already built and intact")

    jobs = [
        _Job(
            generator,
            str(weights_path(plan.weights_dir, generator)) if generator != REAL else None,
            str(plan.photos.root),
            str(root),
            tuple(image.tile for image in chunk),
            tuple(image.relpath for image in chunk),
        )
        for generator, images in todo.items()
        for chunk in (images[i : i + JOB_SIZE] for i in range(0, len(images), JOB_SIZE))
    ]
    n_todo = sum(len(job.tiles) for job in jobs)
    workers = default_workers() if workers is None else workers
    with (
        open(journal_path, "a", encoding="utf-8") as journal_file,
        progress("building the zoo benchmark", n_todo) as advance,
    ):
        for results in _run_jobs(jobs, workers):
            for relpath, digest in results:
                digests[relpath] = digest
                journal_file.write(f"{relpath}\t{digest}\n")
            journal_file.flush()
            advance(len(results))

    annotations: dict[str, str] = {}
    splits: dict[str, dict] = {}
    dataset_dir = root / "dataset"
    for roles in plan.roles:
        write_pose_annotations(root, roles.name, split_annotations(plan, roles))
        for path in pose_annotation_files(dataset_dir, roles.name).values():
            annotations[path.relative_to(root).as_posix()] = file_digest(path)
        splits[roles.name] = {"known": [REAL, *roles.known], "unknown": roles.unknown}

    manifest = Manifest(
        fingerprint=plan.fingerprint,
        images={image.relpath: digests[image.relpath] for image in plan.images},
        annotations=annotations,
        splits=splits,
        tile=plan.recipe.tile,
        generators={
            name: plan.records[name].sha256
            for name in sorted(plan.records)
            if name in {s.name for s in plan.recipe.generators}
        },
        build_seconds=round(time.perf_counter() - start, 1),
    )
    manifest.reference = compare_with_reference(manifest, read_reference(plan.weights_dir))
    text = json.dumps(manifest.to_dict(), indent=1, sort_keys=False) + "\n"
    atomic_write(root / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    journal_path.unlink(missing_ok=True)
    return BuildReport(
        root,
        plan.fingerprint,
        len(plan.images),
        n_todo,
        n_kept,
        manifest.build_seconds,
        _size(root),
        manifest.reference,
    )


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyReport:
    root: Path
    n_checked: int
    missing: list[str]
    corrupt: list[str]
    """Files whose digest is not the manifest's (or that cannot be decoded)."""
    reference: dict
    stale: bool
    """The build's fingerprint is not that of the installed zoo (weights or photos changed)."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    @property
    def matches_reference(self) -> bool:
        return self.reference.get("status") == "match"


def verify_benchmark(
    root: Path | None = None,
    *,
    plan: BuildPlan | None = None,
    weights_dir: Path | None = None,
    progress: ProgressFactory = no_progress,
) -> VerifyReport:
    """Re-read every file of a finished build and compare it with the manifest; compare
    the manifest with the shipped digests and its fingerprint with the installed zoo's."""
    root = Path(root) if root is not None else default_root()
    manifest = read_manifest(root)
    if manifest is None:
        raise BenchmarkError(f"no finished build in {root} (no {MANIFEST})", hint="build it first: `osma zoo build`")
    missing, corrupt = [], []
    with progress("verifying the zoo benchmark", len(manifest.images) + len(manifest.annotations)) as advance:
        for relpath, digest in manifest.images.items():
            path = root / relpath
            if not path.is_file():
                missing.append(relpath)
            else:
                try:
                    if image_file_digest(path) != digest:
                        corrupt.append(relpath)
                except ImageError:
                    corrupt.append(relpath)
            advance(1)
        for relpath, digest in manifest.annotations.items():
            path = root / relpath
            if not path.is_file():
                missing.append(relpath)
            elif file_digest(path) != digest:
                corrupt.append(relpath)
            advance(1)
    try:
        plan = plan or plan_build(weights_dir=weights_dir)
        stale = plan.fingerprint != manifest.fingerprint
        reference = compare_with_reference(manifest, read_reference(plan.weights_dir))
    except OsmaError:
        stale, reference = True, {"status": "absent"}
    return VerifyReport(root, len(manifest.images) + len(manifest.annotations), missing, corrupt, reference, stale)


# --------------------------------------------------------------------------- first use


def is_built(root: Path, plan: BuildPlan) -> bool:
    """A finished build of ``plan`` is under ``root`` (manifest and annotation files)."""
    manifest = read_manifest(root)
    if manifest is None or manifest.fingerprint != plan.fingerprint:
        return False
    return all((root / relpath).is_file() for relpath in manifest.annotations)


def ensure_builtin_benchmark(
    *, progress: ProgressFactory = no_progress, log: Log = no_log, root: Path | None = None
) -> Path:
    """The data root of the built-in benchmark (for ``load_pose_split``), built on first use.

    Returns at once when a finished build of the installed zoo is there; otherwise says so
    through ``log`` and builds it (a few minutes), reporting through ``progress``.
    """
    root = Path(root) if root is not None else default_root()
    plan = plan_build()
    if is_built(root, plan):
        return root
    log(
        f"building the built-in benchmark (first use) in {root}: {len(plan.images)} images "
        f"from {len(plan.recipe.generators)} generators; this takes a few minutes and is "
        f"done once"
    )
    report = build_benchmark(root, plan=plan, progress=progress, log=log)
    if report.reference.get("status") == "mismatch":
        log(
            f"warning: {report.reference['n_differ']} files differ from osma's reference "
            f"build (this machine's float64 arithmetic differs); figures may differ slightly "
            f"from published ones"
        )
    return root
