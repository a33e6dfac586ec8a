"""Open-set attribution metrics (docs/metrics.md), each formula in one place.

Every function is pure: arrays in, a float or a small frozen dataclass out. Conventions
(``docs/metrics.md`` has the full text and the reasons):

- ``y_true``: the known class ``0..K-1`` of each image, or ``-1`` (``UNKNOWN_LABEL``) for an
  image from a generator that is not enrolled.
- ``candidates``: the nearest known class of every image (the closed-set answer).
- ``scores``: the rejection score, higher = more likely unknown; an image is accepted when
  ``score < tau`` (``osma_cli.attribution.is_accepted``), otherwise it is predicted unknown.
- A ratio whose denominator is zero is ``0.0`` (scikit-learn's ``zero_division=0``), so an
  undefined figure never flatters a result; reports carry the counts that explain it.
- Curves are swept over every distinct operating point: thresholds ascend, ``thresholds[0]``
  (the smallest score) rejects every image, ``thresholds[-1] = +inf`` accepts every image.
  Images with equal scores are accepted together (ties are ties), so a result does not
  depend on the order of the samples. Areas are trapezoids along the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from osma_cli.attribution import is_accepted
from osma_cli.errors import UsageError

UNKNOWN_LABEL = -1

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class MetricInputError(UsageError, ValueError):
    """Arrays handed to a metric are malformed (also a ``ValueError`` for library callers)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class ROCCurve:
    """Known-vs-unknown ROC: an image is flagged unknown when ``score >= tau``.

    ``fpr[i]`` is the fraction of known images and ``tpr[i]`` the fraction of unknown images
    rejected at ``thresholds[i]``; ``auc`` is the area under ``tpr`` against ``fpr``.
    """

    thresholds: FloatArray
    fpr: FloatArray
    tpr: FloatArray
    auc: float


@dataclass(frozen=True, eq=False)
class OSCRCurve:
    """Open-set classification rate curve (Dhamija et al. 2018).

    ``ccr[i]``: fraction of known images accepted *and* correctly classified at
    ``thresholds[i]``; ``fpr[i]``: fraction of unknown images accepted; ``oscr``: area under
    ``ccr`` against ``fpr``, at most the closed-set accuracy.
    """

    thresholds: FloatArray
    fpr: FloatArray
    ccr: FloatArray
    oscr: float


@dataclass(frozen=True, eq=False)
class AF1CRRCurve:
    """aF1 against CRR over every threshold (Fang et al. 2023, Table 2)."""

    thresholds: FloatArray
    af1: FloatArray
    crr: FloatArray
    auc: float


@dataclass(frozen=True)
class KindReport:
    """Open-set figures with all known images and only the unknowns of one kind."""

    kind: str
    n_unknown: int
    auc: float
    oscr: float
    crr: float
    af1: float
    af1_crr_auc: float

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, ready for ``json.dumps(allow_nan=False)``."""
        return {
            "kind": self.kind,
            "n_unknown": self.n_unknown,
            "auc": self.auc,
            "oscr": self.oscr,
            "crr": self.crr,
            "af1": self.af1,
            "af1_crr_auc": self.af1_crr_auc,
        }


@dataclass(frozen=True)
class OpenSetReport:
    """Every figure of docs/metrics.md for one run; ``crr`` and ``af1`` are at ``tau``."""

    n_classes: int
    tau: float
    n_known: int
    n_unknown: int
    closed_set_accuracy: float
    af1: float
    crr: float
    auc: float
    oscr: float
    af1_crr_auc: float
    per_kind: dict[str, KindReport] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, ready for ``json.dumps(allow_nan=False)``."""
        return {
            "n_classes": self.n_classes,
            "tau": self.tau,
            "n_known": self.n_known,
            "n_unknown": self.n_unknown,
            "closed_set_accuracy": self.closed_set_accuracy,
            "af1": self.af1,
            "crr": self.crr,
            "auc": self.auc,
            "oscr": self.oscr,
            "af1_crr_auc": self.af1_crr_auc,
            "per_kind": {kind: report.to_dict() for kind, report in self.per_kind.items()},
        }


