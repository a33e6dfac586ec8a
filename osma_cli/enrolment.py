"""Enrol labelled embeddings as generators and set a provisional tau from them.

``osma build`` and ``osma train --refs-out`` both make a store this way: every class's
vectors enrolled, then tau at the acceptance rate of the rule's held-out scores of the same
vectors (leave-one-out for centroid rules), until ``osma calibrate`` replaces it with one
from validation images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from osma_cli.calibration import leave_one_out_scores, threshold_for_acceptance
from osma_cli.references import ReferenceStore, Threshold, now_iso


def enroll_classes(
    store: ReferenceStore,
    names: Sequence[str],
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    acceptance: float,
    images: str,
    image_sha256: Sequence[str] | None = None,
    command: str | None = None,
    event: str | None = "build",
) -> None:
    """Enrol row ``i`` of ``embeddings`` as ``names[labels[i]]``; then the provisional tau
    (none when no held-out score is finite). ``images`` names the rows in tau's method,
    e.g. "build images"; ``event`` is the history's (None: the store's default, ``enrol``)."""
    for k, name in enumerate(names):
        mine = labels == k
        digests = None if image_sha256 is None else [d for d, m in zip(image_sha256, mine) if m]
        store.enroll(name, embeddings[mine], image_sha256=digests, command=command, event=event)
    held_out = leave_one_out_scores(embeddings, labels, store.rule)
    held_out = held_out[np.isfinite(held_out)]
    if held_out.size:
        store.set_threshold(
            Threshold(
                value=threshold_for_acceptance(held_out, acceptance),
                method=f"provisional: {store.rule.held_out_method()} scores of the {images}",
                target=acceptance,
                n_images=int(held_out.size),
                chosen=now_iso(),
            ),
            command=command,
        )
