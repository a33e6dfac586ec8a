"""Metric learning of the attribution embedding with ProxyNCA++ (Fang et al.; docs/training.md).

``train_embedding(config)``:

1. reads the data: a folder tree (one sub-folder per generator) or POSE annotation files;
   the validation images are ``--val-annotations`` or a stratified ``--val-fraction`` of the
   training files; unreadable files are reported and left out, before training starts;
2. builds the network (the registry's ``--arch`` from scratch, or ``--init`` weights, e.g.
   from ``osma pretrain``) and a ProxyNCA++ loss with one proxy per training class;
3. trains with the shared loop (``loop.fit``): every epoch each class is under-sampled to
   the smallest one (``balanced_indices``), crops are random, grid-aligned and never
   resampled, re-compressed as JPEG with a quality from {75, 80, 85, 90, 95, none}
   (``TrainTransform``);
4. validates after every epoch with the attribution rule itself: references (centroid and
   spread) from the deterministic centre crops of up to ``val_refs_per_class`` training
   images per class, and each validation image's centre crop attributed to the nearest
   centroid (``score_embeddings``); the accuracy on these known generators picks the
   checkpoint that is kept;
5. writes the best network as safetensors (``save_weights``) with embeddings marked
   L2-normalised, the full recipe and the validation figures in its metadata, and with
   ``refs_out`` a reference store of the training classes made with those weights.

Validation embeds through ``Embedder.embed_files``, the same crops, batching and
normalisation as ``osma attribute``, so the accuracy it reports is the one the tool will have.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch

import osma_cli
from osma_cli.attribution import score_embeddings
from osma_cli.calibration import DEFAULT_ACCEPTANCE, leave_one_out_scores, threshold_for_acceptance
from osma_cli.data import default_workers
from osma_cli.defaults import BATCH_SIZE, CROP, DEFAULT_VAL_FRACTION, DEVICE, EMBEDDING_OUT, SEED
from osma_cli.data.augment import JPEG_QUALITIES, TrainTransform
from osma_cli.data.training_sets import LabeledFiles, TrainingDataset, balanced_indices
from osma_cli.embed import EmbeddedImage, Embedder
from osma_cli.errors import DataError, UsageError
from osma_cli.nets import EmbeddingNet
from osma_cli.references import MIN_IMAGES, ReferenceStore, Threshold, now_iso, validate_name
from osma_cli.runtime import seed_everything
from osma_cli.training.checkpoint import has_checkpoint
from osma_cli.training.loop import (DistContext, EpochCallback, EpochStartCallback, EpochStats, LoopSettings,
                                    Network, StepCallback, build_network, distributed, epoch_rng, fit,
                                    source_commit)
from osma_cli.training.losses import DEFAULT_TEMPERATURE, ProxyNCAPlusPlus, get_distance
from osma_cli.training.pose_aug import AugOptions, OpenSpaceExpander, ProgressiveAugmenter
from osma_cli.training.schedule import (DEFAULT_WEIGHT_DECAY, METRIC_EPOCHS, PROXY_LR_FACTOR, StepDecay,
                                        metric_schedule)
from osma_cli.weights import WeightsMeta, save_weights

DEFAULT_VAL_REFS_PER_CLASS = 200


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``osma train`` can be told; ``None`` means the paper's default for the case."""

    data: Path | None = None
    annotations: tuple[Path, ...] = ()
    data_root: Path | None = None
    val_annotations: tuple[Path, ...] = ()
    val_fraction: float = DEFAULT_VAL_FRACTION
    out: Path = EMBEDDING_OUT
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    embedding_dim: int | None = None
    init: Path | None = None
    epochs: int = METRIC_EPOCHS
    lr: float | None = None
    lr_decay: float | None = None
    decay_every: int | None = None
    proxy_lr_factor: float = PROXY_LR_FACTOR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    batch_size: int = BATCH_SIZE
    crop: int = CROP
    temperature: float = DEFAULT_TEMPERATURE
    distance: str = "squared_l2"
    seed: int = SEED
    workers: int | None = None
    device: str = DEVICE
    mixed_precision: bool = True
    steps_per_epoch: int | None = None
    checkpoint_dir: Path | None = None
    resume: Path | None = None
    force: bool = False
    refs_out: Path | None = None
    val_refs_per_class: int | None = DEFAULT_VAL_REFS_PER_CLASS
    cache_decoded: bool = False
    open_space_aug: AugOptions | None = None
    """POSE's augmentation models as extra negative classes (``osma train --open-space-aug``)."""

    def schedule(self) -> StepDecay:
        return metric_schedule(from_init=self.init is not None, lr=self.lr, factor=self.lr_decay,
                               every=self.decay_every)

    def checkpoint_folder(self) -> Path:
        """``--resume`` if given, else ``--checkpoint-dir``, else ``<out>.checkpoints`` beside the weights."""
        if self.resume is not None:
            return Path(self.resume)
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        return default_checkpoint_folder(self.out)