# --------------------------------------------------------------------------- validation


def _one_dimensional(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricInputError(f"{name} must be a one-dimensional array, got shape {arr.shape}")
    return arr


def _labels(name: str, values: ArrayLike, *, low: int, n_classes: int | None = None) -> IntArray:
    """Integer labels in ``low..n_classes-1``; integral floats (from text files) are accepted."""
    arr = _one_dimensional(name, values)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise MetricInputError(f"{name} must hold integer labels, found non-integral values")
    elif arr.dtype.kind not in "iu":
        raise MetricInputError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < low:
        raise MetricInputError(
            f"{name} has label {int(arr.min())}; the smallest allowed is {low}",
            hint=f"use {UNKNOWN_LABEL} for unknown images and 0..K-1 for known ones",
        )
    if n_classes is not None and arr.size and arr.max() >= n_classes:
        raise MetricInputError(f"{name} has label {int(arr.max())}, but n_classes is {n_classes}")
    return arr


def _scores(values: ArrayLike) -> FloatArray:
    arr = _one_dimensional("scores", values)
    if arr.dtype.kind not in "iuf":
        raise MetricInputError(f"scores must be numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise MetricInputError(
            "scores must be finite; found NaN or infinity",
            hint="an infinite normalized distance usually means a reference with zero spread",
        )
    return arr


def _is_unknown(values: ArrayLike) -> NDArray[np.bool_]:
    arr = _one_dimensional("is_unknown", values)
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iuf" or not np.all((arr == 0) | (arr == 1)):
            raise MetricInputError("is_unknown must be booleans (or 0/1)")
        arr = arr.astype(bool)
    return arr


def _n_classes(n_classes: int) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise MetricInputError(f"n_classes must be a positive integer, got {n_classes!r}")
    return int(n_classes)


def _tau(tau: float) -> float:
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise MetricInputError(f"tau must be a number, got {tau!r}") from None
    if math.isnan(value):
        raise MetricInputError("tau must be a number, got NaN")
    return value


def _same_length(**arrays: np.ndarray) -> int:
    """The common length; N == 0 is refused because no figure means anything on no images."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise MetricInputError(f"arrays must have the same length ({detail})")
    n = next(iter(lengths.values()))
    if n == 0:
        raise MetricInputError("cannot compute a metric on zero images")
    return n


def _open_set_inputs(
    y_true: ArrayLike, candidates: ArrayLike, scores: ArrayLike, n_classes: int | None
) -> tuple[IntArray, IntArray, FloatArray]:
    y = _labels("y_true", y_true, low=UNKNOWN_LABEL, n_classes=n_classes)
    c = _labels("candidates", candidates, low=0, n_classes=n_classes)
    s = _scores(scores)
    _same_length(y_true=y, candidates=c, scores=s)
    return y, c, s


# --------------------------------------------------------------------------- formulas


def _ratio(numerator: ArrayLike, denominator: ArrayLike) -> FloatArray:
    """``numerator / denominator``, 0.0 where the denominator is 0 (the one zero-division rule)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f1(tp: ArrayLike, n_predicted: ArrayLike, support: ArrayLike) -> FloatArray:
    """Per-class F1 = 2TP / (2TP + FP + FN), written as 2TP / (support + times predicted)."""
    return _ratio(2 * np.asarray(tp), np.asarray(support) + np.asarray(n_predicted))


def _trapezoid(x: FloatArray, y: FloatArray) -> float:
    """Area under ``y(x)`` along the path; ``x`` must be monotone (either direction)."""
    return float(abs(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)))


