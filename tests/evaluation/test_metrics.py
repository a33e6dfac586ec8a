"""Each metric against an independent computation: scikit-learn, hand-worked numbers,
brute-force loops over thresholds, and invariances."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from osma_cli.errors import UsageError
from osma_cli.evaluation import (
    MetricInputError,
    af1_crr_curve,
    average_f1,
    breakdown_by_kind,
    closed_set_accuracy,
    correct_rejection_rate,
    evaluate_open_set,
    open_set_predictions,
    oscr,
    roc_auc,
    roc_curve,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")

# The worked example (also in docs/metrics.md), K = 2:
#   image  y_true  candidate  score
#   a        0        0        0.1   known, right class
#   b        0        1        0.4   known, wrong class
#   c        1        1        0.2   known, right class
#   d        1        1        0.7   known, right class
#   e       -1        0        0.3   unknown
#   f       -1        1        0.9   unknown
Y = np.array([0, 0, 1, 1, -1, -1])
C = np.array([0, 1, 1, 1, 0, 1])
S = np.array([0.1, 0.4, 0.2, 0.7, 0.3, 0.9])
K = 2


def random_case(
    rng: np.random.Generator, n: int, k: int, *, p_unknown: float = 0.3, levels: int | None = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random labels, candidates right ~60% of the time, scores with many ties."""
    y = np.where(rng.random(n) < p_unknown, -1, rng.integers(0, k, n))
    c = np.where((rng.random(n) < 0.6) & (y >= 0), y, rng.integers(0, k, n))
    s = rng.integers(0, levels, n) / levels if levels else rng.random(n)
    return y, c, s


def brute_f1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """aF1 by counting TP, FP, FN class by class."""
    values = []
    for j in range(k):
        tp = np.sum((y == j) & (p == j))
        fp = np.sum((y != j) & (p == j))
        fn = np.sum((y == j) & (p != j))
        values.append(0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(values))


def brute_thresholds(s: np.ndarray) -> list[float]:
    return sorted(set(s.tolist())) + [math.inf]