@dataclass
class TrainResult:
    """What a training run produced (complete on rank 0; other processes get the history only)."""

    weights: Path
    meta: WeightsMeta | None
    best_accuracy: float | None
    best_epoch: int | None
    history: list[EpochStats]
    class_names: tuple[str, ...]
    n_train: int
    n_val: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    refs: Path | None = None
    checkpoint_dir: Path | None = None
    resumed_from: int | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class TrainingData:
    train: LabeledFiles
    val: LabeledFiles | None
    dataset: TrainingDataset
    """The training files as a dataset, already checked readable (its decode cache filled if asked)."""
    skipped: list[tuple[Path, str]]
    description: dict
    notes: list[str] = field(default_factory=list)


def load_data(config: TrainConfig) -> TrainingData:
    """Training and validation files (unreadable ones left out and listed), checked for use."""
    if config.data is not None and config.annotations:
        raise UsageError("give either a DATA folder or --annotations, not both")
    if config.data is None and not config.annotations:
        raise UsageError("no training data", hint="give a folder with one sub-folder per generator, "
                                                  "or --annotations FILE")
    if config.data is not None:
        files = LabeledFiles.from_folders(config.data)
        description = {"source": "folders", "root": str(config.data)}
    else:
        files = LabeledFiles.from_annotations(*config.annotations, data_root=config.data_root)
        description = {"source": "annotations", "annotation_files": [str(p) for p in config.annotations],
                       "data_root": None if config.data_root is None else str(config.data_root)}
    if config.val_annotations:
        train = files
        val = validation_of(files, LabeledFiles.from_annotations(*config.val_annotations,
                                                                 data_root=config.data_root))
        description["validation"] = {"annotation_files": [str(p) for p in config.val_annotations]}
    elif config.val_fraction > 0:
        if not 0 < config.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {config.val_fraction}")
        train, val = files.split(config.val_fraction, config.seed)
        description["validation"] = {"fraction": config.val_fraction, "split_seed": config.seed}
    else:
        train, val = files, None
        description["validation"] = None
    notes: list[str] = []
    train, val = drop_absent_classes(train, val, notes)
    dataset, train, skipped = readable_dataset(train, TrainTransform(crop=config.crop), seed=config.seed,
                                               cache_decoded=config.cache_decoded)
    if val is not None:
        _, val, val_skipped = readable_dataset(val, TrainTransform(crop=config.crop), seed=config.seed)
        skipped += val_skipped
        if len(val.paths) == 0:
            val = None
    check_classes(train)
    return TrainingData(train=train, val=val, dataset=dataset, skipped=skipped, description=description,
                        notes=notes)


def validation_of(train: LabeledFiles, val: LabeledFiles) -> LabeledFiles:
    """Validation files whose label ``k`` means the training files' class ``k``.

    Annotation files carry numbers, not names; with training folders (classes in name
    order) the numbers must still mean the same generators, so the names are taken from the
    training side.
    """
    if len(val) and int(val.labels.max()) >= len(train.class_names):
        raise DataError(f"validation label {int(val.labels.max())} but only {len(train.class_names)} "
                        f"training classes", hint="label k of --val-annotations is the k-th training "
                                                  "class (folders in name order)")
    return LabeledFiles(val.paths, val.labels, train.class_names)


