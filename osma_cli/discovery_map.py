"""A 2-D map of the open space: known references, accepted images and the unknowns' clusters.

People read a picture of the open space faster than a table (POSE draws its figures so):
t-SNE (scikit-learn) of the vectors the attribution scored, after PCA to at most 50
dimensions (the usual step: it removes noise and makes t-SNE fast for a few thousand
points). The known references are the store's own vectors where the store keeps them (a
``gmm`` store), else each generator's centroid, drawn as a labelled star. Seeded, so the same
points give the same map.

One map per embedding space: a model with JPEG regimes scores each regime in its own space
(another head, other references), and placing vectors of two spaces on one map would draw
distances that mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osma_cli.atomic import atomic_write
from osma_cli.discovery import NOISE, SpaceView

SEED = 0
PCA_DIMS = 50
PERPLEXITY = 30.0
ITERATIONS = 500
"""Half scikit-learn's default: the map is a picture to look at, and t-SNE's cost grows with it."""
MAX_CONTEXT = 1000
"""At most this many accepted images, and as many store vectors, are drawn (a seeded sample):
they are context, and t-SNE's time grows with every point. Every unknown image is drawn."""
NOISE_COLOUR = "#9e9e9e"
ACCEPTED_COLOUR = "#5b7fa6"


def embed_2d(points: np.ndarray, *, seed: int = SEED) -> np.ndarray:
    """(N, 2) t-SNE coordinates of (N, D) ``points`` (PCA to 50 dimensions first); deterministic.

    Below 4 points t-SNE has no neighbourhood to keep: the first two principal axes instead.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    points = np.asarray(points, np.float64)
    n = len(points)
    if n == 0:
        return np.zeros((0, 2))
    dims = min(PCA_DIMS, points.shape[1], n)
    reduced = (
        PCA(n_components=dims, random_state=seed).fit_transform(points)
        if points.shape[1] > dims
        else points - points.mean(axis=0)
    )
    if n < 4:
        out = np.zeros((n, 2))
        out[:, : min(2, reduced.shape[1])] = reduced[:, :2]
        return out
    perplexity = min(PERPLEXITY, (n - 1) / 3.0)
    return TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        max_iter=ITERATIONS,
        method="barnes_hut" if n > 200 else "exact",
    ).fit_transform(reduced)


def sample(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` items, the same ones for the same seed."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass(frozen=True)
class MapPoints:
    """What one map shows, each group's 2-D coordinates."""

    references: np.ndarray
    reference_names: list[str]
    """One name per row of ``references`` (a centroid, or one of the store's vectors)."""
    accepted: np.ndarray
    accepted_as: list[str]
    unknown: np.ndarray
    labels: np.ndarray
    centroids_only: bool
    """True when the store keeps no vectors and the references are its centroids."""


def map_points(view: SpaceView, *, seed: int = SEED, max_context: int = MAX_CONTEXT) -> MapPoints:
    """Place the store's references, the accepted and the unknown images of one space on one t-SNE map
    (at most ``max_context`` accepted images and store vectors, every unknown)."""
    store = view.store
    kept = [(g.name, g.vectors) for g in store.generators.values() if g.vectors is not None and len(g.vectors)]
    centroids_only = len(kept) != len(store.generators) or not kept
    if centroids_only:
        refs, names = store.centroids(), store.names
    else:
        refs = np.concatenate([vectors for _, vectors in kept])
        names = [name for name, vectors in kept for _ in range(len(vectors))]
    dim = store.embedding_dim
    refs = np.asarray(refs, np.float64).reshape(-1, dim)
    accepted = np.asarray(view.accepted, np.float64).reshape(-1, dim)
    keep_refs = sample(len(refs), max_context, seed) if not centroids_only else np.arange(len(refs))
    keep_accepted = sample(len(accepted), max_context, seed)
    names = [names[i] for i in keep_refs]
    accepted_as = [view.accepted_as[i] for i in keep_accepted]
    groups = [refs[keep_refs], accepted[keep_accepted], np.asarray(view.unknown, np.float64).reshape(-1, dim)]
    xy = embed_2d(np.concatenate(groups), seed=seed)
    a, b = len(groups[0]), len(groups[0]) + len(groups[1])
    return MapPoints(
        references=xy[:a],
        reference_names=list(names),
        accepted=xy[a:b],
        accepted_as=accepted_as,
        unknown=xy[b:],
        labels=np.asarray(view.labels, int),
        centroids_only=centroids_only,
    )


def cluster_colour(k: int) -> tuple:
    """The k-th cluster's colour: tab10 without its blue (the accepted images') and grey (noise), then tab20b."""
    import matplotlib

    distinct = [1, 2, 3, 4, 5, 6, 8, 9]
    if k < len(distinct):
        return matplotlib.colormaps["tab10"](distinct[k])
    return matplotlib.colormaps["tab20b"]((k - len(distinct)) % 20)


def draw_map(points: MapPoints, title: str):
    """A matplotlib figure of ``points`` (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 7), dpi=100)
    axes = figure.add_subplot()
    if len(points.accepted):
        axes.scatter(
            points.accepted[:, 0],
            points.accepted[:, 1],
            s=10,
            c=ACCEPTED_COLOUR,
            alpha=0.35,
            marker="o",
            label=f"accepted as known ({len(points.accepted)})",
        )
    noise = points.labels == NOISE
    if noise.any():
        axes.scatter(
            points.unknown[noise, 0],
            points.unknown[noise, 1],
            s=14,
            c=NOISE_COLOUR,
            marker="x",
            label=f"unknown, unclustered ({int(noise.sum())})",
        )
    for k, cluster in enumerate(sorted(set(points.labels.tolist()) - {NOISE})):
        mine = points.labels == cluster
        axes.scatter(
            points.unknown[mine, 0],
            points.unknown[mine, 1],
            s=22,
            color=cluster_colour(k),
            edgecolors="black",
            linewidths=0.3,
            label=f"cluster {cluster} ({int(mine.sum())})",
        )
    if len(points.references):
        what = "centroid" if points.centroids_only else "reference"
        axes.scatter(
            points.references[:, 0],
            points.references[:, 1],
            s=120 if points.centroids_only else 12,
            marker="*",
            c="black",
            label=f"known generator {what}s",
        )
        if points.centroids_only:
            for (x, y), name in zip(points.references, points.reference_names):
                axes.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.tight_layout()
    return figure


def map_file_name(regime: str | None) -> str:
    """``map.png`` for a model without regimes, ``map-<regime>.png`` for each regime of one with."""
    return "map.png" if regime is None else f"map-{regime}.png"


def write_map(path: Path | str, view: SpaceView, *, seed: int = SEED) -> MapPoints:
    """The map of one space as a PNG at ``path``, written atomically; returns what it placed."""
    points = map_points(view, seed=seed)
    space = "" if view.regime is None else f", {view.regime} regime"
    shown = "" if len(points.accepted) == len(view.accepted) else f" (of {len(view.accepted)})"
    title = (
        f"t-SNE of the scored vectors{space}: {len(points.accepted)}{shown} accepted, "
        f"{len(points.unknown)} unknown in {len(set(points.labels.tolist()) - {NOISE})} cluster(s)"
    )
    figure = draw_map(points, title)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return points
