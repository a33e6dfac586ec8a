"""Training the zoo's generators: reconstruction of random crops, a fixed number of steps.

Each generator learns to reproduce 64-pixel crops of its training set (L1 loss, AdamW,
one-cycle learning rate); the ``dcgan`` family adds a PatchGAN term. All generators get the
same steps, batch and crop size, so that they differ by their traces rather than by how
long they trained; the PSNR each reaches on held-out photos is recorded with its weights.

The training sets:

- ``cameras``, ``kair``: the shipped photos with role ``train`` (``photos.py``);
- ``deadleaves``: ``TrainSettings.deadleaves_images`` procedural images (``deadleaves.py``).

A run is repeatable on one machine (seeds from the generator's name, fixed threads), not
bit for bit across machines; the shipped weights, not a re-run, define the benchmark.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from osma_cli.errors import DataError, UsageError
from osma_cli.runtime import torch_threads
from osma_cli.zoo.deadleaves import dead_leaves_set
from osma_cli.zoo.generators import Generator, PatchDiscriminator, build_generator
from osma_cli.zoo.photos import PhotoSet, cut
from osma_cli.zoo.recipe import GeneratorSpec, TrainSettings, ZooRecipe
from osma_cli.zoo.render import deterministic_torch, keep_freed_memory, psnr, render
from osma_cli.zoo.store import (
    GeneratorRecord,
    round_to_stored,
    save_generator,
    weights_path,
)

EVAL_EVERY_NTH_TILE = 4
"""PSNR is measured on every 4th held-out tile (16 of the default 64)."""

StepCallback = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainResult:
    name: str
    path: Path
    record: GeneratorRecord


class TrainingData:
    """The training images of each set, loaded (or generated) once, on first use."""

    def __init__(self, photos: PhotoSet, settings: TrainSettings) -> None:
        self.photos = photos
        self.settings = settings
        self._sets: dict[str, list[np.ndarray]] = {}

    def images(self, dataset: str) -> list[np.ndarray]:
        if dataset not in self._sets:
            self._sets[dataset] = self._make(dataset)
        return self._sets[dataset]

    def _make(self, dataset: str) -> list[np.ndarray]:
        s = self.settings
        if dataset == "deadleaves":
            return dead_leaves_set(s.deadleaves_images, s.deadleaves_size, s.deadleaves_seed)
        photos = self.photos.training(dataset)
        if not photos:
            raise DataError(f"no training photos for the {dataset!r} set in {self.photos.root}")
        images = [self.photos.read(p) for p in photos]
        small = [p.id for p, im in zip(photos, images) if min(im.shape[:2]) < s.crop]
        if small:
            raise DataError(f"training photos smaller than the {s.crop}-pixel crop: {small}")
        return images

    def eval_tiles(self, tile: int) -> list[np.ndarray]:
        """Held-out tiles on which PSNR is measured (every ``EVAL_EVERY_NTH_TILE``-th)."""
        if "_eval" not in self._sets:
            tiles = self.photos.tiles(tile)[::EVAL_EVERY_NTH_TILE]
            cache: dict[str, np.ndarray] = {}
            out = []
            for t in tiles:
                if t.photo.id not in cache:
                    cache[t.photo.id] = self.photos.read(t.photo)
                out.append(cut(cache[t.photo.id], t))
            self._sets["_eval"] = out
        return self._sets["_eval"]


def sample_batch(
    images: Sequence[np.ndarray], batch: int, crop: int, rng: np.random.Generator, *, permute_channels: bool = False
) -> torch.Tensor:
    """``batch`` random crops (any position, half of them mirrored, channels shuffled if
    asked), as (B, 3, crop, crop)."""
    crops = []
    for _ in range(batch):
        image = images[int(rng.integers(len(images)))]
        top = int(rng.integers(image.shape[0] - crop + 1))
        left = int(rng.integers(image.shape[1] - crop + 1))
        window = image[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            window = window[:, ::-1]
        if permute_channels:
            window = window[:, :, rng.permutation(3)]
        crops.append(np.ascontiguousarray(window))
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def train_generator(
    spec: GeneratorSpec,
    settings: TrainSettings,
    images: Sequence[np.ndarray],
    eval_tiles: Sequence[np.ndarray],
    *,
    on_step: StepCallback | None = None,
) -> tuple[Generator, GeneratorRecord]:
    """Train ``spec`` on ``images`` for ``settings.steps`` steps; returns the network (rounded
    to the stored precision, float64, eval mode) and its record."""
    if settings.steps < 1 or settings.batch < 1:
        raise UsageError("training needs at least one step and a batch of at least one")
    config = settings.config(spec.family)
    if settings.crop % config.stride:
        raise UsageError(f"crop {settings.crop} is not a multiple of the stride {config.stride}")
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch_threads(settings.threads):
        rng = np.random.default_rng(spec.rng_seed("data"))
        model = build_generator(config, seed=spec.rng_seed("init"))
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.99), weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1
        )
        disc: PatchDiscriminator | None = None
        disc_optimiser: torch.optim.Optimizer | None = None
        if spec.adversarial:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.rng_seed("disc"))
                disc = PatchDiscriminator(settings.disc_width)
            disc_optimiser = torch.optim.Adam(disc.parameters(), lr=settings.disc_lr, betas=(0.5, 0.999))
        l1 = float("nan")
        for step in range(settings.steps):
            x = sample_batch(images, settings.batch, settings.crop, rng, permute_channels=settings.permute_channels)
            y = model(x)
            loss = F.l1_loss(y, x)
            l1 = float(loss.detach())
            if disc is not None and disc_optimiser is not None and step >= settings.adv_start * settings.steps:
                d_loss = F.softplus(-disc(x)).mean() + F.softplus(disc(y.detach())).mean()
                disc_optimiser.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_optimiser.step()
                loss = loss + settings.adv_weight * F.softplus(-disc(y)).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if on_step is not None:
                on_step(step + 1, l1)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    model = round_to_stored(model.eval()).to(torch.float64)
    with deterministic_torch():
        scores = [psnr(tile, render(model, tile)) for tile in eval_tiles]
    metrics = {"final_l1": round(l1, 6), "psnr_tiles": len(scores)}
    if scores:
        metrics["psnr_heldout"] = round(float(np.mean(scores)), 3)
    record = GeneratorRecord(
        name=spec.name,
        family=spec.family,
        dataset=spec.dataset,
        seed=spec.seed,
        config=config.to_dict(),
        training={
            k: v
            for k, v in asdict(settings).items()
            if k not in ("width", "levels", "latent", "threads")
            and (spec.adversarial or k not in ("adv_weight", "adv_start", "disc_lr", "disc_width"))
            and (spec.dataset == "deadleaves" or not k.startswith("deadleaves"))
        },
        metrics=metrics,
        params=sum(p.numel() for p in model.parameters()),
        train_seconds=round(seconds, 1),
        train_cpu_seconds=round(cpu_seconds, 1),
    )
    return model, record


def generators_to_train(
    recipe: ZooRecipe, out: Path, *, only: Iterable[str] = (), force: bool = False
) -> list[GeneratorSpec]:
    """The generators ``train_zoo`` would train: those named (default: all) that have no
    weights in ``out`` yet, or all of them with ``force``."""
    wanted = [recipe.generator(name) for name in only] or list(recipe.generators)
    return [spec for spec in wanted if force or not weights_path(out, spec.name).exists()]


def train_zoo(
    recipe: ZooRecipe,
    out: Path,
    *,
    only: Iterable[str] = (),
    steps: int | None = None,
    force: bool = False,
    workers: int = 1,
    photos: PhotoSet | None = None,
    on_start: Callable[[GeneratorSpec, int], None] | None = None,
    on_step: StepCallback | None = None,
    on_done: Callable[[TrainResult], None] | None = None,
) -> list[TrainResult]:
    """Train the generators of ``recipe`` missing from ``out`` (all named in ``only`` with
    ``force``); ``steps`` overrides the recipe's. Returns what was trained, in order.

    Each generator is written as soon as it is done, so an interrupted run resumes with
    the next one. ``workers > 1`` trains that many generators at once in separate
    processes (each with ``settings.threads`` threads; ``on_step`` is then not called).
    ``on_start(spec, steps)``, ``on_step(step, l1)`` and ``on_done(result)`` report progress.
    """
    settings = recipe.training if steps is None else replace(recipe.training, steps=steps)
    todo = generators_to_train(recipe, out, only=only, force=force)
    if not todo:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = photos or PhotoSet.open(recipe.photos)
    data = TrainingData(photos, settings)
    eval_tiles = data.eval_tiles(recipe.tile)
    sets = {dataset: data.images(dataset) for dataset in dict.fromkeys(s.dataset for s in todo)}
    results = []
    if workers <= 1 or len(todo) == 1:
        for spec in todo:
            if on_start is not None:
                on_start(spec, settings.steps)
            result = _train_and_save(spec, settings, sets[spec.dataset], eval_tiles, out, on_step)
            results.append(result)
            if on_done is not None:
                on_done(result)
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(todo)), mp_context=context, initializer=_init_worker, initargs=(sets, eval_tiles)
    ) as executor:
        futures = {}
        for spec in todo:
            futures[executor.submit(_train_in_worker, spec, settings, out)] = spec
            if on_start is not None:
                on_start(spec, settings.steps)
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                if on_done is not None:
                    on_done(result)
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
    order = {spec.name: i for i, spec in enumerate(todo)}
    return sorted(results, key=lambda r: order[r.name])


def _train_and_save(
    spec: GeneratorSpec,
    settings: TrainSettings,
    images: Sequence[np.ndarray],
    eval_tiles: Sequence[np.ndarray],
    out: Path,
    on_step: StepCallback | None = None,
) -> TrainResult:
    model, record = train_generator(spec, settings, images, eval_tiles, on_step=on_step)
    path = weights_path(out, spec.name)
    return TrainResult(spec.name, path, save_generator(path, model, record))


_WORKER_DATA: dict = {}


def _init_worker(sets: dict[str, list[np.ndarray]], eval_tiles: list[np.ndarray]) -> None:
    keep_freed_memory()
    _WORKER_DATA["sets"] = sets
    _WORKER_DATA["eval"] = eval_tiles


def _train_in_worker(spec: GeneratorSpec, settings: TrainSettings, out: Path) -> TrainResult:
    return _train_and_save(spec, settings, _WORKER_DATA["sets"][spec.dataset], _WORKER_DATA["eval"], out)
