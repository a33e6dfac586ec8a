"""The library facade: what each command does, as functions tests and pipelines call.

Each function takes an ``Embedder`` (weights on a device) and paths, and returns typed
results; none prints. The CLI parses arguments, calls one of these and renders the result.

The ``Embedder`` may hold either kind of model. Attribution and calibration work with both
(``scorer_for``: a reference store for an embedding model, the model's own softmax for a
closed-set classifier); building and enrolling references need an embedding model and refuse
a classifier with the reason (``osma_cli.classifier``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from osma_cli.attribution import Attribution, ClassifierScorer, ReferenceScorer, Scorer, attribute_embeddings
from osma_cli.cache import EmbeddingCache, embed_with_cache
from osma_cli.calibration import DEFAULT_ACCEPTANCE, CalibrationCost
from osma_cli.classifier import require_embedding_model, save_classifier_threshold
from osma_cli.data import class_folders
from osma_cli.data.files import file_sha256
from osma_cli.embed import EmbeddedImage, Embedder, EmbedOptions
from osma_cli.enrolment import enroll_classes
from osma_cli.errors import DataError, ReferenceStoreError, TooFewReadable, UsageError
from osma_cli.home import refuse_shipped
from osma_cli.references import (
    MIN_IMAGES,
    GeneratorReference,
    ReferenceStore,
    Threshold,
    now_iso,
    open_store_for_update,
)
from osma_cli.regime_store import AnyStore, RegimeStores, each_store, load_store
from osma_cli.regimes import route_file
from osma_cli.rules import OpenSetRule

if TYPE_CHECKING:
    from osma_cli.detect_files import LoadedDetector
    from osma_cli.detection import Detection

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class HashedFiles:
    """Files to enrol with the sha256 of their bytes, and how many were already enrolled."""

    paths: list[Path]
    hashes: list[str | None]
    """None: the file could not be read (embedding will report it)."""
    already: int = 0
    """Left out: the same bytes are already enrolled in the generator (not embedded again)."""


def hash_new_files(paths: Sequence[Path], known: Collection[str] = ()) -> HashedFiles:
    """Hash ``paths``, leaving out those whose bytes are in ``known``.

    Files repeating one another are kept here and dropped after embedding
    (``drop_repeats``), so that each unreadable file is still reported by name.
    """
    keep, hashes, already = [], [], 0
    for path in paths:
        digest = file_sha256(path)
        if digest is not None and digest in known:
            already += 1
            continue
        keep.append(Path(path))
        hashes.append(digest)
    return HashedFiles(paths=keep, hashes=hashes, already=already)


def drop_repeats(
    good: list[EmbeddedImage], digests: list[str], groups: Sequence[int] | np.ndarray | None = None
) -> tuple[list[EmbeddedImage], list[str], int]:
    """Keep the first of embedded images with the same bytes (within the same ``groups`` value)."""
    seen, kept, kept_digests = set(), [], []
    for i, (item, digest) in enumerate(zip(good, digests)):
        key = (None if groups is None else int(groups[i]), digest)
        if key in seen:
            continue
        seen.add(key)
        kept.append(item)
        kept_digests.append(digest)
    return kept, kept_digests, len(good) - len(kept)


def embed_hashed(
    embedder: Embedder,
    files: HashedFiles,
    *,
    options: EmbedOptions,
    on_progress: ProgressCallback | None,
    cache: EmbeddingCache | None = None,
) -> tuple[list[EmbeddedImage], list[str], list[EmbeddedImage]]:
    """(embedded images, their hashes, failures) in input order, through ``cache`` when given.

    A file that embedded but could not be hashed is a failure: its provenance is unknown.
    """
    good: list[EmbeddedImage] = []
    digests: list[str] = []
    failures: list[EmbeddedImage] = []
    for item in embed_with_cache(embedder, files.paths, cache, on_progress=on_progress, **options.kwargs()):
        digest = files.hashes[item.index]
        if not item.ok:
            failures.append(item)
        elif digest is None:
            failures.append(
                EmbeddedImage(
                    index=item.index,
                    path=item.path,
                    embedding=None,
                    error="could not be read to compute its sha256",
                    warnings=item.warnings,
                )
            )
        else:
            good.append(item)
            digests.append(digest)
    return good, digests, failures


@dataclass
class BuildResult:
    store: AnyStore
    failures: list[EmbeddedImage] = field(default_factory=list)
    repeated: int = 0
    """Files left out because a generator's folder already holds the same bytes."""
    damaged: list[EmbeddedImage] = field(default_factory=list)
    """Files used although they carry warnings (damage that still decoded; see ``decode``)."""


