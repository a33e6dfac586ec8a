"""The open-set protocol for one benchmark split, end to end.

1. references from the split's training images of the known generators;
2. tau from its validation images (95% of known images accepted by default), or, when the
   split has no validation images, from leave-one-out scores of the training images;
3. attribution of the closed-set test images and of the unknown-generator images;
4. every metric of ``osma_cli.evaluation.metrics``, overall and per unknown kind.

With a closed-set classifier (POSE) step 1 is the model's own training: it must have been
trained on the split's training images (its classes are matched to the split's known
classes by name, or by label for a model trained from the split's annotation files, whose
classes are named ``class0``, ``class1``, ...; the folders of each label's training images,
recorded in its recipe, must then be the split's). Steps 2 to 4 are the same, on the score
``1 - max softmax``; when the split has no validation images, tau comes from the training
images' scores (optimistic: the model has seen them). The run then has no reference store.

Embeddings go through the embedding cache, so a second run (another threshold, another
metric) embeds nothing. Unreadable files are reported and left out of the figures.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath

import numpy as np

from osma_cli.attribution import ClassifierScorer
from osma_cli.cache import EmbeddingCache, embed_with_cache
from osma_cli.calibration import DEFAULT_ACCEPTANCE, leave_one_out_scores, threshold_for_acceptance
from osma_cli.embed import EmbeddedImage, Embedder, EmbedOptions, split_embedded
from osma_cli.errors import DataError, UsageError
from osma_cli.evaluation.metrics import OpenSetReport, evaluate_open_set
from osma_cli.evaluation.sources import BenchmarkSplit, LabeledImage
from osma_cli.progress import ProgressFactory, no_progress
from osma_cli.projection import DEFAULT_PROJECTION, Projection, fit_projection
from osma_cli.projection_augment import augment_of, augmented_inputs
from osma_cli.references import MIN_IMAGES, ReferenceStore, Threshold, now_iso
from osma_cli.regime_store import RegimeStores
from osma_cli.regimes import Regime, route_file
from osma_cli.rules import OpenSetRule, ScoredBatch


@dataclass
class EmbeddedPart:
    """The readable images of one part of a split, with their embeddings."""

    images: list[LabeledImage]
    embeddings: np.ndarray
    failures: list[EmbeddedImage]


@dataclass
class BenchmarkRun:
    split: BenchmarkSplit
    store: ReferenceStore | RegimeStores | None
    """The references scored against (one store per regime when the test images were routed), None for a classifier."""
    threshold: Threshold
    test_images: list[LabeledImage]
    y_true: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    unknown_kind: np.ndarray
    report: OpenSetReport
    failures: list[EmbeddedImage] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    model_kind: str = "embedding"
    score_name: str = "normalized distance"
    regime: str | None = None
    """The compression regime the test images were scored in, for a model with JPEG regimes."""

    def to_dict(self) -> dict:
        return {
            "split": self.split.name,
            "source": self.split.source,
            "model_kind": self.model_kind,
            "score": self.score_name,
            "regime": self.regime,
            "classes": list(self.split.class_names),
            "threshold": self.threshold.to_dict(),
            "metrics": self.report.to_dict(),
            "counts": self.split.summary(),
            "unreadable_files": [f.error for f in self.failures],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def embed_part(
    embedder: Embedder,
    images: Sequence[LabeledImage],
    cache: EmbeddingCache | None,
    options: EmbedOptions,
    advance: Callable[[int], None],
    *,
    features_only: bool = False,
) -> EmbeddedPart:
    items = embed_with_cache(
        embedder,
        [im.path for im in images],
        cache,
        features_only=features_only,
        on_progress=advance,
        **options.kwargs(),
    )
    good, vectors, failures = split_embedded(items, embedder.feature_dim if features_only else embedder.embedding_dim)
    return EmbeddedPart(images=[images[it.index] for it in good], embeddings=vectors, failures=failures)


def run_benchmark(
    embedder: Embedder,
    split: BenchmarkSplit,
    *,
    options: EmbedOptions = EmbedOptions(),
    cache: EmbeddingCache | None = None,
    acceptance: float = DEFAULT_ACCEPTANCE,
    threshold: float | None = None,
    rule: OpenSetRule | None = None,
    refit_projection: bool = True,
    progress: ProgressFactory = no_progress,
) -> BenchmarkRun:
    """Run the whole protocol; ``threshold`` overrides the calibrated tau.

    ``rule`` scores the references (default: the one the weights recommend, else ``fang``).
    For a descriptor, ``refit_projection`` fits its projection on this split's own training
    images (seconds), so that no unknown generator of the split has shaped the space it is
    scored in; off, the projection saved in the weights is used.

    A model with JPEG regimes is run in the regimes its test images route to (``test_regimes``):
    each regime's references, tau and projection from the training and validation images
    re-encoded for it; a test set mixing compressions is scored relative to each regime's tau
    (``_report``).

    A closed-set classifier (POSE) is scored by its own classes instead of references
    (``_score_classifier``); the rest of the run is the same.
    """
    if embedder.is_classifier:
        return _report(
            split,
            [
                _score_classifier(
                    embedder,
                    split,
                    options=options,
                    cache=cache,
                    acceptance=acceptance,
                    threshold=threshold,
                    progress=progress,
                )
            ],
        )
    score_split = functools.partial(
        _score_split,
        options=options,
        cache=cache,
        acceptance=acceptance,
        threshold=threshold,
        rule=rule,
        refit_projection=refit_projection,
        progress=progress,
    )
    if not embedder.is_routed:
        return _report(split, [score_split(embedder, split)])
    groups = test_regimes(embedder, split)
    scored = [
        score_split(embedder.for_regime(regime), replace(split, test_known=known, test_unknown=unknown), regime=regime)
        for regime, (known, unknown) in groups.items()
    ]
    return _report(split, scored)


@dataclass
class _Scored:
    """One regime's part of a run: its references (none for a classifier) and tau, and the
    scores of its test images."""

    store: ReferenceStore | None
    threshold: Threshold
    score_name: str
    images: list[LabeledImage]
    candidates: np.ndarray
    scores: np.ndarray
    failures: list[EmbeddedImage]
    seconds: dict[str, float]
    regime: Regime | None = None
    model_kind: str = "embedding"


def _score_split(
    embedder: Embedder,
    split: BenchmarkSplit,
    *,
    options: EmbedOptions,
    cache: EmbeddingCache | None,
    acceptance: float,
    threshold: float | None,
    rule: OpenSetRule | None,
    refit_projection: bool,
    progress: ProgressFactory,
    regime: Regime | None = None,
) -> _Scored:
    """Steps 1-3 of the protocol in the embedder's one regime."""
    seconds: dict[str, float] = {}
    refit = refit_projection and embedder.is_descriptor
    parts = _embed_parts(
        embedder,
        split,
        ("train", "val", "test known", "test unknown"),
        cache,
        options,
        progress,
        seconds,
        features_only=refit,
    )

    train = parts["train"]
    labels = np.array([im.label for im in train.images], dtype=np.int64)
    if refit:
        features, fit_labels = _projection_rows(embedder, train, labels, cache, options, progress, seconds)
        start = time.perf_counter()
        parts = _projected(parts, fit_projection(features, fit_labels, **projection_settings(embedder.meta)))
        train = parts["train"]
        seconds["fit projection"] = time.perf_counter() - start
    store = ReferenceStore.for_weights(embedder.meta, rule)
    store.embedding_dim = train.embeddings.shape[1]
    for k, name in enumerate(split.class_names):
        mine = train.embeddings[labels == k]
        if len(mine) < MIN_IMAGES:
            raise DataError(
                f"{split.source}: known class {name!r} has {len(mine)} readable "
                f"training images; at least {MIN_IMAGES} are needed"
            )
        store.enroll(name, mine)
    tau = _calibrated_threshold(store, parts["val"], train, labels, acceptance)
    store.set_threshold(tau)
    if threshold is not None:
        tau = given_threshold(threshold)
        store.set_threshold(tau)
    images, candidates, scores = _test_scores(parts, store.fitted_rule().score)
    return _Scored(
        store=store,
        threshold=tau,
        score_name=store.rule.score_name,
        images=images,
        candidates=candidates,
        scores=scores,
        failures=[f for part in parts.values() for f in part.failures],
        seconds=seconds,
        regime=regime,
    )


