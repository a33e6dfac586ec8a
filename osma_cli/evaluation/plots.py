"""The PNG figures ``osma benchmark --out DIR`` writes, for people reading a benchmark.

Every number drawn comes from ``osma_cli.evaluation.metrics``; this module only draws.
matplotlib is imported inside the functions, so ``import osma_cli.evaluation`` stays light,
and figures are ``matplotlib.figure.Figure`` objects on an explicit Agg canvas: no pyplot,
no display, no change to global ``rcParams``, nothing left in pyplot's figure registry.
Files are written with ``atomic_write``, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from numpy.typing import ArrayLike

from osma_cli.atomic import atomic_write
from osma_cli.evaluation.metrics import (
    UNKNOWN_LABEL,
    AF1CRRCurve,
    OSCRCurve,
    ROCCurve,
    _kinds,
    _open_set_inputs,
    af1_crr_curve,
    average_f1,
    correct_rejection_rate,
    open_set_predictions,
    oscr,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from osma_cli.evaluation.robustness import RobustnessRow

DPI = 150
FIGSIZE = (6.0, 4.5)
CLIP_PERCENTILE = 99.5

ALL = "all"
KNOWN = "known"
UNLABELLED = "unknown (no kind)"
# Fixed colours, so a kind looks the same in every figure of every run.
_FIXED_COLOURS = {
    ALL: "black",
    KNOWN: "#7f7f7f",
    "seed": "tab:blue",
    "arch": "tab:orange",
    "dataset": "tab:green",
    "unknown": "tab:purple",
    UNLABELLED: "tab:purple",
}
_SPARE_COLOURS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan")
# Red is kept for tau and the operating point, so the threshold stands out in every figure.
THRESHOLD_COLOUR = "tab:red"


def colours(names: Iterable[str]) -> dict[str, str]:
    """A colour per name: fixed for the usual kinds, spare colours in sorted order for others.

    Sorting makes the choice independent of the order a caller lists kinds in, so every
    figure of one benchmark gives an unusual kind the same colour.
    """
    names = list(names)
    spare = sorted(name for name in set(names) if name not in _FIXED_COLOURS)
    extra = {name: _SPARE_COLOURS[i % len(_SPARE_COLOURS)] for i, name in enumerate(spare)}
    return {name: _FIXED_COLOURS.get(name) or extra[name] for name in names}


# --------------------------------------------------------------------------- figure plumbing


@contextmanager
def _figure(path: Path) -> Iterator[Axes]:
    """One axes on a fresh Agg figure, saved to ``path`` at ``DPI`` when the block ends."""
    with _panels(path, 1) as axes:
        yield axes[0]


@contextmanager
def _panels(path: Path, n: int) -> Iterator[list[Axes]]:
    """``n`` axes side by side on a fresh Agg figure, saved to ``path`` when the block ends.

    The figure is never registered with pyplot, so it is freed with its last reference;
    ``clear()`` drops the artists at once rather than waiting for the garbage collector.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = FIGSIZE[0] if n == 1 else max(FIGSIZE[0], 3.0 * n)
    fig: Figure = Figure(figsize=(width, FIGSIZE[1]), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    try:
        yield [fig.add_subplot(1, n, k + 1) for k in range(n)]
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        fig.clear()


def _say_in_axes(ax: Axes, message: str) -> None:
    """A centred note where the curves would be, so an empty figure explains itself."""
    ax.text(
        0.5,
        0.5,
        message,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize="large",
        color="#555555",
        wrap=True,
    )


def _unit_square(ax: Axes) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(True, alpha=0.3)


class _LineStyle(TypedDict):
    linewidth: float
    zorder: int


def _line_style(name: str) -> _LineStyle:
    """``all`` is drawn thicker and on top: it is the headline curve."""
    return {"linewidth": 2.2, "zorder": 3} if name == ALL else {"linewidth": 1.5, "zorder": 2}


def _empty_reason(x: np.ndarray, y: np.ndarray, *, x_of: str, y_of: str) -> str | None:
    """Why a curve has nothing to show: one of its rates is 0 at every threshold.

    A rate over an empty group is 0.0 by the metrics' zero-division rule, and a non-empty
    group reaches 1.0 at one end of the sweep, so an all-zero axis means an empty group.
    """
    if not np.any(x):
        return f"no {x_of}"
    if not np.any(y):
        return f"no {y_of}"
    return None


# --------------------------------------------------------------------------- the figures


def plot_roc(
    curves: Mapping[str, ROCCurve], path: Path, *, title: str = "Known vs unknown: ROC of the rejection score"
) -> Path:
    """ROC per unknown kind (and ``all``), AUC in the legend, against the chance diagonal."""
    path = Path(path)
    with _figure(path) as ax:
        ax.plot([0, 1], [0, 1], linestyle=":", color="#999999", linewidth=1, label="chance (AUC 0.5)")
        palette = colours(curves)
        reasons = []
        for name, curve in curves.items():
            reason = _empty_reason(curve.fpr, curve.tpr, x_of="known images", y_of="unknown images")
            if reason is not None:
                reasons.append(reason)
                continue
            ax.plot(
                curve.fpr, curve.tpr, color=palette[name], label=f"{name} (AUC {curve.auc:.3f})", **_line_style(name)
            )
        if len(reasons) == len(curves):
            _say_in_axes(ax, reasons[0] if reasons else "no unknown images")
        _unit_square(ax)
        ax.set_xlabel("false positive rate: known images flagged unknown")
        ax.set_ylabel("true positive rate: unknown images flagged")
        ax.set_title(title)
        ax.legend(loc="best", fontsize="small")
    return path


def plot_oscr(
    curves: Mapping[str, OSCRCurve],
    path: Path,
    *,
    log_fpr: bool = False,
    title: str = "Open-set classification rate (OSCR)",
) -> Path:
    """CCR against FPR per unknown kind (and ``all``), the area (OSCR) in the legend.

    The x axis is linear by default so that the area one sees is the OSCR reported.
    ``log_fpr=True`` spreads out the low-FPR end, where a deployed threshold sits; points
    at FPR 0 cannot be drawn on a log axis and are left out there.
    """
    path = Path(path)
    with _figure(path) as ax:
        palette = colours(curves)
        reasons = []
        smallest_fpr = 1.0
        for name, curve in curves.items():
            reason = _empty_reason(curve.fpr, curve.ccr, x_of="unknown images", y_of="known images")
            if reason is not None:
                reasons.append(reason)
                continue
            fpr, ccr = curve.fpr, curve.ccr
            if log_fpr:
                keep = fpr > 0
                fpr, ccr = fpr[keep], ccr[keep]
                smallest_fpr = min(smallest_fpr, float(fpr.min()))
            ax.plot(fpr, ccr, color=palette[name], label=f"{name} (OSCR {curve.oscr:.3f})", **_line_style(name))
        drew = len(reasons) < len(curves)
        if not drew:
            _say_in_axes(ax, reasons[0] if reasons else "no unknown images")
        _unit_square(ax)
        if log_fpr:
            ax.set_xscale("log")
            ax.set_xlim(smallest_fpr / 1.5, 1.05)
        ax.set_xlabel("FPR: unknown images accepted" + (" (log scale)" if log_fpr else ""))
        ax.set_ylabel("CCR: known images accepted and\ncorrectly attributed")
        ax.set_title(title)
        if drew:
            ax.legend(loc="best", fontsize="small")
    return path


def plot_af1_crr(
    curve: AF1CRRCurve,
    path: Path,
    *,
    operating_point: tuple[float, float] | None = None,
    tau: float | None = None,
    title: str = "aF1 against CRR over all thresholds",
) -> Path:
    """aF1 against CRR (Fang et al. Table 2), the area in the legend.

    ``operating_point`` is ``(crr, af1)`` at the calibrated threshold, in the axes' (x, y)
    order; ``tau`` only labels it. The trade-off curve says what other thresholds would
    give, the point says where osma actually stands.
    """
    path = Path(path)
    with _figure(path) as ax:
        ax.plot(
            curve.crr, curve.af1, color=_FIXED_COLOURS[ALL], linewidth=2, label=f"all thresholds (area {curve.auc:.3f})"
        )
        if not np.any(curve.crr):
            _say_in_axes(ax, "no unknown images:\nCRR is 0 at every threshold")
        if operating_point is not None:
            crr, af1 = operating_point
            name = "calibrated threshold" if tau is None else f"calibrated \N{GREEK SMALL LETTER TAU} = {tau:.4g}"
            ax.plot(
                [crr],
                [af1],
                linestyle="none",
                marker="o",
                markersize=8,
                color=THRESHOLD_COLOUR,
                markeredgecolor="white",
                zorder=4,
                label=f"{name}: CRR {crr:.3f}, aF1 {af1:.3f}",
            )
        _unit_square(ax)
        ax.set_xlabel("CRR: unknown images rejected")
        ax.set_ylabel("aF1: mean F1 over known classes")
        ax.set_title(title)
        ax.legend(loc="best", fontsize="small")
    return path


def _finite(values: ArrayLike) -> tuple[np.ndarray, int]:
    """The finite values of a score array and how many were dropped (inf from zero spread)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    keep = np.isfinite(arr)
    return arr[keep], int(arr.size - keep.sum())


def histogram_range(pooled: np.ndarray) -> tuple[float, float, bool]:
    """The x-range of the score histograms, and whether it cuts off a long right tail.

    A few huge distances (a broken image, a reference with tiny spread) would squash every
    other bar into one bin, so the range stops at the 99.5th percentile when the values
    beyond it reach much further; a short tail is kept whole.
    """
    if pooled.size == 0:
        return 0.0, 1.0, False
    low, high = float(pooled.min()), float(pooled.max())
    cut = float(np.percentile(pooled, CLIP_PERCENTILE))
    clipped = high > cut + 0.25 * (cut - low)
    if clipped:
        high = cut
    if high <= low:
        return low - 0.5, low + 0.5, clipped
    return low, high, clipped


def histogram_bins(groups: Iterable[np.ndarray]) -> int:
    """Rice's rule (2 n^(1/3)) on the smallest non-empty group, kept within 20..60.

    The bins are shared, so they are sized for the group with the fewest images: bins fine
    enough for thousands of known images turn a kind with a few hundred into noise.
    """
    sizes = [values.size for values in groups if values.size]
    if not sizes:
        return 20
    return int(np.clip(round(2 * min(sizes) ** (1 / 3)), 20, 60))


def plot_score_histograms(
    known_scores: ArrayLike,
    unknown_scores: Mapping[str, ArrayLike],
    path: Path,
    *,
    tau: float | None = None,
    xlabel: str = "normalized distance",
    title: str = "Rejection scores: known vs unknown images",
) -> Path:
    """Overlaid score densities, known vs each unknown kind, on shared bins, ``tau`` marked.

    Each bar height is the fraction of that group's images in the bin divided by the bin
    width, counting images beyond a clipped x-range in the denominator: the visible area of
    a group is the share of it shown, so clipping never inflates a group. Non-finite scores
    are left out and counted in the axis label.
    """
    path = Path(path)
    groups: dict[str, np.ndarray] = {}
    dropped = 0
    for name, values in [(KNOWN, known_scores), *unknown_scores.items()]:
        groups[name], n_bad = _finite(values)
        dropped += n_bad
    pooled = np.concatenate(list(groups.values()))
    low, high, clipped = histogram_range(pooled)
    n_bins = histogram_bins(groups.values())
    edges = np.linspace(low, high, n_bins + 1)
    width = edges[1] - edges[0]
    palette = colours(groups)

    with _figure(path) as ax:
        tallest = 0.0
        for name, values in groups.items():
            label = f"{name} (n={values.size:,})"
            if values.size == 0:
                ax.plot([], [], color=palette[name], label=f"{name} (none)")
                continue
            counts, _ = np.histogram(values, bins=edges)
            density = counts / (values.size * width)
            tallest = max(tallest, float(density.max()))
            if name == KNOWN:
                ax.stairs(density, edges, fill=True, alpha=0.35, color=palette[name], label=label)
            else:
                ax.stairs(density, edges, linewidth=1.8, color=palette[name], label=label)
        notes = []
        if clipped:
            beyond = int(np.count_nonzero(pooled > high))
            notes.append(
                f"x clipped at the {CLIP_PERCENTILE:g}th percentile, {high:.3g}: "
                f"{beyond:,} image{'s' if beyond != 1 else ''} beyond not shown"
            )
        if dropped:
            notes.append(f"{dropped:,} non-finite score{'s' if dropped != 1 else ''} left out")
        if pooled.size == 0:
            _say_in_axes(ax, "no scores")
        if tau is not None:
            tau_label = f"\N{GREEK SMALL LETTER TAU} = {tau:.4g}"
            if math.isfinite(tau) and low <= tau <= high:
                ax.axvline(
                    tau, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.5, label=f"{tau_label} (accept below)"
                )
            else:
                ax.plot([], [], color=THRESHOLD_COLOUR, linestyle="--", label=f"{tau_label} (off scale)")
        ax.set_xlim(low, high)
        legend = ax.legend(loc="upper right", fontsize="small")
        # Headroom above the tallest bar, one line per legend entry, so the legend covers no bar.
        ax.set_ylim(0, (tallest or 1.0) * (1.1 + 0.08 * len(legend.get_texts())))
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("\n".join([xlabel, *notes]))
        ax.set_ylabel("density")
        ax.set_title(title)
    return path


# --------------------------------------------------------------------------- the benchmark set


def write_benchmark_plots(
    out_dir: Path,
    *,
    y_true: ArrayLike,
    candidates: ArrayLike,
    scores: ArrayLike,
    n_classes: int,
    tau: float | None,
    unknown_kind: ArrayLike | None = None,
) -> dict[str, Path]:
    """Write ``roc.png``, ``oscr.png``, ``af1_crr.png`` and ``scores.png`` into ``out_dir``.

    Inputs follow ``docs/metrics.md``; they are checked (``MetricInputError``) and every
    curve is computed before the first file is written, so bad input leaves no partial set.
    ROC and OSCR get one curve per unknown kind plus ``all``; with a single kind covering
    every unknown image, ``all`` would repeat it and is left out.
    """
    out_dir = Path(out_dir)
    af1_crr = af1_crr_curve(y_true, candidates, scores, n_classes)
    y, c, s = _open_set_inputs(y_true, candidates, scores, n_classes)
    operating_point = None
    if tau is not None:
        predictions = open_set_predictions(c, s, tau)
        operating_point = (correct_rejection_rate(y, predictions), average_f1(y, predictions, n_classes))
    known = y != UNKNOWN_LABEL
    kinds = np.full(len(y), "", dtype=str) if unknown_kind is None else _kinds(unknown_kind, y)
    named = sorted(set(kinds[~known].tolist()) - {""})
    unlabelled = s[~known & (kinds == "")]

    subsets: dict[str, np.ndarray] = {}
    if not known.all() and (len(named) != 1 or unlabelled.size):
        subsets[ALL] = np.ones(len(y), dtype=bool)
    for kind in named:
        subsets[kind] = known | (kinds == kind)
    rocs = {name: roc_curve(~known[keep], s[keep]) for name, keep in subsets.items()}
    oscrs = {name: oscr(y[keep], c[keep], s[keep]) for name, keep in subsets.items()}
    unknown_groups = {kind: s[kinds == kind] for kind in named}
    if unlabelled.size:
        unknown_groups["unknown" if not named else UNLABELLED] = unlabelled

    counts = f"{int(known.sum()):,} known, {int((~known).sum()):,} unknown images"
    return {
        "roc": plot_roc(rocs, out_dir / "roc.png", title=f"Known vs unknown ROC\n{counts}"),
        "oscr": plot_oscr(oscrs, out_dir / "oscr.png", title=f"Open-set classification rate\n{counts}"),
        "af1_crr": plot_af1_crr(
            af1_crr,
            out_dir / "af1_crr.png",
            operating_point=operating_point,
            tau=tau,
            title=f"aF1 against CRR ({n_classes} known classes)\n{counts}",
        ),
        "scores": plot_score_histograms(
            s[known], unknown_groups, out_dir / "scores.png", tau=tau, title=f"Rejection scores\n{counts}"
        ),
    }


# --------------------------------------------------------------------------- robustness


ROBUSTNESS_TITLES = {
    "accuracy": "Closed-set accuracy",
    "auc": "AUC (known vs unknown)",
    "oscr": "OSCR",
    "crr": "CRR at tau",
}
_MODEL_COLOURS = ("black", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def write_robustness_plots(out_dir: Path, rows: Sequence[RobustnessRow]) -> dict[str, Path]:
    """``robustness_<figure>.png`` per figure of ``robustness.METRICS``: one panel per
    perturbation, its strengths from mildest to strongest after ``clean``, one line per model.

    The x axis is categorical: ``clean`` is not a strength of any perturbation (JPEG at 100
    is not lossless, a 1.0 resize is not a Lanczos pass), so it stands on its own tick.
    """
    from osma_cli.evaluation.robustness import METRICS

    out_dir = Path(out_dir)
    models = list(dict.fromkeys(row.model for row in rows))
    kinds: dict[str, list] = {}
    for row in rows:
        if row.perturbation is not None:
            kinds.setdefault(row.perturbation.name, [])
            if row.perturbation not in kinds[row.perturbation.name]:
                kinds[row.perturbation.name].append(row.perturbation)
    for perturbations in kinds.values():
        perturbations.sort(key=lambda p: p.severity())
    written = {}
    for metric in METRICS:
        path = out_dir / f"robustness_{metric}.png"
        with _panels(path, max(1, len(kinds))) as axes:
            for ax, (name, perturbations) in zip(axes, kinds.items()):
                labels = ["clean", *(p.spec.partition(":")[2] for p in perturbations)]
                for k, model in enumerate(models):
                    mine = {row.perturbation: row.metrics()[metric] for row in rows if row.model == model}
                    values = [mine.get(p) for p in (None, *perturbations)]
                    ax.plot(
                        range(len(labels)),
                        [np.nan if v is None else 100 * v for v in values],
                        marker="o",
                        color=_MODEL_COLOURS[k % len(_MODEL_COLOURS)],
                        label=model,
                        linewidth=1.8,
                    )
                ax.set_xticks(range(len(labels)), labels)
                ax.set_xlabel(perturbations[0].axis)
                ax.set_title(name)
                ax.set_ylim(-1, 101)
                ax.grid(True, alpha=0.3)
            axes[0].set_ylabel(f"{ROBUSTNESS_TITLES[metric]} (%)")
            if kinds:
                axes[0].legend(loc="lower left", fontsize="small")
            else:
                _say_in_axes(axes[0], "no perturbation")
            axes[0].figure.suptitle(f"{ROBUSTNESS_TITLES[metric]}: test images perturbed, references clean")
        written[metric] = path
    return written