def build_references(
    embedder: Embedder,
    root: Path | str,
    *,
    options: EmbedOptions = EmbedOptions(),
    acceptance: float = DEFAULT_ACCEPTANCE,
    rule: OpenSetRule | None = None,
    cache: EmbeddingCache | None = None,
    on_progress: ProgressCallback | None = None,
    command: str | None = None,
) -> BuildResult:
    """References from a folder tree (one sub-folder per generator), with a provisional tau.

    ``rule`` is the store's scoring rule (default: the one the weights recommend, else ``fang``).
    For a model with JPEG regimes the store holds one store per regime (``RegimeStores``),
    each built from the images re-encoded for its regime, each with its provisional tau.
    Each image's sha256 is recorded (provenance), and a file whose bytes repeat another's
    in the same folder is counted once. ``command`` is recorded in the history. With
    ``cache``, features already computed for these files are reused: rebuilding the
    references of a refitted descriptor describes no image again.

    Fails before embedding anything when a generator folder holds fewer than two image
    files, and after embedding when fewer than two distinct ones could be read: a reference
    store must not silently lack a generator the user asked for.
    """
    require_embedding_model(embedder.meta, "build a reference store")
    folders = class_folders(root)
    too_few = [name for name, files in folders.items() if len(files) < MIN_IMAGES]
    if too_few:
        raise DataError(
            f"{root}: generator folder(s) with fewer than {MIN_IMAGES} images: {', '.join(too_few)}",
            hint="add images or remove those folders",
        )
    names = list(folders)
    every = hash_new_files([p for files in folders.values() for p in files])
    labels = np.array([i for i, files in enumerate(folders.values()) for _ in files])
    progress = shared_progress(on_progress, len(embedder.regimes))
    built = {
        regime.name: _build_regime(
            embedder.for_regime(regime),
            root,
            names,
            every,
            labels,
            options=options,
            acceptance=acceptance,
            rule=rule,
            cache=cache,
            on_progress=progress,
            command=command,
        )
        for regime in embedder.regimes
    }
    first = next(iter(built.values()))[1]
    if embedder.is_routed:
        first.store = RegimeStores({name: single for name, (single, _) in built.items()})
    return first


def _build_regime(
    embedder: Embedder,
    root: Path | str,
    names: list[str],
    every: HashedFiles,
    labels: np.ndarray,
    *,
    options: EmbedOptions,
    acceptance: float,
    rule: OpenSetRule | None,
    cache: EmbeddingCache | None,
    on_progress: ProgressCallback | None,
    command: str | None,
) -> tuple[ReferenceStore, BuildResult]:
    """``build_references`` in the embedder's regime (the only one, for most models): its store,
    and the result holding it."""
    good, digests, failures = embed_hashed(embedder, every, options=options, on_progress=on_progress, cache=cache)
    good, digests, repeated = drop_repeats(good, digests, labels[[it.index for it in good]])
    good_labels = labels[[it.index for it in good]].astype(int)
    counts = np.bincount(good_labels, minlength=len(names))
    short = [
        f"{names[i]} ({counts[i]} readable{' distinct' if repeated else ''})"
        for i in range(len(names))
        if counts[i] < MIN_IMAGES
    ]
    if short:
        raise TooFewReadable(
            f"{root}: too few readable images for {', '.join(short)}",
            unreadable=_unreadable(failures),
            hint="fix or replace the unreadable files listed above",
        )
    store = ReferenceStore.for_weights(embedder.meta, rule)
    enroll_classes(
        store,
        names,
        np.stack([it.vector for it in good]),
        good_labels,
        acceptance=acceptance,
        images="build images",
        image_sha256=digests,
        command=command,
    )
    return store, BuildResult(store=store, failures=failures, repeated=repeated, damaged=with_warnings(good))