def given_threshold(value: float) -> Threshold:
    """tau as the caller gave it (``--threshold``), in place of the calibrated one."""
    return Threshold(value=float(value), method="given with --threshold", chosen=now_iso())


def _test_scores(
    parts: dict[str, EmbeddedPart], score: Callable[[np.ndarray], ScoredBatch]
) -> tuple[list[LabeledImage], np.ndarray, np.ndarray]:
    """The readable test images (known, then unknown) with their candidates and scores."""
    known, unknown = parts["test known"], parts["test unknown"]
    images = known.images + unknown.images
    if not images:
        return images, np.zeros(0, np.int64), np.zeros(0)
    scored = score(np.concatenate([known.embeddings, unknown.embeddings]))
    return images, scored.candidates, scored.scores


def _report(split: BenchmarkSplit, scored: list[_Scored]) -> BenchmarkRun:
    """Step 4 over every regime's test images.

    With one regime, scores and tau are the store's. With several (a test set mixing
    compressions), each score is divided by its regime's tau, so that the verdicts stay
    each regime's and one threshold, 1, applies to all.
    """
    images = [im for part in scored for im in part.images]
    if not images:
        raise DataError(f"{split.source}: no readable test images")
    first = scored[0]
    store: ReferenceStore | RegimeStores | None
    if len(scored) == 1:
        scores, tau = first.scores, first.threshold
        score_name, store = first.score_name, first.store
    else:
        scores = np.concatenate([part.scores / part.threshold.value for part in scored])
        tau = Threshold(
            value=1.0, method="each regime's tau; scores divided by it", target=first.threshold.target, chosen=now_iso()
        )
        score_name = f"{first.score_name} / regime tau"
        store = RegimeStores(
            {part.regime.name: part.store for part in scored if part.regime is not None and part.store is not None}
        )
    candidates = np.concatenate([part.candidates for part in scored])
    y_true = np.array([im.label for im in images], dtype=np.int64)
    kinds = np.array([im.kind for im in images], dtype=object)
    report = evaluate_open_set(
        y_true, candidates, scores, len(split.class_names), tau.value, unknown_kind=kinds if any(kinds) else None
    )
    several = len(scored) > 1
    seconds = {
        (f"{key} ({part.regime.name})" if several and part.regime is not None else key): value
        for part in scored
        for key, value in part.seconds.items()
    }
    regimes = [part.regime.name for part in scored if part.regime is not None]
    return BenchmarkRun(
        split=split,
        store=store,
        threshold=tau,
        test_images=images,
        y_true=y_true,
        candidates=candidates,
        scores=scores,
        unknown_kind=kinds,
        report=report,
        failures=[f for part in scored for f in part.failures],
        seconds=seconds,
        model_kind=first.model_kind,
        score_name=score_name,
        regime=", ".join(regimes) or None,
    )