def drop_absent_classes(train: LabeledFiles, val: LabeledFiles | None,
                        notes: list[str]) -> tuple[LabeledFiles, LabeledFiles | None]:
    """Keep the classes that have training files (annotation labels may have gaps); relabel both.

    Validation files of other classes are left out (they would be unknowns, not known
    generators), and ``notes`` says so.
    """
    counts = np.bincount(train.labels, minlength=len(train.class_names))
    kept = [name for name, n in zip(train.class_names, counts) if n > 0]
    if len(kept) < len(train.class_names):
        absent = [name for name, n in zip(train.class_names, counts) if n == 0]
        notes.append(f"classes without training files left out: {', '.join(absent[:8])}"
                     + (" ..." if len(absent) > 8 else ""))
        train = relabel(train, tuple(kept))
    if val is not None:
        names = np.array(val.class_names, dtype=object)[val.labels] if len(val) else np.array([], dtype=object)
        inside = np.isin(names, np.array(train.class_names, dtype=object))
        if not inside.all():
            notes.append(f"{int((~inside).sum())} validation file(s) of classes without training files left out")
        val = relabel(val.subset(np.flatnonzero(inside)), train.class_names)
    return train, val


def relabel(files: LabeledFiles, class_names: tuple[str, ...]) -> LabeledFiles:
    """The same files with labels renumbered by name onto ``class_names`` (every name must be there)."""
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[files.class_names[k]] for k in files.labels], dtype=np.int64)
    return LabeledFiles(paths=tuple(files.paths), labels=labels, class_names=tuple(class_names))


def readable_dataset(files: LabeledFiles, transform, *, seed: int, cache_decoded: bool = False
                     ) -> tuple[TrainingDataset, LabeledFiles, list[tuple[Path, str]]]:
    """A ``TrainingDataset`` of the files that decode, those files, and (path, reason) of the others.

    The check decodes every file once in this process; with ``cache_decoded`` the images stay
    in memory and forked loader workers share them.
    """
    dataset = TrainingDataset(files, transform, seed=seed, cache_decoded=cache_decoded)
    bad = dataset.check_readable()
    if not bad:
        return dataset, files, []
    bad_paths = {Path(p) for p, _ in bad}
    files = files.subset(np.array([i for i, p in enumerate(files.paths) if Path(p) not in bad_paths],
                                  dtype=np.int64))
    dataset = TrainingDataset(files, transform, seed=seed, cache_decoded=cache_decoded)
    if cache_decoded:
        dataset.check_readable()
    return dataset, files, [(Path(p), reason) for p, reason in bad]


def check_classes(train: LabeledFiles) -> None:
    counts = np.bincount(train.labels, minlength=len(train.class_names))
    if len(train.class_names) < 2:
        raise DataError(f"training needs at least 2 classes, got {len(train.class_names)}",
                        hint="give one sub-folder (or annotation label) per generator")
    short = [f"{name} ({n})" for name, n in zip(train.class_names, counts) if n < MIN_IMAGES]
    if short:
        raise DataError(f"classes with fewer than {MIN_IMAGES} readable training images: {', '.join(short)}",
                        hint="add images, lower --val-fraction, or remove those classes")


def files_digest(files: LabeledFiles | None) -> str | None:
    """sha256 over (path, label) pairs: identifies a split in the fingerprint and the recipe."""
    if files is None:
        return None
    return paths_digest(files.paths, files.labels)


