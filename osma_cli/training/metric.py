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

The data come from ``data.load_data``, the configuration is ``config.TrainConfig``, the
step is ``step.LossStep``, validation is ``validation.CentroidValidator`` (it embeds through
``Embedder.embed_files``, the same crops, batching and normalisation as ``osma attribute``,
so the accuracy it reports is the one the tool will have).
"""

from __future__ import annotations

import random
from pathlib import Path

from osma_cli.calibration import DEFAULT_ACCEPTANCE
from osma_cli.data import default_workers
from osma_cli.data.training_sets import LabeledFiles, balanced_indices
from osma_cli.embed import EmbeddedImage, Embedder
from osma_cli.enrolment import enroll_classes
from osma_cli.errors import UsageError
from osma_cli.references import ReferenceStore, validate_name
from osma_cli.runtime import seed_everything
from osma_cli.training.config import TrainConfig, TrainResult, check_output_paths
from osma_cli.training.data import TrainingData, files_digest, load_data, reference_sample
from osma_cli.training.distributed import DistContext, distributed
from osma_cli.training.loop import EpochCallback, EpochStartCallback, StepCallback, epoch_rng, fit
from osma_cli.training.losses import ProxyNCAPlusPlus, get_distance
from osma_cli.training.network import Network, build_network
from osma_cli.training.pose_aug import OpenSpaceExpander, ProgressiveAugmenter
from osma_cli.training.provenance import environment
from osma_cli.training.schedule import StepDecay
from osma_cli.training.step import LossStep
from osma_cli.training.validation import CentroidValidator, embed_labeled
from osma_cli.weights import WeightsMeta, save_weights

# --------------------------------------------------------------------------- references


def build_training_references(
    embedder: Embedder, files: LabeledFiles, *, batch_size: int, workers: int, acceptance: float = DEFAULT_ACCEPTANCE
) -> tuple[ReferenceStore, list[EmbeddedImage]]:
    """A reference store of the training classes (as ``osma build`` makes one, provisional tau)."""
    embeddings, labels, failures = embed_labeled(embedder, files, batch_size=batch_size, workers=workers)
    store = ReferenceStore.for_weights(embedder.meta)
    enroll_classes(
        store, files.class_names, embeddings, labels, acceptance=acceptance, images="training images", event=None
    )
    return store, failures


# --------------------------------------------------------------------------- the run


def train_embedding(
    config: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
    on_epoch_start: EpochStartCallback | None = None,
) -> TrainResult:
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
        network = build_network(
            arch=config.arch,
            arch_kwargs=config.arch_kwargs,
            embedding_dim=config.embedding_dim,
            init=config.init,
            crop=config.crop,
        )
        model = network.model
        train, val = data.train, data.val
        n_known = len(train.class_names)
        expander = None
        if config.open_space_aug is not None:
            if config.resume is not None or ctx.is_distributed:
                raise UsageError(
                    "--open-space-aug works in a single process and cannot --resume",
                    hint="its augmentation models are not checkpointed; start the run afresh",
                )
            expander = OpenSpaceExpander(
                ProgressiveAugmenter(config.open_space_aug, ctx.device, rng=random.Random(config.seed)), n_known
            )
        loss = ProxyNCAPlusPlus(
            n_known * (2 if expander is not None else 1),
            network.embedding_dim,
            temperature=config.temperature,
            distance=distance,
        )
        meta = WeightsMeta(
            architecture=network.architecture,
            embedding_dim=network.embedding_dim,
            crop_size=config.crop,
            l2_normalize=True,
            arch_kwargs=dict(network.arch_kwargs),
        )
        validator = None
        notes = list(data.notes)
        if val is not None:
            validator = CentroidValidator(
                reference_sample(train, config.val_refs_per_class, config.seed),
                val,
                meta,
                ctx.device,
                batch_size=config.batch_size,
                workers=workers,
                mixed_precision=config.mixed_precision,
            )
        else:
            notes.append("no validation images: the last epoch's network is kept")
        dataset = data.dataset
        settings = config.loop_settings(workers)
        fingerprint = {
            "task": "metric-learning",
            "architecture": network.architecture,
            "arch_kwargs": network.arch_kwargs,
            "embedding_dim": network.embedding_dim,
            "init_sha256": network.init_sha256,
            "classes": list(train.class_names),
            "train_files": files_digest(train),
            "val_files": files_digest(val),
            "val_refs_per_class": config.val_refs_per_class,
            "schedule": schedule.to_dict(),
            "proxy_lr_factor": config.proxy_lr_factor,
            "weight_decay": config.weight_decay,
            "batch_size": config.batch_size,
            "crop": config.crop,
            "temperature": config.temperature,
            "distance": config.distance,
            "seed": config.seed,
            "steps_per_epoch": config.steps_per_epoch,
            "world_size": ctx.world_size,
            "open_space_aug": None if config.open_space_aug is None else config.open_space_aug.to_dict(),
        }
        if config.augment:
            fingerprint["augment"] = [p.spec for p in config.augment]
        labels = train.labels
        step = LossStep(
            model,
            loss,
            schedule,
            weight_decay=config.weight_decay,
            loss_lr_factor=config.proxy_lr_factor,
            mixed_precision=config.mixed_precision,
            expander=expander,
        )
        result = fit(
            step,
            dataset,
            epoch_indices=lambda epoch: balanced_indices(labels, epoch_rng(config.seed, epoch)),
            settings=settings,
            ctx=ctx,
            validate=validator,
            fingerprint=fingerprint,
            on_step=on_step,
            on_epoch=on_epoch,
            on_epoch_start=on_epoch_start,
        )
        saved_meta, refs = None, None
        if ctx.is_main:
            model.load_state_dict(result.best_state)
            recipe = metric_recipe(config, network, schedule, data, ctx, workers)
            last = result.history[-1] if result.history else None
            metrics = {
                "val_accuracy": result.best_accuracy,
                "best_epoch": None if result.best_epoch is None else result.best_epoch + 1,
                "epochs_trained": len(result.history),
                "train_loss_at_best": None
                if result.best_epoch is None
                else next((h.loss for h in result.history if h.epoch == result.best_epoch), None),
                "final_train_loss": None if last is None else last.loss,
                "validation": "nearest-centroid accuracy on known generators (centre crops)",
            }
            meta = WeightsMeta(
                architecture=meta.architecture,
                embedding_dim=meta.embedding_dim,
                crop_size=meta.crop_size,
                l2_normalize=True,
                arch_kwargs=meta.arch_kwargs,
                recipe=recipe,
                metrics=metrics,
            )
            saved_meta = save_weights(config.out, model, meta)
            if config.refs_out is not None:
                embedder = Embedder.from_file(config.out, device=str(ctx.device))
                store, failures = build_training_references(
                    embedder, train, batch_size=config.batch_size, workers=workers
                )
                store.save(config.refs_out)
                refs = Path(config.refs_out)
                if failures:
                    notes.append(
                        f"{len(failures)} training image(s) could not be embedded for the "
                        f"reference store: {', '.join(f.error or str(f.path) for f in failures[:3])}"
                    )
        ctx.barrier()
    return TrainResult(
        weights=Path(config.out),
        meta=saved_meta,
        best_accuracy=result.best_accuracy,
        best_epoch=result.best_epoch,
        history=result.history,
        class_names=tuple(train.class_names),
        n_train=len(train.paths),
        n_val=0 if val is None else len(val.paths),
        skipped=data.skipped,
        refs=refs,
        checkpoint_dir=settings.checkpoint_dir,
        resumed_from=result.resumed_from,
        notes=notes,
    )


def metric_recipe(
    config: TrainConfig, network: Network, schedule: StepDecay, data: TrainingData, ctx: DistContext, workers: int
) -> dict:
    """Everything about how the weights were made, for their metadata."""
    train, val = data.train, data.val
    return {
        "stage": "metric-learning",
        "method": "Fang, Nguyen & Stamm, BMVC 2023: ProxyNCA++ embedding, nearest-centroid attribution",
        "loss": {
            "name": "ProxyNCA++",
            "reference": "Teh, DeVries & Taylor, ECCV 2020",
            "temperature": config.temperature,
            "distance": config.distance,
            "normalized": True,
            "positive_in_denominator": True,
        },
        "optimizer": {
            "name": "AdamW",
            "weight_decay": config.weight_decay,
            "proxy_lr_factor": config.proxy_lr_factor,
            "proxy_weight_decay": 0.0,
        },
        "schedule": schedule.to_dict(),
        "epochs": config.epochs,
        "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size,
        "world_size": ctx.world_size,
        "crop": config.crop,
        "augmentation": config.train_transform().describe(),
        "sampling": "classes balanced by under-sampling to the smallest, every epoch",
        "open_space_augmentation": None
        if config.open_space_aug is None
        else {
            **config.open_space_aug.to_dict(),
            "as": "POSE augmentation models (one per epoch); augmented images of class i are class K+i "
            "with their own ProxyNCA++ proxy (negatives only, never references)",
        },
        "seed": config.seed,
        "init": network.init_record,
        "data": {
            **data.description,
            "classes": list(train.class_names),
            "n_train": len(train.paths),
            "n_val": 0 if val is None else len(val.paths),
            "n_skipped": len(data.skipped),
            "train_files_sha256": files_digest(train),
            "val_files_sha256": files_digest(val),
        },
        "validation": {
            "rule": "nearest centroid (L2, normalised embeddings)",
            "crops": "centre",
            "references": "training images",
            "max_references_per_class": config.val_refs_per_class,
        },
        **environment(ctx.device, workers, mixed_precision=config.mixed_precision),
    }