def test_regimes(
    embedder: Embedder, split: BenchmarkSplit
) -> dict[Regime, tuple[tuple[LabeledImage, ...], tuple[LabeledImage, ...]]]:
    """The test images (known, unknown) that route to each regime, by their own compression.

    A file that cannot be read routes to ``lossless``, whose decoding then reports it.
    """
    groups: dict[Regime, tuple[list[LabeledImage], list[LabeledImage]]] = {}
    for images, side in ((split.test_known, 0), (split.test_unknown, 1)):
        for image in images:
            regime, _ = route_file(image.path, embedder.regimes)
            groups.setdefault(regime, ([], []))[side].append(image)
    order = [r for r in embedder.regimes if r in groups] or [embedder.regimes[0]]
    return {r: (tuple(groups.get(r, ([], []))[0]), tuple(groups.get(r, ([], []))[1])) for r in order}


def _calibrated_threshold(
    store: ReferenceStore, val: EmbeddedPart, train: EmbeddedPart, train_labels: np.ndarray, acceptance: float
) -> Threshold:
    """tau for the target acceptance on validation images, else leave-one-out on training."""
    if len(val.images):
        scores = store.fitted_rule().score(val.embeddings).scores
        method = "acceptance rate on the split's validation images"
    else:
        scores = leave_one_out_scores(train.embeddings, train_labels, store.rule)
        scores = scores[np.isfinite(scores)]
        method = f"acceptance rate on {store.rule.held_out_method()} scores of the training images (no validation part)"
    return Threshold(
        value=threshold_for_acceptance(scores, acceptance),
        method=method,
        target=acceptance,
        n_images=int(len(scores)),
        chosen=now_iso(),
    )


