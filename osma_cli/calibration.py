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

import numpy as np

from osma_cli.attribution import l2_distances, normalized_distances
from osma_cli.errors import UsageError
from osma_cli.references import reference_spread

DEFAULT_ACCEPTANCE = 0.95


def threshold_for_acceptance(scores: np.ndarray, rate: float = DEFAULT_ACCEPTANCE) -> float:
    """Smallest tau with at least ``rate`` of ``scores`` strictly below it."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        raise UsageError("cannot choose a threshold from zero scores")
    if not 0.0 < rate <= 1.0:
        raise UsageError(f"acceptance rate must be in (0, 1], got {rate}")
    k = max(1, math.ceil(rate * s.size - 1e-9))
    return float(np.nextafter(s[k - 1], np.inf))


def leave_one_out_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's rejection score with its own image removed from its own reference.

    Images of generators with fewer than 3 images are skipped (a reference of one image
    has no spread); their score is NaN and callers drop them.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    counts = np.array([(labels == c).sum() for c in classes])
    sums = np.stack([emb[labels == c].sum(0) for c in classes])
    sqs = np.array([np.einsum("ij,ij->", emb[labels == c], emb[labels == c]) for c in classes])
    centroids = sums / counts[:, None]
    sigmas = np.array([reference_spread(int(n), s, q) for n, s, q in zip(counts, sums, sqs)])
    scores = np.full(len(emb), np.nan)
    own_index = np.searchsorted(classes, labels)
    for i, (x, j) in enumerate(zip(emb, own_index)):
        if counts[j] < 3:
            continue
        loo_sum = sums[j] - x
        loo_count = int(counts[j] - 1)
        loo_sigma = reference_spread(loo_count, loo_sum, sqs[j] - float(x @ x))
        c = centroids.copy()
        c[j] = loo_sum / loo_count
        sig = sigmas.copy()
        sig[j] = loo_sigma
        d = l2_distances(x[None, :], c)[0]
        nearest = int(d.argmin())
        scores[i] = normalized_distances(d, sig)[nearest]
    return scores


def threshold_for_crr(unknown_scores: np.ndarray, target_crr: float) -> float:
    """Largest tau that still rejects at least ``target_crr`` of the unknown images.

    Rejected means ``score >= tau``. Allowing at most ``floor((1 - target) * n)`` unknowns
    below tau puts tau at that order statistic of the sorted unknown scores.
    """
    u = np.sort(np.asarray(unknown_scores, dtype=np.float64))
    if u.size == 0:
        raise UsageError("--target-crr needs images of unknown generators",
                         hint="add folders whose names are not known generators")
    if not 0.0 < target_crr <= 1.0:
        raise UsageError(f"target CRR must be in (0, 1], got {target_crr}")
    allowed = math.floor((1.0 - target_crr) * u.size + 1e-9)
    if allowed >= u.size:
        return float(np.nextafter(u[-1], np.inf))
    return float(u[allowed])


def calibrate(known_scores: np.ndarray, unknown_scores: np.ndarray | None = None, *,
              acceptance: float | None = DEFAULT_ACCEPTANCE,
              target_crr: float | None = None) -> tuple[float, str, float]:
    """tau from validation scores: (tau, method, target) for one of the two targets."""
    if target_crr is not None:
        tau = threshold_for_crr(np.asarray(unknown_scores if unknown_scores is not None else []),
                                target_crr)
        return tau, "target CRR on validation images of unknown generators", target_crr
    rate = DEFAULT_ACCEPTANCE if acceptance is None else acceptance
    return (threshold_for_acceptance(known_scores, rate),
            "acceptance rate on validation images of known generators", rate)
