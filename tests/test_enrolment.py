"""``enroll_classes``: the one "enrol, then a provisional tau from held-out scores" path."""

from __future__ import annotations

import numpy as np
import pytest

from osma_cli.calibration import threshold_for_acceptance
from osma_cli.enrolment import enroll_classes
from osma_cli.references import ReferenceStore
from osma_cli.rules import get_rule


def labelled(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 5))
    labels = np.repeat(np.arange(3), [6, 7, 8])
    return centres[labels] + rng.normal(0, 1, (len(labels), 5)), labels


def store(rule_name: str) -> ReferenceStore:
    return ReferenceStore(
        weights_sha256="0" * 64, architecture="test", embedding_dim=5, l2_normalize=False, rule=get_rule(rule_name)
    )


@pytest.mark.parametrize("rule_name", ["fang", "mahalanobis"])
def test_classes_and_tau_against_a_direct_computation(rule_name: str) -> None:
    x, labels = labelled()
    made = store(rule_name)
    enroll_classes(made, ["a", "b", "c"], x, labels, acceptance=0.9, images="build images")
    assert made.names == ["a", "b", "c"]
    for k, name in enumerate(made.names):
        assert made.generators[name].count == int((labels == k).sum())
        assert np.allclose(made.generators[name].centroid, x[labels == k].mean(axis=0))
    # the rule's own held-out scores (each image against references made without it): tau
    # accepts at least 90% of them, and is the rule's, not fang's, for mahalanobis
    rule = get_rule(rule_name)
    held_out = rule.held_out_scores(x, labels)
    assert made.threshold is not None
    assert np.mean(held_out < made.threshold.value) >= 0.9
    assert made.threshold.value == threshold_for_acceptance(held_out, 0.9)
    assert made.threshold.method == f"provisional: {rule.held_out_method()} scores of the build images"
    assert made.threshold.n_images == len(x) and made.threshold.target == 0.9


def test_images_sha256_follow_their_rows_and_the_event_is_recorded() -> None:
    x, labels = labelled(1)
    digests = [f"{i:064x}" for i in range(len(x))]
    made = store("fang")
    enroll_classes(
        made,
        ["a", "b", "c"],
        x,
        labels,
        acceptance=0.95,
        images="training images",
        image_sha256=digests,
        command="osma build",
    )
    assert made.generators["b"].image_sha256 == digests[6:13]
    assert [e["event"] for e in made.history if e.get("generator")] == ["build"] * 3