def projection_settings(meta) -> dict:
    """How a descriptor's projection is fitted: its recipe's settings, else the default ones."""
    saved = dict(meta.recipe.get("projection") or DEFAULT_PROJECTION)
    saved.pop("fitted", None)
    return saved


def _projection_rows(
    embedder: Embedder,
    train: EmbeddedPart,
    labels: np.ndarray,
    cache: EmbeddingCache | None,
    options: EmbedOptions,
    progress: ProgressFactory,
    seconds: dict[str, float],
) -> tuple[np.ndarray, np.ndarray]:
    """The rows a descriptor's projection is refitted on: the training images' raw features,
    then those of each perturbed copy the weights' recipe names (``osma_cli.projection_augment``)."""
    augment = augment_of(embedder.meta.recipe)
    if not augment:
        return train.embeddings.astype(np.float64), labels
    copies, _ = augmented_inputs([im.path for im in train.images], labels, augment)
    images = [replace(im, path=path) for im, path in zip(train.images * len(augment), copies)]
    start = time.perf_counter()
    with progress(f"embedding train copies ({', '.join(p.spec for p in augment)})", len(images)) as advance:
        part = embed_part(embedder, images, cache, options, advance, features_only=True)
    seconds["embed train copies"] = time.perf_counter() - start
    return (
        np.concatenate([train.embeddings, part.embeddings]).astype(np.float64),
        np.concatenate([labels, np.array([im.label for im in part.images], dtype=np.int64)]),
    )


def _projected(parts: dict[str, EmbeddedPart], projection: Projection) -> dict[str, EmbeddedPart]:
    return {
        name: EmbeddedPart(
            images=part.images, embeddings=projection.apply(part.embeddings.astype(np.float64)), failures=part.failures
        )
        for name, part in parts.items()
    }


def _embed_parts(
    embedder: Embedder,
    split: BenchmarkSplit,
    names: Sequence[str],
    cache: EmbeddingCache | None,
    options: EmbedOptions,
    progress: ProgressFactory,
    seconds: dict[str, float],
    features_only: bool = False,
) -> dict[str, EmbeddedPart]:
    images_of = {
        "train": split.train,
        "val": split.val,
        "test known": split.test_known,
        "test unknown": split.test_unknown,
    }
    parts: dict[str, EmbeddedPart] = {}
    for name in names:
        images = images_of[name]
        start = time.perf_counter()
        with progress(f"embedding {name}", len(images)) as advance:
            parts[name] = embed_part(embedder, images, cache, options, advance, features_only=features_only)
        seconds[f"embed {name}"] = time.perf_counter() - start
    return parts