def path_area(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area along the curve, x made ascending by reversing if needed."""
    x, y = np.asarray(x), np.asarray(y)
    if x[0] > x[-1]:
        x, y = x[::-1], y[::-1]
    return float(np.trapezoid(y, x))


# --------------------------------------------------------------------------- accept rule


def test_open_set_predictions_accepts_strictly_below_tau() -> None:
    # tau = 0.4: a (0.1), c (0.2), e (0.3) are below; b sits exactly on tau and is rejected.
    assert open_set_predictions(C, S, 0.4).tolist() == [0, -1, 1, -1, 0, -1]
    assert open_set_predictions(C, S, -math.inf).tolist() == [-1] * 6
    assert open_set_predictions(C, S, math.inf).tolist() == C.tolist()


# --------------------------------------------------------------------------- scalar metrics


def test_worked_example_at_tau() -> None:
    # tau = 0.5 accepts a, b, c, e -> predictions [0, 1, 1, -1, 0, -1].
    # class 0: TP a, FP e (unknown predicted 0), FN b -> 2/(2+1+1) = 0.5
    # class 1: TP c, FP b, FN d (rejected)            -> 2/(2+1+1) = 0.5
    # CRR: f rejected, e accepted -> 1/2. Closed-set: a, c, d right, b wrong -> 3/4.
    p = open_set_predictions(C, S, 0.5)
    assert average_f1(Y, p, K) == pytest.approx(0.5)
    assert correct_rejection_rate(Y, p) == pytest.approx(0.5)
    assert closed_set_accuracy(Y, C) == pytest.approx(0.75)
    # AUC: unknown 0.3 beats knowns 0.1, 0.2; unknown 0.9 beats all four -> 6/8.
    assert roc_auc(Y == -1, S) == pytest.approx(0.75)


def test_scalars_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        k = int(rng.integers(1, 6))
        y, c, s = random_case(rng, int(rng.integers(1, 80)), k)
        p = open_set_predictions(c, s, float(rng.random()))
        known = y >= 0
        if known.any():
            assert closed_set_accuracy(y, c) == pytest.approx(sklearn_metrics.accuracy_score(y[known], c[known]))
        # unknown (-1) is a label outside `labels`: sklearn then counts an unknown predicted
        # j as FP of j and a known predicted -1 as FN of its class, exactly eq. 9.
        expected = sklearn_metrics.f1_score(y, p, labels=list(range(k)), average="macro", zero_division=0)
        assert average_f1(y, p, k) == pytest.approx(expected)
        if (~known).any():
            expected = sklearn_metrics.recall_score(y == -1, p == -1)
            assert correct_rejection_rate(y, p) == pytest.approx(expected)
        if known.any() and (~known).any():
            assert roc_auc(~known, s) == pytest.approx(sklearn_metrics.roc_auc_score(~known, s))


def test_average_f1_class_with_no_support_and_no_prediction_scores_zero() -> None:
    # K = 3, class 2 never appears and is never predicted: F1_2 = 0 (zero_division = 0).
    # class 0: 2*1/(2+0+0) = 1; class 1: 1; mean (1 + 1 + 0) / 3.
    y, p = [0, 1], [0, 1]
    assert average_f1(y, p, 3) == pytest.approx(2 / 3)
    assert average_f1(y, p, 3) == pytest.approx(
        sklearn_metrics.f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0)
    )


def test_average_f1_unknown_predicted_as_class_is_false_positive() -> None:
    # class 0: TP 1, FP 1 (the unknown) -> 2/3; class 1: TP 1 -> 1. mean 5/6.
    assert average_f1([0, 1, -1], [0, 1, 0], 2) == pytest.approx(5 / 6)
    # everything rejected: no TP anywhere -> 0.
    assert average_f1([0, 1, -1], [-1, -1, -1], 2) == 0.0


def test_empty_denominators_are_zero_not_nan() -> None:
    assert correct_rejection_rate([0, 1], [0, -1]) == 0.0
    assert closed_set_accuracy([-1, -1], [0, 1]) == 0.0
    assert roc_auc([False, False], [0.1, 0.2]) == 0.0
    assert roc_auc([True, True], [0.1, 0.2]) == 0.0
    only_unknown = evaluate_open_set([-1, -1], [0, 1], [0.1, 0.2], 2, 0.15)
    only_known = evaluate_open_set([0, 1], [0, 1], [0.1, 0.2], 2, 0.15)
    for report in (only_unknown, only_known):
        values = report.to_dict()
        assert all(v == v for v in values.values() if isinstance(v, float))
        json.dumps(values, allow_nan=False)
    assert only_unknown.crr == 0.5 and only_known.crr == 0.0


# --------------------------------------------------------------------------- ROC


def test_roc_auc_perfect_swapped_and_constant() -> None:
    unknown = np.array([False, False, False, True, True])
    assert roc_auc(unknown, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert roc_auc(unknown, [0.8, 0.9, 0.7, 0.1, 0.2]) == 0.0
    assert roc_auc(unknown, [0.5] * 5) == 0.5


def test_roc_auc_is_mann_whitney_with_half_ties() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(2, 60))
        unknown = rng.random(n) < 0.4
        s = rng.integers(0, 5, n).astype(float)
        u, k = s[unknown], s[~unknown]
        if not len(u) or not len(k):
            continue
        pairs = (u[:, None] > k[None, :]).sum() + 0.5 * (u[:, None] == k[None, :]).sum()
        assert roc_auc(unknown, s) == pytest.approx(pairs / (len(u) * len(k)))


def test_roc_curve_matches_sklearn_points() -> None:
    rng = np.random.default_rng(3)
    unknown = rng.random(50) < 0.5
    s = rng.integers(0, 8, 50) / 8
    ours = roc_curve(unknown, s)
    fpr, tpr, thresholds = sklearn_metrics.roc_curve(unknown, s, drop_intermediate=False)
    # sklearn: thresholds descending from +inf; ours ascending to +inf.
    np.testing.assert_allclose(ours.fpr[::-1], fpr)
    np.testing.assert_allclose(ours.tpr[::-1], tpr)
    np.testing.assert_allclose(ours.thresholds[::-1][1:], thresholds[1:])
    assert ours.auc == pytest.approx(path_area(ours.fpr, ours.tpr))


# --------------------------------------------------------------------------- OSCR


def brute_oscr(y: np.ndarray, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CCR and FPR at every threshold straight from the definitions."""
    known, unknown = y >= 0, y == -1
    ccr, fpr = [], []
    for t in brute_thresholds(s):
        accepted = s < t
        ccr.append(np.sum(accepted & known & (c == y)) / known.sum() if known.any() else 0.0)
        fpr.append(np.sum(accepted & unknown) / unknown.sum() if unknown.any() else 0.0)
    return np.array(ccr), np.array(fpr)


def test_oscr_worked_example() -> None:
    # ascending score: a .1 (right), c .2 (right), e .3 (unknown), b .4 (wrong), d .7 (right),
    # f .9 (unknown). Points (FPR, CCR) as tau rises: (0,0) (0,.25) (0,.5) (.5,.5) (.5,.5)
    # (.5,.75) (1,.75). Area: .5 * .5 + .5 * .75 = 0.625.
    curve = oscr(Y, C, S)
    np.testing.assert_allclose(curve.fpr, [0, 0, 0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.ccr, [0, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75])
    assert curve.oscr == pytest.approx(0.625)


def test_oscr_docs_example_and_tie() -> None:
    # docs/metrics.md: two right knowns, two unknowns. Scores 1 - confidence.
    # No tie: knowns .1, .4; unknowns .3, .5 -> steps (0,0) (0,.5) (.5,.5) (.5,1) (1,1):
    # area .5 * .5 + .5 * 1 = 0.75 (POSE's compute_oscr gives 0.5).
    assert oscr([0, 0, -1, -1], [0, 0, 0, 0], [0.1, 0.4, 0.3, 0.5]).oscr == pytest.approx(0.75)
    # Tie: unknown .5 -> .4, tied with a known. From (.5,.5) the tied pair moves together,
    # a diagonal to (1,1): .25 + .5 * (.5 + 1) / 2 = 0.625 (POSE: 0.375 or 0.5 by sort order).
    assert oscr([0, 0, -1, -1], [0, 0, 0, 0], [0.1, 0.4, 0.3, 0.4]).oscr == pytest.approx(0.625)


def pose_style_oscr(y: np.ndarray, c: np.ndarray, s: np.ndarray, order: np.ndarray) -> float:
    """POSE's rule as docs/metrics.md describes it: images in a given order of descending
    score (ascending confidence); at cut k, CCR counts right knowns after position k and FPR
    unknowns from position k on; the last cut is (0, 0)."""
    right, unknown = ((y == c) & (y >= 0))[order], (y == -1)[order]
    nk, nu, n = int((y >= 0).sum()), int(unknown.sum()), len(y)
    points = [(unknown[k:].sum() / nu, right[k + 1 :].sum() / nk) for k in range(n - 1)]
    points += [(0.0, 0.0), (0.0, 0.0), (1.0, 1.0)]
    points.sort(reverse=True)
    return sum((f0 - f1) * (c0 + c1) / 2 for (f0, c0), (f1, c1) in zip(points, points[1:]))


def test_pose_style_oscr_differs_as_documented() -> None:
    y, c = np.array([0, 0, -1, -1]), np.array([0, 0, 0, 0])
    s = np.array([0.1, 0.4, 0.3, 0.5])
    assert pose_style_oscr(y, c, s, np.argsort(-s, kind="stable")) == pytest.approx(0.5)
    tied = np.array([0.1, 0.4, 0.3, 0.4])
    # descending score with the tied known first (what POSE's sort did) or the unknown first
    assert pose_style_oscr(y, c, tied, np.array([1, 3, 2, 0])) == pytest.approx(0.375)
    assert pose_style_oscr(y, c, tied, np.array([3, 1, 2, 0])) == pytest.approx(0.5)
    # Without ties: POSE = OSCR - m / (2 Nk Nu), m = unknowns followed by a right known.
    rng = np.random.default_rng(4)
    for _ in range(20):
        y, c, s = random_case(rng, int(rng.integers(4, 40)), 3, levels=None)
        if not (y == -1).any() or not (y >= 0).any():
            continue
        order = np.argsort(-s)
        right, unknown = ((y == c) & (y >= 0))[order], (y == -1)[order]
        m = int(np.sum(unknown[:-1] & right[1:]))
        expected = oscr(y, c, s).oscr - m / (2 * (y >= 0).sum() * unknown.sum())
        assert pose_style_oscr(y, c, s, order) == pytest.approx(expected)


def test_oscr_perfect_separation_equals_closed_set_accuracy() -> None:
    y = np.array([0, 1, 1, 0, -1, -1])
    c = np.array([0, 1, 0, 0, 1, 0])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    assert oscr(y, c, s).oscr == pytest.approx(closed_set_accuracy(y, c))


def test_oscr_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    for _ in range(40):
        y, c, s = random_case(rng, int(rng.integers(1, 60)), int(rng.integers(1, 5)))
        curve = oscr(y, c, s)
        ccr, fpr = brute_oscr(y, c, s)
        np.testing.assert_allclose(curve.thresholds, brute_thresholds(s))
        np.testing.assert_allclose(curve.ccr, ccr)
        np.testing.assert_allclose(curve.fpr, fpr)
        assert curve.oscr == pytest.approx(path_area(fpr, ccr))


# --------------------------------------------------------------------------- aF1-CRR curve


def test_af1_crr_worked_example() -> None:
    # tau rising over .1 .2 .3 .4 .7 .9 inf accepts a, c, e, b, d, f in turn:
    #   .1  nothing accepted: F1 (0, 0)                      aF1 0      CRR 1
    #   .2  +a (0 right): F1_0 = 2/(2+0+1)                   aF1 1/3    CRR 1
    #   .3  +c (1 right): F1_1 = 2/3                         aF1 2/3    CRR 1
    #   .4  +e (unknown as 0): F1_0 = 2/4                    aF1 7/12   CRR .5
    #   .7  +b (0 as 1): F1_1 = 2/4                          aF1 1/2    CRR .5
    #   .9  +d (1 right): F1_1 = 4/(4+1+0)                   aF1 13/20  CRR .5
    #  inf  +f (unknown as 1): F1_1 = 4/6                    aF1 7/12   CRR 0
    # area along the path: .5 * (7/12 + 13/20) / 2 + .5 * (7/12 + 2/3) / 2 = 149/240.
    curve = af1_crr_curve(Y, C, S, K)
    np.testing.assert_allclose(curve.thresholds, [0.1, 0.2, 0.3, 0.4, 0.7, 0.9, math.inf])
    np.testing.assert_allclose(curve.af1, [0, 1 / 3, 2 / 3, 7 / 12, 1 / 2, 13 / 20, 7 / 12])
    np.testing.assert_allclose(curve.crr, [1, 1, 1, 0.5, 0.5, 0.5, 0])
    assert curve.auc == pytest.approx(149 / 240)


def test_af1_crr_matches_brute_force() -> None:
    rng = np.random.default_rng(6)
    for trial in range(60):
        k = int(rng.integers(1, 6))
        y, c, s = random_case(rng, int(rng.integers(1, 70)), k, levels=None if trial % 3 == 0 else 5)
        curve = af1_crr_curve(y, c, s, k)
        thresholds = brute_thresholds(s)
        af1 = [brute_f1(y, np.where(s < t, c, -1), k) for t in thresholds]
        n_unknown = np.sum(y == -1)
        crr = [np.sum((y == -1) & (s >= t)) / n_unknown if n_unknown else 0.0 for t in thresholds]
        np.testing.assert_allclose(curve.thresholds, thresholds)
        np.testing.assert_allclose(curve.af1, af1, atol=1e-12)
        np.testing.assert_allclose(curve.crr, crr)
        assert curve.auc == pytest.approx(path_area(np.array(crr), np.array(af1)))


def test_af1_crr_curve_spans_crr_zero_to_one() -> None:
    curve = af1_crr_curve(Y, C, S, K)
    # tau = the smallest score rejects everything (CRR 1); tau = +inf accepts all (CRR 0).
    assert curve.crr[0] == 1.0 and curve.crr[-1] == 0.0
    assert curve.af1[-1] == pytest.approx(average_f1(Y, C, K))
    assert correct_rejection_rate(Y, open_set_predictions(C, S, S.min())) == 1.0
    assert correct_rejection_rate(Y, open_set_predictions(C, S, -math.inf)) == 1.0


def test_curves_with_all_scores_equal() -> None:
    s = np.full(6, 0.3)
    curve = af1_crr_curve(Y, C, s, K)
    assert curve.thresholds.tolist() == [0.3, math.inf]
    np.testing.assert_allclose(curve.crr, [1, 0])
    assert curve.auc == pytest.approx((0 + average_f1(Y, C, K)) / 2)
    assert roc_auc(Y == -1, s) == 0.5
    # one diagonal from (0, 0) to (1, 3/4)
    assert oscr(Y, C, s).oscr == pytest.approx(0.75 / 2)


def test_curve_arrays_are_read_only() -> None:
    curve = af1_crr_curve(Y, C, S, K)
    with pytest.raises(ValueError):
        curve.af1[0] = 1.0


# --------------------------------------------------------------------------- invariances


def flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_permuting_samples_changes_nothing() -> None:
    rng = np.random.default_rng(7)
    y, c, s = random_case(rng, 300, 4, levels=4)
    kinds = np.where(y == -1, rng.choice(["seed", "arch", "dataset"], len(y)), "")
    base = flat(evaluate_open_set(y, c, s, 4, 0.5, unknown_kind=kinds).to_dict())
    curve = af1_crr_curve(y, c, s, 4)
    for _ in range(5):
        p = rng.permutation(len(y))
        permuted = flat(evaluate_open_set(y[p], c[p], s[p], 4, 0.5, unknown_kind=kinds[p]).to_dict())
        assert permuted.keys() == base.keys()
        for key, value in base.items():
            assert permuted[key] == (value if isinstance(value, str) else pytest.approx(value)), key
        shuffled = af1_crr_curve(y[p], c[p], s[p], 4)
        np.testing.assert_allclose(shuffled.af1, curve.af1, atol=1e-12)


# --------------------------------------------------------------------------- reports


def test_breakdown_uses_all_knowns_and_one_kind() -> None:
    rng = np.random.default_rng(8)
    y, c, s = random_case(rng, 200, 3)
    kinds = np.where(y == -1, rng.choice(["seed", "arch"], len(y)), "")
    per_kind = breakdown_by_kind(y, c, s, 3, 0.5, kinds)
    assert list(per_kind) == ["arch", "seed"]
    for kind, report in per_kind.items():
        keep = (y >= 0) | (kinds == kind)
        assert report.n_unknown == int(np.sum(kinds == kind))
        assert report.auc == pytest.approx(roc_auc(y[keep] == -1, s[keep]))
        assert report.oscr == pytest.approx(oscr(y[keep], c[keep], s[keep]).oscr)
        assert report.af1_crr_auc == pytest.approx(af1_crr_curve(y[keep], c[keep], s[keep], 3).auc)
        p = open_set_predictions(c[keep], s[keep], 0.5)
        assert report.crr == pytest.approx(correct_rejection_rate(y[keep], p))
        assert report.af1 == pytest.approx(average_f1(y[keep], p, 3))


def test_evaluate_open_set_report_is_plain_json() -> None:
    kinds = np.array(["", "", "", "", "seed", "arch"])
    report = evaluate_open_set(Y, C, S, K, 0.5, unknown_kind=kinds)
    values = report.to_dict()
    text = json.dumps(values, allow_nan=False)
    assert json.loads(text) == values
    assert values["af1"] == 0.5 and values["crr"] == 0.5 and values["n_known"] == 4
    assert values["oscr"] == pytest.approx(0.625) and values["af1_crr_auc"] == pytest.approx(149 / 240)
    # seed: knowns + e only; e (0.3) is above knowns 0.1, 0.2 and below 0.4, 0.7 -> AUC 2/4
    assert values["per_kind"]["seed"]["auc"] == pytest.approx(0.5)
    assert values["per_kind"]["arch"]["auc"] == 1.0

    def plain(v: object) -> bool:
        if isinstance(v, dict):
            return all(plain(x) for x in v.values())
        return type(v) in (int, float, str)

    assert plain(values)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call",
    [
        lambda: average_f1([], [], 2),
        lambda: oscr([], [], []),
        lambda: roc_auc([], []),
        lambda: af1_crr_curve([0, 1], [0], [0.1, 0.2], 2),
        lambda: af1_crr_curve([0, 2], [0, 1], [0.1, 0.2], 2),
        lambda: af1_crr_curve([0, -2], [0, 1], [0.1, 0.2], 2),
        lambda: af1_crr_curve([0, 1], [0, -1], [0.1, 0.2], 2),
        lambda: af1_crr_curve([0, 1], [0, 1], [0.1, float("nan")], 2),
        lambda: af1_crr_curve([0, 1], [0, 1], [0.1, float("inf")], 2),
        lambda: af1_crr_curve([[0, 1]], [[0, 1]], [[0.1, 0.2]], 2),
        lambda: af1_crr_curve([0.5, 1], [0, 1], [0.1, 0.2], 2),
        lambda: average_f1([0, 1], [0, 1], 0),
        lambda: roc_auc([0, 2], [0.1, 0.2]),
        lambda: evaluate_open_set([0, 1], [0, 1], [0.1, 0.2], 2, math.inf),
        lambda: evaluate_open_set([0, 1], [0, 1], [0.1, 0.2], 2, float("nan")),
        lambda: breakdown_by_kind([0, -1], [0, 1], [0.1, 0.2], 2, 0.5, ["seed", "seed"]),
        lambda: breakdown_by_kind([0, -1], [0, 1], [0.1, 0.2], 2, 0.5, ["", "seed", "x"]),
    ],
)
def test_bad_input_raises_value_error(call) -> None:
    with pytest.raises(MetricInputError) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, UsageError)


def test_integral_float_labels_are_accepted() -> None:
    assert average_f1(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 2) == 1.0


# --------------------------------------------------------------------------- scale


def test_sweep_scales_to_large_n() -> None:
    rng = np.random.default_rng(9)
    y, c, s = random_case(rng, 200_000, 40, p_unknown=0.2, levels=10_000)
    start = time.perf_counter()
    curve = af1_crr_curve(y, c, s, 40)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert curve.af1[-1] == pytest.approx(average_f1(y, c, 40))
    assert curve.af1[0] == 0.0