def paths_digest(paths, labels=None) -> str:
    """sha256 over paths (and labels, when given), in order."""
    digest = hashlib.sha256()
    labels = [None] * len(paths) if labels is None else labels
    for path, label in zip(paths, labels):
        tail = "" if label is None else str(int(label))
        digest.update(f"{path}\0{tail}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def reference_sample(files: LabeledFiles, per_class: int | None, seed: int) -> LabeledFiles:
    """Up to ``per_class`` files of each class, drawn once with ``seed`` (all with None)."""
    if per_class is None:
        return files
    rng = np.random.default_rng([seed, 0x5EED])
    chosen = []
    for k in range(len(files.class_names)):
        idx = np.flatnonzero(files.labels == k)
        chosen.append(idx if len(idx) <= per_class else np.sort(rng.choice(idx, per_class, replace=False)))
    return files.subset(np.sort(np.concatenate(chosen)))


# --------------------------------------------------------------------------- validation

def embed_labeled(embedder: Embedder, files: LabeledFiles, *, batch_size: int,
                  workers: int) -> tuple[np.ndarray, np.ndarray, list[EmbeddedImage]]:
    """Centre-crop embeddings of ``files`` with their labels; failures listed, not fatal."""
    vectors, labels, failures = [], [], []
    for item in embedder.embed_files(list(files.paths), batch_size=batch_size, workers=workers):
        if item.ok:
            vectors.append(item.embedding)
            labels.append(int(files.labels[item.index]))
        else:
            failures.append(item)
    matrix = np.stack(vectors) if vectors else np.zeros((0, embedder.embedding_dim), dtype=np.float32)
    return matrix, np.array(labels, dtype=np.int64), failures


class CentroidValidator:
    """Nearest-centroid accuracy on known classes, with the attribution rule's own code."""

    def __init__(self, references: LabeledFiles, queries: LabeledFiles, meta: WeightsMeta,
                 device: torch.device, *, batch_size: int, workers: int, mixed_precision: bool = True) -> None:
        self.references = references
        self.queries = queries
        self.meta = meta
        self.device = device
        self.batch_size = batch_size
        self.workers = workers
        self.mixed_precision = mixed_precision

    def __call__(self, model: EmbeddingNet) -> float:
        embedder = Embedder(model, self.meta, self.device, mixed_precision=self.mixed_precision)
        ref, ref_labels, _ = embed_labeled(embedder, self.references, batch_size=self.batch_size,
                                           workers=self.workers)
        query, query_labels, _ = embed_labeled(embedder, self.queries, batch_size=self.batch_size,
                                               workers=self.workers)
        store = ReferenceStore(weights_sha256="", architecture=self.meta.architecture,
                               embedding_dim=self.meta.embedding_dim, l2_normalize=self.meta.l2_normalize)
        present = [k for k in range(len(self.references.class_names)) if (ref_labels == k).sum() >= MIN_IMAGES]
        for k in present:
            store.enroll(f"class {k}", ref[ref_labels == k])
        if not present or len(query) == 0:
            return 0.0
        scored = score_embeddings(query, store.centroids(), store.sigmas())
        predicted = np.array(present)[scored.candidates]
        return float((predicted == query_labels).mean())


# --------------------------------------------------------------------------- references

def build_training_references(embedder: Embedder, files: LabeledFiles, *, batch_size: int, workers: int,
                              acceptance: float = DEFAULT_ACCEPTANCE) -> tuple[ReferenceStore, list[EmbeddedImage]]:
    """A reference store of the training classes (as ``osma build`` makes one, provisional tau)."""
    embeddings, labels, failures = embed_labeled(embedder, files, batch_size=batch_size, workers=workers)
    store = ReferenceStore.for_weights(embedder.meta)
    for k, name in enumerate(files.class_names):
        store.enroll(name, embeddings[labels == k])
    loo = leave_one_out_scores(embeddings, labels)
    loo = loo[np.isfinite(loo)]
    if loo.size:
        store.set_threshold(Threshold(value=threshold_for_acceptance(loo, acceptance),
                                      method="provisional: leave-one-out scores of the training images",
                                      target=acceptance, n_images=int(loo.size), chosen=now_iso()))
    return store, failures


# --------------------------------------------------------------------------- the run

def default_checkpoint_folder(out: Path | str) -> Path:
    """``<out>.checkpoints`` beside the weights file."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".checkpoints")


def check_output_paths(out: Path | str, *, refs_out: Path | str | None = None, force: bool = False,
                       resume: Path | str | None = None) -> None:
    """Refuse, before any training, outputs that would be overwritten or cannot be written."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"folder {out.parent} for --out does not exist", hint="create it first")
    replaceable = force or resume is not None
    if out.exists() and not replaceable:
        raise UsageError(f"{out} exists", hint="pass --force to replace it, or --out another file")
    if refs_out is not None:
        refs = Path(refs_out)
        if not refs.parent.is_dir():
            raise UsageError(f"folder {refs.parent} for --refs-out does not exist", hint="create it first")
        if refs.exists() and not replaceable:
            raise UsageError(f"{refs} exists", hint="pass --force to replace it, or --refs-out another file")
    if resume is not None and not has_checkpoint(resume):
        raise UsageError(f"no training checkpoint in {resume}",
                         hint="give the checkpoint folder of an earlier run (default: <out>.checkpoints)")


def train_embedding(config: TrainConfig, *, on_epoch: EpochCallback | None = None,
                    on_step: StepCallback | None = None,
                    on_epoch_start: EpochStartCallback | None = None) -> TrainResult:
    """Learn the attribution embedding with ProxyNCA++; write the best network (and references)."""
    if config.crop < 1:
        raise UsageError(f"--crop must be positive, got {config.crop}")
    schedule = config.schedule()
    distance = get_distance(config.distance)
    check_output_paths(config.out, refs_out=config.refs_out, force=config.force, resume=config.resume)
    workers = default_workers() if config.workers is None else config.workers
    with distributed(config.device) as ctx:
        seed_everything(config.seed)
        data = load_data(config)
        if config.refs_out is not None:
            for name in data.train.class_names:
                validate_name(name)
        network = build_network(arch=config.arch, arch_kwargs=config.arch_kwargs,
                                embedding_dim=config.embedding_dim, init=config.init, crop=config.crop)
        model = network.model
        train, val = data.train, data.val
        n_known = len(train.class_names)
        expander = None
        if config.open_space_aug is not None:
            if config.resume is not None or ctx.is_distributed:
                raise UsageError("--open-space-aug works in a single process and cannot --resume",
                                 hint="its augmentation models are not checkpointed; start the run afresh")
            expander = OpenSpaceExpander(ProgressiveAugmenter(config.open_space_aug, ctx.device,
                                                              rng=random.Random(config.seed)), n_known)
        loss = ProxyNCAPlusPlus(n_known * (2 if expander is not None else 1), network.embedding_dim,
                                temperature=config.temperature, distance=distance)
        meta = WeightsMeta(architecture=network.architecture, embedding_dim=network.embedding_dim,
                           crop_size=config.crop, l2_normalize=True, arch_kwargs=dict(network.arch_kwargs))
        validator = None
        notes = list(data.notes)
        if val is not None:
            validator = CentroidValidator(reference_sample(train, config.val_refs_per_class, config.seed), val,
                                          meta, ctx.device, batch_size=config.batch_size, workers=workers,
                                          mixed_precision=config.mixed_precision)
        else:
            notes.append("no validation images: the last epoch's network is kept")
        dataset = data.dataset
        settings = LoopSettings(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                                workers=workers, mixed_precision=config.mixed_precision,
                                steps_per_epoch=config.steps_per_epoch, weight_decay=config.weight_decay,
                                loss_lr_factor=config.proxy_lr_factor,
                                checkpoint_dir=config.checkpoint_folder(), resume=config.resume is not None,
                                replace_checkpoint=config.force)
        fingerprint = {
            "task": "metric-learning", "architecture": network.architecture,
            "arch_kwargs": network.arch_kwargs, "embedding_dim": network.embedding_dim,
            "init_sha256": network.init_sha256, "classes": list(train.class_names),
            "train_files": files_digest(train), "val_files": files_digest(val),
            "val_refs_per_class": config.val_refs_per_class, "schedule": schedule.to_dict(),
            "proxy_lr_factor": config.proxy_lr_factor, "weight_decay": config.weight_decay,
            "batch_size": config.batch_size, "crop": config.crop, "temperature": config.temperature,
            "distance": config.distance, "seed": config.seed, "steps_per_epoch": config.steps_per_epoch,
            "world_size": ctx.world_size,
            "open_space_aug": None if config.open_space_aug is None else config.open_space_aug.to_dict(),
        }
        labels = train.labels
        result = fit(model, loss, dataset,
                     epoch_indices=lambda epoch: balanced_indices(labels, epoch_rng(config.seed, epoch)),
                     schedule=schedule, settings=settings, ctx=ctx, validate=validator,
                     fingerprint=fingerprint, on_step=on_step, on_epoch=on_epoch, on_epoch_start=on_epoch_start,
                     expander=expander)
        saved_meta, refs = None, None
        if ctx.is_main:
            model.load_state_dict(result.best_state)
            recipe = metric_recipe(config, network, schedule, data, ctx, workers)
            last = result.history[-1] if result.history else None
            metrics = {"val_accuracy": result.best_accuracy,
                       "best_epoch": None if result.best_epoch is None else result.best_epoch + 1,
                       "epochs_trained": len(result.history),
                       "train_loss_at_best": None if result.best_epoch is None else
                       next((h.loss for h in result.history if h.epoch == result.best_epoch), None),
                       "final_train_loss": None if last is None else last.loss,
                       "validation": "nearest-centroid accuracy on known generators (centre crops)"}
            meta = WeightsMeta(architecture=meta.architecture, embedding_dim=meta.embedding_dim,
                               crop_size=meta.crop_size, l2_normalize=True, arch_kwargs=meta.arch_kwargs,
                               recipe=recipe, metrics=metrics)
            saved_meta = save_weights(config.out, model, meta)
            if config.refs_out is not None:
                embedder = Embedder.from_file(config.out, device=str(ctx.device))
                store, failures = build_training_references(embedder, train, batch_size=config.batch_size,
                                                            workers=workers)
                store.save(config.refs_out)
                refs = Path(config.refs_out)
                if failures:
                    notes.append(f"{len(failures)} training image(s) could not be embedded for the "
                                 f"reference store: {', '.join(f.error or str(f.path) for f in failures[:3])}")
        ctx.barrier()
    return TrainResult(weights=Path(config.out), meta=saved_meta, best_accuracy=result.best_accuracy,
                       best_epoch=result.best_epoch, history=result.history, class_names=tuple(train.class_names),
                       n_train=len(train.paths), n_val=0 if val is None else len(val.paths),
                       skipped=data.skipped, refs=refs, checkpoint_dir=settings.checkpoint_dir,
                       resumed_from=result.resumed_from, notes=notes)


def metric_recipe(config: TrainConfig, network: Network, schedule: StepDecay, data: TrainingData,
                  ctx: DistContext, workers: int) -> dict:
    """Everything about how the weights were made, for their metadata."""
    train, val = data.train, data.val
    return {
        "stage": "metric-learning",
        "method": "Fang, Nguyen & Stamm, BMVC 2023: ProxyNCA++ embedding, nearest-centroid attribution",
        "loss": {"name": "ProxyNCA++", "reference": "Teh, DeVries & Taylor, ECCV 2020",
                 "temperature": config.temperature, "distance": config.distance,
                 "normalized": True, "positive_in_denominator": True},
        "optimizer": {"name": "AdamW", "weight_decay": config.weight_decay,
                      "proxy_lr_factor": config.proxy_lr_factor, "proxy_weight_decay": 0.0},
        "schedule": schedule.to_dict(),
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size,
        "world_size": ctx.world_size,
        "crop": config.crop,
        "augmentation": {"crop": "random, 8-aligned, no resampling",
                         "jpeg_qualities": list(JPEG_QUALITIES)},
        "sampling": "classes balanced by under-sampling to the smallest, every epoch",
        "open_space_augmentation": None if config.open_space_aug is None else {
            **config.open_space_aug.to_dict(),
            "as": "POSE augmentation models (one per epoch); augmented images of class i are class K+i "
                  "with their own ProxyNCA++ proxy (negatives only, never references)"},
        "seed": config.seed,
        "init": network.init_record,
        "data": {**data.description, "classes": list(train.class_names), "n_train": len(train.paths),
                 "n_val": 0 if val is None else len(val.paths), "n_skipped": len(data.skipped),
                 "train_files_sha256": files_digest(train), "val_files_sha256": files_digest(val)},
        "validation": {"rule": "nearest centroid (L2, normalised embeddings)", "crops": "centre",
                       "references": "training images", "max_references_per_class": config.val_refs_per_class},
        "device": str(ctx.device),
        "mixed_precision": bool(config.mixed_precision and ctx.device.type == "cuda"),
        "loader_workers": workers,
        "torch_version": torch.__version__,
        "osma_version": osma_cli.__version__,
        **source_commit(),
    }

