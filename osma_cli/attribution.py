"""The attribution rule (Fang et al.; README, "How it decides"), in one place, for both kinds of model.

A ``Scorer`` turns the per-image vectors a model gives into a candidate and a **rejection
score** (higher means more likely unknown) for each image; the decision is the same for
every model: accepted when ``score < tau``, otherwise *unknown*, with one ``tau`` for all
classes.

- Embedding models and descriptors, ``ReferenceScorer``: the reference store's rule
  (``osma_cli.rules``); by default Fang's: candidate ``S(x) = argmin_k d(h(x), r_k)`` with
  ``d`` the L2 distance to each reference's centroid, score ``s = d(h(x), r_S) / sigma_S``.
- Closed-set classifiers (POSE), ``ClassifierScorer``: the vector is the softmax over the
  classes the model was trained on; candidate ``argmax_k p_k``; score ``1 - max_k p_k``
  (POSE's "max softmax" confidence, turned into a rejection score). Per class, ``1 - p_k``
  plays the part of the normalized distance (``Candidate.distance`` and
  ``Candidate.normalized_distance`` both hold it), so top-k lists rank alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.references import ReferenceStore
from osma_cli.rules.base import ScoredBatch

# Fang's rule's functions are re-exported here: attribution's callers use them as its API.
from osma_cli.rules.fang import MIN_SIGMA, l2_distances, normalized_distances, score_embeddings  # noqa: F401

UNKNOWN = "unknown"


def is_accepted(scores: np.ndarray | float, tau: float) -> np.ndarray:
    """The acceptance rule: strictly below the threshold."""
    return np.asarray(scores) < tau


@dataclass(frozen=True)
class Candidate:
    name: str
    distance: float
    normalized_distance: float


@dataclass(frozen=True)
class Attribution:
    """The verdict for one image and the evidence behind it."""

    verdict: str
    candidate: str
    score: float
    threshold: float
    top: tuple[Candidate, ...]

    @property
    def accepted(self) -> bool:
        return self.verdict != UNKNOWN

    @property
    def margin(self) -> float:
        """How far below the threshold the score is (negative: rejected)."""
        return self.threshold - self.score


class Scorer(Protocol):
    """Candidates and rejection scores from a model's per-image vectors."""

    names: list[str]
    score_name: str

    def score(self, vectors: np.ndarray) -> ScoredBatch: ...


class ReferenceScorer:
    """An embedding model's vectors against a reference store, by the store's rule."""

    def __init__(self, store: ReferenceStore) -> None:
        if len(store) == 0:
            raise ReferenceStoreError(
                "the reference store holds no generators", hint="enroll generators with `osma enroll` or `osma build`"
            )
        self.store = store
        self.names = store.names
        self.score_name = store.rule.score_name
        self._fitted = store.fitted_rule()

    def score(self, vectors: np.ndarray) -> ScoredBatch:
        return self._fitted.score(vectors)


class ClassifierScorer:
    """A classifier's class probabilities: candidate arg max, score 1 - max softmax."""

    score_name = "1 - max softmax"

    def __init__(self, class_names: Sequence[str]) -> None:
        if len(class_names) < 2:
            raise UsageError("a classifier needs at least 2 classes")
        self.names = list(class_names)

    def score(self, vectors: np.ndarray) -> ScoredBatch:
        return score_probabilities(vectors)


def score_probabilities(probabilities: np.ndarray) -> ScoredBatch:
    """The classifier rule on a batch of (N, K) class probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise UsageError(f"class probabilities must be (N, K), got shape {p.shape}")
    per_class = 1.0 - p
    candidates = p.argmax(axis=1)
    scores = per_class[np.arange(len(candidates)), candidates]
    return ScoredBatch(candidates=candidates, scores=scores, distances=per_class, normalized=per_class)


def as_scorer(source: ReferenceStore | Scorer) -> Scorer:
    """A scorer from a reference store (or the scorer itself)."""
    return ReferenceScorer(source) if isinstance(source, ReferenceStore) else source


def check_tau(value: float, *, nonnegative_scores: bool = True) -> float:
    """A usable tau: finite, and positive where the scores cannot be negative."""
    if not np.isfinite(value) or (nonnegative_scores and value <= 0):
        kind = "a positive" if nonnegative_scores else "a finite"
        raise UsageError(f"--threshold must be {kind} number, got {value}")
    return float(value)


def resolve_threshold(store, override: float | None) -> float | dict[str, float]:
    """``--threshold`` if given, else the store's calibrated tau.

    For a store with compression regimes (``RegimeStores``): each regime's name -> its tau
    (``--threshold`` then applies to every regime).
    """
    from osma_cli.regime_store import RegimeStores

    if isinstance(store, RegimeStores):
        return {name: _single_threshold(single, override) for name, single in store.stores.items()}
    return _single_threshold(store, override)


def _single_threshold(store: ReferenceStore, override: float | None) -> float:
    if override is not None:
        return check_tau(override, nonnegative_scores=store.rule.nonnegative_scores)
    if store.threshold is None:
        raise ReferenceStoreError(
            "the reference store has no threshold", hint="pass --threshold, or calibrate it with `osma calibrate`"
        )
    return store.threshold.value


def attribute_embeddings(
    embeddings: np.ndarray, store: ReferenceStore | Scorer, *, threshold: float, top_k: int = 1
) -> list[Attribution]:
    """Verdicts for a batch of per-image vectors: against every reference in a store, or a classifier's."""
    if top_k < 1:
        raise UsageError(f"--top must be at least 1, got {top_k}")
    scorer = as_scorer(store)
    names = scorer.names
    batch = scorer.score(embeddings)
    accepted = is_accepted(batch.scores, threshold)
    k = min(top_k, len(names))
    order = np.argsort(batch.distances, axis=1, kind="stable")[:, :k]
    results = []
    for i, cand in enumerate(batch.candidates):
        top = tuple(Candidate(names[j], float(batch.distances[i, j]), float(batch.normalized[i, j])) for j in order[i])
        results.append(
            Attribution(
                verdict=names[cand] if accepted[i] else UNKNOWN,
                candidate=names[cand],
                score=float(batch.scores[i]),
                threshold=float(threshold),
                top=top,
            )
        )
    return results
