"""What an open-set scoring rule is: statistics per generator in, candidates and scores out.

A rule is a named, registered part of a reference store (``ReferenceStore.rule``). It says
which running statistics it needs per generator (``requires``), turns a store's statistics
into a ``FittedRule`` that scores batches of vectors, and gives held-out scores of a build's
own images so that ``osma build`` can set a fair provisional tau. Every rule keeps the same
decision: the candidate is the generator with the lowest per-generator score, the image is
accepted when that score is below tau, else *unknown*; one tau for all generators.

Statistics a store can keep per generator (all float64, all exactly incremental: enrolling
images later adds to them, so a store built in steps equals one built at once):

- always: the count ``n``, the vector sum ``s = sum h`` and the squared-norm sum
  ``q = sum ||h||^2``;
- ``"second_moment"``: ``M = sum h h^T`` (D x D);
- ``"vectors"``: the vectors themselves, in enrolment order (a mixture is refitted from
  them, deterministically, whenever the store is scored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from osma_cli.errors import ReferenceStoreError

STATISTICS = ("second_moment", "vectors")
"""Optional per-generator statistics a rule may require (``OpenSetRule.requires``)."""


@dataclass(frozen=True)
class ScoredBatch:
    """Candidates and rejection scores for a batch, as arrays (for verdicts and metrics).

    ``distances`` (N, K) ranks the generators for each image (the candidate is its arg min)
    and ``normalized`` (N, K) holds the per-generator score compared with tau; ``scores`` is
    ``normalized`` at the candidate. For Fang's rule the two matrices differ (raw and
    normalized L2 distance); for the other rules they are the same matrix.
    """

    candidates: np.ndarray
    scores: np.ndarray
    distances: np.ndarray
    normalized: np.ndarray

    @classmethod
    def from_matrix(cls, per_generator: np.ndarray) -> ScoredBatch:
        """Candidate and score from one (N, K) matrix that both ranks and is compared with tau."""
        m = np.asarray(per_generator, dtype=np.float64)
        candidates = m.argmin(axis=1)
        return cls(candidates=candidates, scores=m[np.arange(len(candidates)), candidates], distances=m, normalized=m)


class GeneratorStats(Protocol):
    """The per-generator statistics a reference store keeps (``GeneratorReference``)."""

    name: str
    count: int
    vector_sum: np.ndarray
    sq_norm_sum: float
    second_moment: np.ndarray | None
    vectors: np.ndarray | None


class FittedRule(Protocol):
    """A rule fitted to a store's generators, ready to score vectors."""

    def score(self, vectors: np.ndarray) -> ScoredBatch: ...


class OpenSetRule:
    """Base of the registered rules; subclasses set the class attributes and three methods."""

    name: ClassVar[str] = ""
    score_name: ClassVar[str] = ""
    """Short name of the per-generator score, for table headers."""
    meaning: ClassVar[str] = ""
    """One sentence saying what the score measures and which way is 'more unknown'."""
    requires: ClassVar[frozenset[str]] = frozenset()
    nonnegative_scores: ClassVar[bool] = True
    """Whether scores are never negative (then tau must be positive)."""

    def params(self) -> dict:
        """The rule's settings, JSON-able, saved with the store (``get_rule(name, **params)``)."""
        return {}

    def spec(self) -> dict:
        return {"name": self.name, "params": self.params()}

    def fit(self, generators: Sequence[GeneratorStats]) -> FittedRule:
        raise NotImplementedError

    def held_out_scores(self, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each build image's score with itself left out of what it is scored against.

        NaN where a generator has too few images to leave one out; callers drop those.
        """
        raise NotImplementedError

    def held_out_method(self) -> str:
        return "leave-one-out"

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({settings})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpenSetRule) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params().items()))))


def require_generators(generators: Sequence[GeneratorStats]) -> None:
    if not generators:
        raise ReferenceStoreError(
            "the reference store holds no generators", hint="enroll generators with `osma enroll` or `osma build`"
        )


def class_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct labels, each row's position among them)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    return classes, np.searchsorted(classes, labels)