def _frozen(values: ArrayLike) -> FloatArray:
    arr = np.array(values, dtype=np.float64)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class _Sweep:
    """Every operating point of the accept rule, found with one sort.

    ``thresholds`` are the sorted distinct scores followed by ``+inf``. Since images are
    accepted when ``score < tau``, ``thresholds[i]`` accepts exactly the images whose score is
    among the ``i`` smallest distinct values, i.e. whose ``group < i``: tied images move
    together, and the threshold set covers "accept nothing" through "accept everything".
    """

    thresholds: FloatArray
    group: NDArray[np.intp]

    @property
    def n_groups(self) -> int:
        return len(self.thresholds) - 1

    def accepted(self, mask: NDArray[np.bool_]) -> IntArray:
        """How many images in ``mask`` each threshold accepts (cumulative counts)."""
        per_group = np.bincount(self.group[mask], minlength=self.n_groups)
        return np.concatenate(([0], np.cumsum(per_group))).astype(np.int64)


def _sweep(scores: FloatArray) -> _Sweep:
    distinct, group = np.unique(scores, return_inverse=True)
    return _Sweep(thresholds=np.append(distinct, np.inf), group=group.reshape(-1))


def _af1_along(sweep: _Sweep, y: IntArray, c: IntArray, n_classes: int) -> FloatArray:
    """aF1 at every threshold of ``sweep`` in O(N log N).

    Accepting a group changes the F1 of only the classes predicted in it. Images are
    ordered by (group, candidate); each (group, class) run gives one change of that class's
    F1, from its running counts before the run to those after it. The mean over classes
    at each threshold is the starting mean plus the changes of all earlier groups.
    """
    n = len(y)
    support = np.bincount(y[y >= 0], minlength=n_classes)
    order = np.lexsort((c, sweep.group))
    g, cls = sweep.group[order], c[order]
    hit = (y[order] == cls).astype(np.int64)

    by_class = np.argsort(cls, kind="stable")
    cls_sorted = cls[by_class]
    first_of_class = np.searchsorted(cls_sorted, cls_sorted, side="left")
    hits_sorted = hit[by_class]
    hits_cum = np.cumsum(hits_sorted)
    hits_before_class = (hits_cum - hits_sorted)[first_of_class]
    predicted_run = np.empty(n, dtype=np.int64)
    tp_run = np.empty(n, dtype=np.int64)
    predicted_run[by_class] = np.arange(n) - first_of_class + 1
    tp_run[by_class] = hits_cum - hits_before_class

    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (cls[1:] != cls[:-1])
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n) - 1
    run_support = support[cls[starts]]
    after = _f1(tp_run[ends], predicted_run[ends], run_support)
    before = _f1(tp_run[starts] - hit[starts], predicted_run[starts] - 1, run_support)
    change_per_group = np.bincount(g[starts], weights=after - before, minlength=sweep.n_groups)

    start_sum = float(_f1(np.zeros(n_classes), np.zeros(n_classes), support).sum())
    sums = start_sum + np.concatenate(([0.0], np.cumsum(change_per_group)))
    return np.clip(sums / n_classes, 0.0, 1.0)


def _roc_from(sweep: _Sweep, unknown: NDArray[np.bool_]) -> ROCCurve:
    n_unknown = int(unknown.sum())
    n_known = len(unknown) - n_unknown
    fpr = _ratio(n_known - sweep.accepted(~unknown), n_known)
    tpr = _ratio(n_unknown - sweep.accepted(unknown), n_unknown)
    return ROCCurve(thresholds=_frozen(sweep.thresholds), fpr=_frozen(fpr), tpr=_frozen(tpr), auc=_trapezoid(fpr, tpr))


def _oscr_from(sweep: _Sweep, y: IntArray, c: IntArray) -> OSCRCurve:
    unknown = y == UNKNOWN_LABEL
    correct = (y == c) & ~unknown
    ccr = _ratio(sweep.accepted(correct), int((~unknown).sum()))
    fpr = _ratio(sweep.accepted(unknown), int(unknown.sum()))
    return OSCRCurve(
        thresholds=_frozen(sweep.thresholds), fpr=_frozen(fpr), ccr=_frozen(ccr), oscr=_trapezoid(fpr, ccr)
    )