def shared_progress(on_progress: ProgressCallback | None, passes: int) -> ProgressCallback | None:
    """A callback that reports ``passes`` passes over the same files as one pass (a regime each)."""
    if on_progress is None or passes == 1:
        return on_progress
    done = [0, 0]

    def advance(n: int) -> None:
        done[0] += n
        whole = done[0] // passes
        if whole > done[1]:
            on_progress(whole - done[1])
            done[1] = whole

    return advance


def _unreadable(failures: Sequence[EmbeddedImage]) -> list[tuple[Path, str]]:
    return [(item.path, item.error or "") for item in failures]


@dataclass
class EnrollResult:
    reference: GeneratorReference
    n_added: int
    failures: list[EmbeddedImage]
    already: int = 0
    """Images left out because the same bytes are already enrolled in this generator."""
    repeated: int = 0
    """Files left out because their bytes repeat another given file."""
    damaged: list[EmbeddedImage] = field(default_factory=list)
    """Files enrolled although they carry warnings (damage that still decoded)."""


def with_warnings(items: Sequence[EmbeddedImage]) -> list[EmbeddedImage]:
    """The embedded files whose records carry warnings, for the commands to name them."""
    return [item for item in items if item.warnings]


def enroll_generator(
    embedder: Embedder,
    store_path: Path | str,
    name: str,
    paths: Sequence[Path],
    *,
    update: bool = False,
    options: EmbedOptions = EmbedOptions(),
    on_progress: ProgressCallback | None = None,
    command: str | None = None,
) -> EnrollResult:
    """Embed ``paths`` and add them to the store as generator ``name`` (no retraining).

    Each file's sha256 is recorded with the enrolment (``command`` and the time go into the
    history); a file whose bytes are already enrolled in ``name`` is left out and counted
    in ``already``, not enrolled twice. The store is checked before the (slow) hashing and
    embedding so a wrong name, model or store fails at once, and re-checked under the lock
    when the embeddings are added (a concurrent enrolment may have added the same images).
    With JPEG regimes the images are described once per regime (re-encoded for it) and
    enrolled in every regime's store in one write.
    """
    require_embedding_model(embedder.meta, "enroll a generator")
    store_path = Path(store_path)
    refuse_shipped(store_path)
    known: set[str] = set()
    if store_path.exists():
        store = load_store(store_path)
        store.check_weights(embedder.meta, store_path=store_path)
        primary = each_store(store)[0]
        clean = primary.check_enrollable(name, update=update)
        if clean in primary:
            known = set(primary.get(clean).image_sha256)
    files = hash_new_files(paths, known)
    if not files.paths and files.already:
        return EnrollResult(reference=primary.get(clean), n_added=0, failures=[], already=files.already)
    progress = shared_progress(on_progress, len(embedder.regimes))
    per_regime = {}
    for regime in embedder.regimes:
        good, digests, failures = embed_hashed(
            embedder.for_regime(regime), files, options=options, on_progress=progress
        )
        per_regime[regime.name] = (*drop_repeats(good, digests), failures)
    good, digests, repeated, failures = per_regime[embedder.regimes[0].name]
    if repeated and not update and len(good) < MIN_IMAGES and not failures:
        raise ReferenceStoreError(
            f"{name!r} needs at least {MIN_IMAGES} distinct images; the {len(paths)} given hold {len(good)}",
            hint="add other images of this generator",
        )
    if failures and (not good or (not update and len(good) < MIN_IMAGES)):
        raise TooFewReadable(
            f"only {len(good)} of {len(paths)} images of {name!r} could be read; "
            f"a generator needs at least {MIN_IMAGES}",
            unreadable=_unreadable(failures),
            hint="fix or replace the unreadable files listed above",
        )
    already = files.already
    with open_store_for_update(store_path, create_for=embedder.meta) as store:
        primary = each_store(store)[0]
        new = primary.new_images(name, digests)
        already += len(new) - sum(new)
        for regime, single in zip(embedder.regimes, each_store(store)):
            items, regime_digests = per_regime[regime.name][:2]
            if regime_digests != digests:
                raise DataError(
                    f"the images of {name!r} did not all decode alike in the {regime.name} "
                    "regime; nothing was enrolled",
                    hint="report this as a bug",
                )
            if any(new):
                keep = np.array(new, dtype=bool)
                embeddings = np.stack([it.vector for it in items])[keep]
                reference = single.enroll(
                    name,
                    embeddings,
                    update=update,
                    image_sha256=[d for d, n in zip(digests, new) if n],
                    command=command,
                )
            else:
                reference = single.get(single.check_enrollable(name, update=update))
        reference = primary.get(reference.name)
    return EnrollResult(
        reference=reference,
        n_added=sum(new),
        failures=failures,
        already=already,
        repeated=repeated,
        damaged=with_warnings(good),
    )


