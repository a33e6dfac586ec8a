"""Choosing the rejection threshold tau.

``threshold_for_acceptance`` picks the smallest tau that accepts a target fraction of
known images (accept means ``score < tau``, so tau sits just above the accepted scores).

When a store is built from a folder, there are no held-out images yet. Scoring the
build images against references that contain them would be optimistic (each image pulls
its own centroid towards itself and inflates nothing of the spread). Instead each image is
scored *leave-one-out*: its own generator's centroid and spread are recomputed without
it, exactly, from the running sums. That gives a fair provisional tau until
``osma calibrate`` sets one from validation images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from osma_cli.defaults import DEFAULT_ACCEPTANCE
from osma_cli.errors import UsageError
from osma_cli.rules import OpenSetRule, get_rule


def threshold_for_acceptance(scores: np.ndarray, rate: float = DEFAULT_ACCEPTANCE) -> float:
    """Smallest tau with at least ``rate`` of ``scores`` strictly below it."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        raise UsageError("cannot choose a threshold from zero scores")
    if not 0.0 < rate <= 1.0:
        raise UsageError(f"acceptance rate must be in (0, 1], got {rate}")
    k = max(1, math.ceil(rate * s.size - 1e-9))
    return float(np.nextafter(s[k - 1], np.inf))


def leave_one_out_scores(embeddings: np.ndarray, labels: np.ndarray, rule: OpenSetRule | None = None) -> np.ndarray:
    """Each image's rejection score with its own image held out of its own reference.

    The rule's own held-out scheme (``OpenSetRule.held_out_scores``; Fang's by default):
    exact leave-one-out from running sums for ``fang`` and ``mahalanobis``. Images of
    generators too small to hold one out get NaN; callers drop them.
    """
    return (rule or get_rule()).held_out_scores(embeddings, labels)


def threshold_for_crr(unknown_scores: np.ndarray, target_crr: float) -> float:
    """Largest tau that still rejects at least ``target_crr`` of the unknown images.

    Rejected means ``score >= tau``. Allowing at most ``floor((1 - target) * n)`` unknowns
    below tau puts tau at that order statistic of the sorted unknown scores.
    """
    u = np.sort(np.asarray(unknown_scores, dtype=np.float64))
    if u.size == 0:
        raise UsageError(
            "--target-crr needs images of unknown generators", hint="add folders whose names are not known generators"
        )
    if not 0.0 < target_crr <= 1.0:
        raise UsageError(f"target CRR must be in (0, 1], got {target_crr}")
    allowed = math.floor((1.0 - target_crr) * u.size + 1e-9)
    if allowed >= u.size:
        return float(np.nextafter(u[-1], np.inf))
    return float(u[allowed])


def calibrate(
    known_scores: np.ndarray,
    unknown_scores: np.ndarray | None = None,
    *,
    acceptance: float | None = DEFAULT_ACCEPTANCE,
    target_crr: float | None = None,
) -> tuple[float, str, float]:
    """tau from validation scores: (tau, method, target) for one of the two targets."""
    if target_crr is not None:
        tau = threshold_for_crr(np.asarray(unknown_scores if unknown_scores is not None else []), target_crr)
        return tau, "target CRR on validation images of unknown generators", target_crr
    rate = DEFAULT_ACCEPTANCE if acceptance is None else acceptance
    return (
        threshold_for_acceptance(known_scores, rate),
        "acceptance rate on validation images of known generators",
        rate,
    )


@dataclass(frozen=True)
class CalibrationCost:
    """What a tau costs on the validation images it was chosen from (accept: ``score < tau``)."""

    acceptance: float | None
    """Fraction of the known generators' images accepted; None without any."""
    n_known: int
    crr: float | None
    """Correct-rejection rate: fraction of the unknown generators' images rejected; None without any."""
    n_unknown: int

    def to_dict(self) -> dict:
        return {"acceptance": self.acceptance, "n_known": self.n_known, "crr": self.crr, "n_unknown": self.n_unknown}


def cost_of(tau: float, known_scores: np.ndarray, unknown_scores: np.ndarray | None = None) -> CalibrationCost:
    """The acceptance rate on known images and the CRR on unknown ones at ``tau``."""
    known = np.asarray(known_scores, dtype=np.float64)
    unknown = np.asarray(unknown_scores if unknown_scores is not None else [], dtype=np.float64)
    return CalibrationCost(
        acceptance=float(np.mean(known < tau)) if known.size else None,
        n_known=int(known.size),
        crr=float(np.mean(unknown >= tau)) if unknown.size else None,
        n_unknown=int(unknown.size),
    )