def classifier_class_order(
    model_classes: Sequence[str], split: BenchmarkSplit, label_folders: Sequence[str | None] | None = None
) -> np.ndarray:
    """For each of the model's classes, the split's label of that class.

    By name when the two sets of names agree; by label when the model was trained from
    annotation files (classes ``class0`` ... ``class{K-1}``, labels as the split's). Then
    ``label_folders`` (the recipe's, see ``LabeledFiles.label_folders``) must agree with the
    folders of the split's images of each label: every split of a benchmark has as many
    labels, but label k is not the same generator in all of them.
    """
    split_names = list(split.class_names)
    if sorted(model_classes) == sorted(split_names):
        return np.array([split_names.index(n) for n in model_classes], dtype=np.int64)
    by_label = [f"class{k}" for k in range(len(split_names))]
    if list(model_classes) == by_label:
        _check_label_folders(label_folders, split)
        return np.arange(len(split_names), dtype=np.int64)
    raise UsageError(
        f"the classifier's classes do not match {split.name}'s known classes",
        hint=f"the model knows {', '.join(model_classes[:6])}"
        f"{' ...' if len(model_classes) > 6 else ''}; the split's are "
        f"{', '.join(split_names[:6])}{' ...' if len(split_names) > 6 else ''}. "
        "A closed-set classifier can only be benchmarked on the split it was trained "
        "on: train it with `osma train --method pose` on that split's training images",
    )


def _check_label_folders(label_folders: Sequence[str | None] | None, split: BenchmarkSplit) -> None:
    """Refuse a classifier whose label k held images of other folders than the split's label k."""
    if not label_folders:
        return  # weights from before osma recorded them
    for k, (name, trained) in enumerate(zip(split.class_names, label_folders)):
        paths = [os.path.dirname(os.path.normpath(im.path)) for im in split.train if im.label == k]
        if trained is None or not paths:
            continue
        tail = PurePath(trained).parts
        if PurePath(os.path.commonpath(paths)).parts[-len(tail) :] != tail:
            raise UsageError(
                f"the classifier was trained on other images than {split.name}'s: its class{k} "
                f"was trained on {trained}, but the split's label {k} ({name}) holds the "
                f"images of {os.path.commonpath(paths)}",
                hint="a classifier trained from annotation files can only be benchmarked on the "
                "split whose training files it was trained on",
            )


def _score_classifier(
    embedder: Embedder,
    split: BenchmarkSplit,
    *,
    options: EmbedOptions,
    cache: EmbeddingCache | None,
    acceptance: float,
    threshold: float | None,
    progress: ProgressFactory,
) -> _Scored:
    """Steps 1-3 for a closed-set classifier: its own classes, tau on 1 - max softmax."""
    order = classifier_class_order(
        embedder.meta.class_names, split, embedder.meta.recipe.get("data", {}).get("label_folders")
    )
    scorer = ClassifierScorer(embedder.meta.class_names)
    seconds: dict[str, float] = {}
    names = ["val", "test known", "test unknown"] if split.val else ["train", "test known", "test unknown"]
    parts = _embed_parts(embedder, split, names, cache, options, progress, seconds)
    calibration = parts["val"] if split.val else parts["train"]
    if not len(calibration.images):
        raise DataError(f"{split.source}: no readable validation or training images to choose tau from")
    method = (
        "acceptance rate on the split's validation images"
        if split.val
        else "acceptance rate on the split's training images (no validation part; optimistic)"
    )
    chosen = Threshold(
        value=threshold_for_acceptance(scorer.score(calibration.embeddings).scores, acceptance),
        method=method,
        target=acceptance,
        n_images=len(calibration.images),
        chosen=now_iso(),
    )
    if threshold is not None:
        chosen = given_threshold(threshold)
    images, candidates, scores = _test_scores(parts, scorer.score)
    return _Scored(
        store=None,
        threshold=chosen,
        score_name=scorer.score_name,
        images=images,
        candidates=order[candidates],
        scores=scores,
        failures=[f for part in parts.values() for f in part.failures],
        seconds=seconds,
        model_kind="classifier",
    )