def _af1_crr_from(sweep: _Sweep, y: IntArray, c: IntArray, n_classes: int) -> AF1CRRCurve:
    unknown = y == UNKNOWN_LABEL
    n_unknown = int(unknown.sum())
    crr = _ratio(n_unknown - sweep.accepted(unknown), n_unknown)
    af1 = _af1_along(sweep, y, c, n_classes)
    return AF1CRRCurve(
        thresholds=_frozen(sweep.thresholds), af1=_frozen(af1), crr=_frozen(crr), auc=_trapezoid(crr, af1)
    )


# --------------------------------------------------------------------------- public API


def open_set_predictions(candidates: ArrayLike, scores: ArrayLike, tau: float) -> IntArray:
    """The candidate where ``score < tau`` (the attribution rule), else ``-1`` (unknown)."""
    c = _labels("candidates", candidates, low=0)
    s = _scores(scores)
    if len(c) != len(s):
        raise MetricInputError(f"arrays must have the same length (candidates: {len(c)}, scores: {len(s)})")
    return np.where(is_accepted(s, _tau(tau)), c, UNKNOWN_LABEL).astype(np.int64)


def closed_set_accuracy(y_true: ArrayLike, y_pred_class: ArrayLike) -> float:
    """Fraction of known images whose closed-set class is right; unknown images are ignored."""
    y = _labels("y_true", y_true, low=UNKNOWN_LABEL)
    p = _labels("y_pred_class", y_pred_class, low=UNKNOWN_LABEL)
    _same_length(y_true=y, y_pred_class=p)
    known = y != UNKNOWN_LABEL
    return float(_ratio(np.count_nonzero(p[known] == y[known]), np.count_nonzero(known)))