@dataclass(frozen=True)
class FileAttribution:
    """One input file's outcome: an attribution, or the reason it could not be read."""

    path: Path
    attribution: Attribution | None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    """Damage found in the file although it decoded: the attribution may be unreliable."""
    skipped: bool = False
    """Left out on purpose (``small="skip"``; ``error`` says why), not unreadable."""
    regime: str | None = None
    """The compression regime it was scored in, for a model with JPEG regimes (``osma_cli.regimes``)."""
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The vector it was scored with (in its regime's space), for callers that go on from it."""
    detection: Detection | None = None
    """The zero-shot detector's verdict, when attribution was chained after it (``attribute_detected``)."""

    @property
    def verdict(self) -> str | None:
        """The answer: ``real`` when the detector says so, else the attribution's (None: not attributed)."""
        if self.attribution is None:
            return None
        if self.detection is not None:
            from osma_cli.detection import REAL  # loaded already: the detection came from it

            if self.detection.verdict == REAL:
                return REAL
        return self.attribution.verdict

    @property
    def vector(self) -> np.ndarray:
        """``embedding`` of a file that has one (attributed); asking it of another file is a bug."""
        if self.embedding is None:
            raise ValueError(f"{self.path} has no embedding ({self.error or 'none kept'})")
        return self.embedding


def check_store(meta, store: AnyStore | None, *, store_path: Path | str | None = None) -> None:
    """Refuse a store a model cannot score against: any store for a classifier; for an
    embedding model none, one made with other weights, or one holding no generators."""
    if meta.is_classifier:
        if store is not None:
            raise ReferenceStoreError(
                "a classifier model does not use a reference store",
                hint="its classes come from its weights; leave the store out",
            )
        return
    if store is None:
        raise ReferenceStoreError(
            "an embedding model needs a reference store", hint="build one with `osma build`, or pass --refs"
        )
    store.check_weights(meta, store_path=store_path)
    if len(store) == 0:
        where = "" if store_path is None else f" {store_path}"
        raise ReferenceStoreError(
            f"the reference store{where} holds no generators",
            hint="enroll generators with `osma enroll` or `osma build`",
        )


def scorer_for(embedder: Embedder, store: AnyStore | None = None) -> Scorer:
    """How this model's vectors become candidates and rejection scores.

    A classifier scores by its own softmax (``store`` must be None); an embedding model
    against ``store``, which must have been made with the same weights (with regimes: the
    store of the embedder's regime). ``check_store`` says what is refused.
    """
    check_store(embedder.meta, store)
    if embedder.is_classifier:
        return ClassifierScorer(embedder.meta.class_names)
    assert store is not None, "check_store refuses no store for an embedding model"
    if isinstance(store, RegimeStores):
        store = store.store_for(embedder.regime)
    return ReferenceScorer(store)


CACHED_CHUNK = 1024
"""Files looked up in the embedding cache at a time when attributing through it."""


def attribute_files(
    embedder: Embedder,
    store: AnyStore | None,
    paths: Sequence[Path],
    *,
    threshold: float | Mapping[str, float],
    top_k: int = 1,
    options: EmbedOptions = EmbedOptions(),
    cache: EmbeddingCache | None = None,
    cached_only: bool = False,
    on_progress: ProgressCallback | None = None,
) -> Iterator[FileAttribution]:
    """Attribute files in order, streaming: bounded memory for any number of files.

    ``store`` is the reference store of an embedding model, None for a classifier. With
    JPEG regimes (``RegimeStores``), each file is scored in the regime of its compression
    and ``threshold`` maps each regime's name to its tau (one float: the same tau in every
    regime, as ``--threshold`` gives). With ``cache`` (``osma_cli.cache``),
    features computed before are reused and new ones kept, so re-scoring after an enrolment
    or with another tau describes nothing again; ``cached_only`` decodes nothing at all, and a
    file the cache lacks is a failure that says so.
    """
    if isinstance(store, RegimeStores):
        thresholds = threshold if isinstance(threshold, Mapping) else {name: float(threshold) for name in store.stores}
        yield from _attribute_routed(
            embedder,
            store,
            paths,
            thresholds=thresholds,
            top_k=top_k,
            options=options,
            cache=cache,
            cached_only=cached_only,
            on_progress=on_progress,
        )
        return
    if isinstance(threshold, Mapping):
        raise UsageError(
            "thresholds per regime need a reference store with JPEG regimes",
            hint="pass one threshold for a store without regimes",
        )
    scorer = scorer_for(embedder, store)
    stream = (
        embedder.embed_files(paths, on_progress=on_progress, **options.kwargs())
        if cache is None
        else _through_cache(embedder, paths, cache, cached_only=cached_only, options=options, on_progress=on_progress)
    )
    while chunk := list(itertools.islice(stream, max(1, options.batch_size))):
        good = [it for it in chunk if it.ok]
        verdicts = iter(
            attribute_embeddings(np.stack([it.vector for it in good]), scorer, threshold=threshold, top_k=top_k)
            if good
            else []
        )
        for item in chunk:
            if item.ok:
                yield FileAttribution(
                    path=item.path, attribution=next(verdicts), warnings=item.warnings, embedding=item.embedding
                )
            else:
                yield FileAttribution(
                    path=item.path, attribution=None, error=item.error, warnings=item.warnings, skipped=item.skipped
                )


def batch_granule(embedder: Embedder, options: EmbedOptions, cache: EmbeddingCache | None = None) -> int:
    """A run of ``attribute_files`` started at a multiple of this many files forms the same batches
    (and chunks) as one started at the first file, from there on.

    Floating-point results can depend on which images share a batch (a convolution's algorithm
    is picked per batch shape), so a resumed run restarts at such a multiple to give exactly the
    records of one uninterrupted run (``results_file``).
    """
    return granule_for(options.batch_size, routed=embedder.is_routed, cached=cache is not None)


def granule_for(batch_size: int, *, routed: bool, cached: bool = False) -> int:
    """``batch_granule`` from what it depends on: the batch size, routing, the cache."""
    granule = max(1, batch_size)
    if routed:
        granule = math.lcm(granule, ROUTED_CHUNK)
    if cached:
        granule = math.lcm(granule, CACHED_CHUNK)
    return granule


def _through_cache(
    embedder: Embedder,
    paths: Sequence[Path],
    cache: EmbeddingCache,
    *,
    cached_only: bool,
    options: EmbedOptions,
    on_progress: ProgressCallback | None,
) -> Iterator[EmbeddedImage]:
    """``embed_with_cache`` a chunk of files at a time: one cache lookup per chunk, bounded memory."""
    for start in range(0, len(paths), CACHED_CHUNK):
        yield from embed_with_cache(
            embedder,
            list(paths[start : start + CACHED_CHUNK]),
            cache,
            cached_only=cached_only,
            on_progress=on_progress,
            **options.kwargs(),
        )


def attribute_detected(
    embedder: Embedder,
    store: AnyStore | None,
    paths: Sequence[Path],
    *,
    detector: LoadedDetector,
    threshold: float | Mapping[str, float],
    top_k: int = 1,
    options: EmbedOptions = EmbedOptions(),
    cache: EmbeddingCache | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[FileAttribution]:
    """``attribute_files`` chained after the zero-shot detector (``osma detect``).

    A file the detector calls real is answered ``real`` (``FileAttribution.verdict``), whatever
    its nearest reference: a real photo is not forced into a generator's reference. The others
    keep their attribution, a known generator or unknown. Both verdicts are in the result.
    """
    from osma_cli.detect_files import detect_files

    detections = detect_files(
        detector, paths, batch_size=options.batch_size, workers=options.workers, max_pixels=options.max_pixels
    )
    attributions = attribute_files(
        embedder, store, paths, threshold=threshold, top_k=top_k, options=options, cache=cache, on_progress=on_progress
    )
    for attribution, detection in zip(attributions, detections):
        extra = tuple(w for w in detection.warnings if w not in attribution.warnings)
        yield dataclasses.replace(attribution, detection=detection.detection, warnings=attribution.warnings + extra)


ROUTED_CHUNK = 256
"""Files read ahead to group by regime: each group is one loader pass, started per chunk."""


def _attribute_routed(
    embedder: Embedder,
    store: RegimeStores,
    paths: Sequence[Path],
    *,
    thresholds: Mapping[str, float],
    top_k: int,
    options: EmbedOptions,
    cache: EmbeddingCache | None,
    cached_only: bool,
    on_progress: ProgressCallback | None,
) -> Iterator[FileAttribution]:
    """``attribute_files`` for a model with regimes: route each file by its header, keep the order."""
    members = {regime.name: embedder.for_regime(regime) for regime in embedder.regimes}
    regimes = {regime.name: regime for regime in embedder.regimes}
    for start in range(0, len(paths), ROUTED_CHUNK):
        chunk = list(paths[start : start + ROUTED_CHUNK])
        routed = [route_file(path, embedder.regimes) for path in chunk]
        results: dict[int, FileAttribution] = {}
        for name, member in members.items():
            mine = [i for i, (regime, _) in enumerate(routed) if regime.name == name]
            if not mine:
                continue
            items = attribute_files(
                member,
                store.store_for(regimes[name]),
                [chunk[i] for i in mine],
                threshold=thresholds[name],
                top_k=top_k,
                options=options,
                cache=cache,
                cached_only=cached_only,
                on_progress=on_progress,
            )
            for i, item in zip(mine, items):
                note = routed[i][1]
                results[i] = dataclasses.replace(item, regime=name, warnings=item.warnings + ((note,) if note else ()))
        for i in range(len(chunk)):
            yield results[i]


@dataclass
class CalibrationResult:
    threshold: Threshold
    known_folders: list[str]
    unknown_folders: list[str]
    failures: list[EmbeddedImage]
    written_to: Path | None = None
    cost: CalibrationCost | None = None
    """The acceptance rate and CRR the new tau gives on the validation images."""
    old_threshold: Threshold | None = None
    """The tau it replaced (None: there was none)."""
    by_regime: dict[str, CalibrationResult] = field(default_factory=dict)
    """With JPEG regimes, each regime's result (this one is the lossless regime's)."""


def calibrate_references(
    embedder: Embedder,
    store_path: Path | str,
    root: Path | str,
    *,
    acceptance: float = DEFAULT_ACCEPTANCE,
    target_crr: float | None = None,
    options: EmbedOptions = EmbedOptions(),
    on_progress: ProgressCallback | None = None,
    command: str | None = None,
) -> CalibrationResult:
    """Set the store's tau from validation images in ``root`` (one folder per generator).

    Folders named after known generators are known images; any other folder holds images
    of unknown generators, used when the target is a correct-rejection rate. The change
    (old and new tau) is recorded in the store's history with ``command``. With JPEG regimes,
    each regime's tau comes from the images re-encoded for it (``by_regime``).
    """
    require_embedding_model(embedder.meta, "calibrate a reference store")
    refuse_shipped(store_path)
    store = load_store(store_path)
    store.check_weights(embedder.meta, store_path=store_path)
    progress = shared_progress(on_progress, len(embedder.regimes))
    chosen = {}
    for regime in embedder.regimes:
        member = embedder.for_regime(regime)
        chosen[regime.name] = _calibrated(
            member,
            scorer_for(member, store),
            root,
            acceptance=acceptance,
            target_crr=target_crr,
            options=options,
            on_progress=progress,
        )
    olds = {}
    with open_store_for_update(store_path, create_for=embedder.meta) as locked:
        for regime, single in zip(embedder.regimes, each_store(locked)):
            olds[regime.name] = single.threshold
            single.set_threshold(chosen[regime.name][0], command=command)
    results = {
        name: CalibrationResult(
            threshold=threshold,
            known_folders=known,
            unknown_folders=unknown,
            failures=failures,
            written_to=Path(store_path),
            cost=cost,
            old_threshold=olds[name],
        )
        for name, (threshold, known, unknown, failures, cost) in chosen.items()
    }
    first = next(iter(results.values()))
    if embedder.is_routed:
        first.by_regime = results
    return first


def calibrate_classifier(
    embedder: Embedder,
    root: Path | str,
    *,
    acceptance: float = DEFAULT_ACCEPTANCE,
    target_crr: float | None = None,
    options: EmbedOptions = EmbedOptions(),
    on_progress: ProgressCallback | None = None,
) -> CalibrationResult:
    """Set a classifier's tau (on 1 - max softmax) from validation images in ``root``.

    Folders named after the classifier's classes are known images, other folders unknown
    ones (as for a store). tau goes to the threshold file beside the weights
    (``osma_cli.classifier.threshold_path``), where ``osma attribute`` finds it.
    """
    if not embedder.is_classifier:
        raise UsageError("calibrate_classifier needs a classifier model; use calibrate_references")
    if embedder.weights_path is None:
        raise UsageError(
            "the classifier was not loaded from a file: there is nowhere to keep its threshold",
            hint="load it with Embedder.from_file",
        )
    from osma_cli.classifier import load_classifier_threshold
    from osma_cli.errors import OsmaError

    threshold, known, unknown, failures, cost = _calibrated(
        embedder,
        scorer_for(embedder),
        root,
        acceptance=acceptance,
        target_crr=target_crr,
        options=options,
        on_progress=on_progress,
    )
    try:
        old = load_classifier_threshold(embedder.weights_path, embedder.meta)
    except OsmaError:  # an unreadable old threshold file is replaced
        old = None
    written = save_classifier_threshold(embedder.weights_path, embedder.meta, threshold)
    return CalibrationResult(
        threshold=threshold,
        known_folders=known,
        unknown_folders=unknown,
        failures=failures,
        written_to=written,
        cost=cost,
        old_threshold=old,
    )


def _calibrated(
    embedder: Embedder,
    scorer: Scorer,
    root: Path | str,
    *,
    acceptance: float,
    target_crr: float | None,
    options: EmbedOptions,
    on_progress: ProgressCallback | None,
) -> tuple[Threshold, list[str], list[str], list[EmbeddedImage], CalibrationCost]:
    """tau from the scores of the validation images in ``root``, known folders told by name,
    and what it costs on them (``CalibrationCost``)."""
    from osma_cli.calibration import calibrate, cost_of

    folders = class_folders(root)
    known = [n for n in folders if n in scorer.names]
    unknown = [n for n in folders if n not in scorer.names]
    if not known:
        raise DataError(
            f"{root}: no folder is named after a known generator",
            hint=f"known generators: {', '.join(scorer.names) or '(none)'}",
        )
    paths = [p for n in known + unknown for p in folders[n]]
    is_unknown = np.array([n in unknown for n in known + unknown for _ in folders[n]], dtype=bool)
    embeddings, failures = [], []
    ok_unknown = []
    for item in embedder.embed_files(paths, on_progress=on_progress, **options.kwargs()):
        if item.ok:
            embeddings.append(item.vector)
            ok_unknown.append(is_unknown[item.index])
        else:
            failures.append(item)
    if not embeddings:
        raise TooFewReadable(
            f"{root}: no readable validation images",
            unreadable=_unreadable(failures),
            hint="fix or replace the unreadable files listed above",
        )
    ok_unknown_arr = np.array(ok_unknown, dtype=bool)
    scores = scorer.score(np.stack(embeddings)).scores
    tau, method, target = calibrate(
        scores[~ok_unknown_arr], scores[ok_unknown_arr], acceptance=acceptance, target_crr=target_crr
    )
    used = int((ok_unknown_arr if target_crr is not None else ~ok_unknown_arr).sum())
    threshold = Threshold(value=tau, method=f"{method} ({root})", target=target, n_images=used, chosen=now_iso())
    cost = cost_of(tau, scores[~ok_unknown_arr], scores[ok_unknown_arr])
    return threshold, known, unknown, failures, cost