def average_f1(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> float:
    """aF1 (Fang et al. eq. 9): mean over the K known classes of 2TP / (2TP + FP + FN).

    Predictions include unknown (-1): an unknown image predicted as class j is a false
    positive of j, a known image predicted unknown is a false negative of its class. A class
    with 2TP + FP + FN = 0 (no test images and never predicted) scores 0.0.
    """
    k = _n_classes(n_classes)
    y = _labels("y_true", y_true, low=UNKNOWN_LABEL, n_classes=k)
    p = _labels("y_pred", y_pred, low=UNKNOWN_LABEL, n_classes=k)
    _same_length(y_true=y, y_pred=p)
    support = np.bincount(y[y >= 0], minlength=k)
    predicted = np.bincount(p[p >= 0], minlength=k)
    tp = np.bincount(y[(y == p) & (y >= 0)], minlength=k)
    return float(_f1(tp, predicted, support).mean())


def correct_rejection_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """CRR (Fang et al. eq. 10): fraction of unknown images predicted unknown; 0.0 if none."""
    y = _labels("y_true", y_true, low=UNKNOWN_LABEL)
    p = _labels("y_pred", y_pred, low=UNKNOWN_LABEL)
    _same_length(y_true=y, y_pred=p)
    unknown = y == UNKNOWN_LABEL
    return float(_ratio(np.count_nonzero(p[unknown] == UNKNOWN_LABEL), np.count_nonzero(unknown)))


def roc_curve(is_unknown: ArrayLike, scores: ArrayLike) -> ROCCurve:
    """Known-vs-unknown ROC with the rejection score as decision value, at every threshold."""
    unknown = _is_unknown(is_unknown)
    s = _scores(scores)
    _same_length(is_unknown=unknown, scores=s)
    return _roc_from(_sweep(s), unknown)


def roc_auc(is_unknown: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC of unknown vs known: P(unknown scores higher) + P(tie) / 2.

    With no known or no unknown images one axis of the ROC is empty and the AUC is 0.0.
    """
    return roc_curve(is_unknown, scores).auc


def oscr(y_true: ArrayLike, candidates: ArrayLike, scores: ArrayLike) -> OSCRCurve:
    """OSCR curve and area (Dhamija et al. 2018), ties as ties (see docs/metrics.md vs POSE)."""
    y, c, s = _open_set_inputs(y_true, candidates, scores, None)
    return _oscr_from(_sweep(s), y, c)


def af1_crr_curve(y_true: ArrayLike, candidates: ArrayLike, scores: ArrayLike, n_classes: int) -> AF1CRRCurve:
    """aF1 and CRR at every threshold and the area under aF1 against CRR (CRR in [0, 1])."""
    k = _n_classes(n_classes)
    y, c, s = _open_set_inputs(y_true, candidates, scores, k)
    return _af1_crr_from(_sweep(s), y, c, k)


def _figures(kind: str, y: IntArray, c: IntArray, s: FloatArray, n_classes: int, tau: float) -> KindReport:
    """The open-set figures of one set of images, sharing one sort between the curves."""
    sweep = _sweep(s)
    unknown = y == UNKNOWN_LABEL
    predictions = open_set_predictions(c, s, tau)
    return KindReport(
        kind=kind,
        n_unknown=int(unknown.sum()),
        auc=_roc_from(sweep, unknown).auc,
        oscr=_oscr_from(sweep, y, c).oscr,
        crr=correct_rejection_rate(y, predictions),
        af1=average_f1(y, predictions, n_classes),
        af1_crr_auc=_af1_crr_from(sweep, y, c, n_classes).auc,
    )


def _kinds(unknown_kind: ArrayLike, y: IntArray) -> NDArray[np.str_]:
    kinds = _one_dimensional("unknown_kind", unknown_kind)
    if len(kinds) != len(y):
        raise MetricInputError(f"arrays must have the same length (y_true: {len(y)}, unknown_kind: {len(kinds)})")
    kinds = kinds.astype(str)
    labelled_known = (y != UNKNOWN_LABEL) & (kinds != "")
    if labelled_known.any():
        raise MetricInputError(
            f"{int(labelled_known.sum())} known images have an unknown kind",
            hint='use "" as the kind of every known image',
        )
    return kinds


def breakdown_by_kind(
    y_true: ArrayLike, candidates: ArrayLike, scores: ArrayLike, n_classes: int, tau: float, unknown_kind: ArrayLike
) -> dict[str, KindReport]:
    """Open-set figures per unknown kind (e.g. seed / arch / dataset), sorted by kind.

    For kind k the figures use every known image and only the unknown images of kind k, as
    POSE reports unseen seed, architecture and dataset separately. Unknown images whose
    kind is "" count in the overall figures only.
    """
    k = _n_classes(n_classes)
    y, c, s = _open_set_inputs(y_true, candidates, scores, k)
    t = _tau(tau)
    kinds = _kinds(unknown_kind, y)
    known = y != UNKNOWN_LABEL
    reports = {}
    for kind in sorted(set(kinds[~known].tolist()) - {""}):
        keep = known | (kinds == kind)
        reports[kind] = _figures(kind, y[keep], c[keep], s[keep], k, t)
    return reports


def evaluate_open_set(
    y_true: ArrayLike,
    candidates: ArrayLike,
    scores: ArrayLike,
    n_classes: int,
    tau: float,
    unknown_kind: ArrayLike | None = None,
) -> OpenSetReport:
    """Every figure of docs/metrics.md for one set of scored images.

    ``tau`` must be finite so the report stays valid JSON.
    """
    k = _n_classes(n_classes)
    y, c, s = _open_set_inputs(y_true, candidates, scores, k)
    t = _tau(tau)
    if not math.isfinite(t):
        raise MetricInputError(
            f"tau must be finite for a report, got {t}", hint="for the closed-set figure use closed_set_accuracy"
        )
    overall = _figures("", y, c, s, k, t)
    per_kind = {} if unknown_kind is None else breakdown_by_kind(y, c, s, k, t, unknown_kind)
    n_unknown = overall.n_unknown
    return OpenSetReport(
        n_classes=k,
        tau=t,
        n_known=len(y) - n_unknown,
        n_unknown=n_unknown,
        closed_set_accuracy=closed_set_accuracy(y, c),
        af1=overall.af1,
        crr=overall.crr,
        auc=overall.auc,
        oscr=overall.oscr,
        af1_crr_auc=overall.af1_crr_auc,
        per_kind=per_kind,
    )
