"""Figures for ``osma discover`` (docs/discovery.md): how well the unknowns' clusters match their generators.

For each zoo split (``osma benchmark``'s protocol: references and, for a descriptor, its
projection from the split's known training images; tau for 95% acceptance of its validation
images) and for the six real generators of ``../shared/data`` (their fixed test part,
``scripts/shared_data_split.py``) treated as unknown to zoo split 1's known generators:

1. **Table 5 (POSE)**: purity, NMI and ARI (``osma_cli.discovery_metrics``) of clusterings of
   all the unknown generators' test images, HDBSCAN and agglomerative at several cuts
   (in units of the known generators' median sigma), and, for comparison, scikit-learn's
   HDBSCAN without ``allow_single_cluster`` (which osma sets).
2. **End to end**: each unknown generator's images are split in two (the first 60% by
   file name for discovery, the rest held back). The discovery part is scored, its
   rejected images clustered, and every cluster that is at least 80% one generator (what an
   analyst would enrol after looking at its contact sheet) is enrolled under that
   generator's name (the largest such cluster per generator). Then the held-back images
   are scored with the enlarged store: for each enrolled generator, the share of its
   held-back images attributed to it; for the others, the CRR (share still rejected).

The enrolment here is ``ReferenceStore.enroll`` in memory (the vectors are at hand); that
``osma discover --enroll`` gives the same store as ``osma enroll`` is a test
(tests/cli/test_discover.py). Zoo and shared-data images are all PNGs: a model with JPEG
regimes is used in its lossless regime. Features go through the embedding cache.

Usage:
    python scripts/discovery_figures.py --model fsd --splits 1 3 --real --out /tmp/discovery-fsd.json
    python scripts/discovery_figures.py --model mislnet --splits 1 3 --real --out /tmp/discovery-mislnet.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from osma_cli.cache import EmbeddingCache  # noqa: E402
from osma_cli.calibration import threshold_for_acceptance  # noqa: E402
from osma_cli.discovery import AGGLOMERATIVE, HDBSCAN_METHOD, NOISE, group_labels  # noqa: E402
from osma_cli.discovery_metrics import clustering_scores  # noqa: E402
from osma_cli.embed import Embedder, EmbedOptions  # noqa: E402
from osma_cli.evaluation.protocol import embed_part, projection_settings  # noqa: E402
from osma_cli.evaluation.splits import LabeledImage, load_pose_split  # noqa: E402
from osma_cli.home import default_model_path  # noqa: E402
from osma_cli.projection import fit_projection  # noqa: E402
from osma_cli.references import ReferenceStore, Threshold  # noqa: E402
from osma_cli.regimes import LOSSLESS  # noqa: E402

SCALES = (1.0, 1.5, 2.0, 3.0)
DISCOVERY_SHARE = 0.6
PURE = 0.8
ACCEPTANCE = 0.95


def no_progress(n: int) -> None:
    return None


class Space:
    """A model's space for one set of known generators: the store (tau set) and a way to embed more images."""

    def __init__(
        self,
        embedder: Embedder,
        known: list[LabeledImage],
        val: list[LabeledImage],
        names: list[str],
        cache: EmbeddingCache,
        options: EmbedOptions,
    ) -> None:
        self.embedder, self.cache, self.options = embedder, cache, options
        self.refit = embedder.is_descriptor
        train = self._raw(known)
        labels = np.array([im.label for im in train.images])
        self.projection = (
            fit_projection(train.embeddings.astype(np.float64), labels, **projection_settings(embedder.meta))
            if self.refit
            else None
        )
        vectors = self._apply(train.embeddings)
        self.store = ReferenceStore.for_weights(embedder.meta)
        self.store.embedding_dim = vectors.shape[1]
        for k, name in enumerate(names):
            self.store.enroll(name, vectors[labels == k])
        val_vectors, _ = self.embed(val)
        scores = self.store.fitted_rule().score(val_vectors).scores
        self.store.set_threshold(Threshold(value=threshold_for_acceptance(scores, ACCEPTANCE), method="val 95%"))

    def _raw(self, images: list[LabeledImage]):
        return embed_part(self.embedder, images, self.cache, self.options, no_progress, features_only=self.refit)

    def _apply(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float64)
        return self.projection.apply(x) if self.projection is not None else x

    def embed(self, images: list[LabeledImage]) -> tuple[np.ndarray, list[LabeledImage]]:
        part = self._raw(images)
        return self._apply(part.embeddings), part.images


def table5(vectors: np.ndarray, truth: list[str], store: ReferenceStore, min_size: int) -> dict:
    """Purity/NMI/ARI of HDBSCAN and of agglomerative at each cut scale, on every unknown image."""
    out = {}
    for method, scale in [(HDBSCAN_METHOD, None)] + [(AGGLOMERATIVE, s) for s in SCALES]:
        labels = group_labels(
            vectors, store, min_cluster_size=min_size, method=method, cut_scale=scale if scale is not None else 1.0
        )
        key = method if scale is None else f"{method} x{scale:g}"
        out[key] = clustering_scores(truth, labels).to_dict()
    from sklearn.cluster import HDBSCAN

    plain = HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(vectors)
    out["hdbscan, no single cluster (not an osma option)"] = clustering_scores(truth, plain).to_dict()
    return out


def end_to_end(
    space: Space, vectors: np.ndarray, images: list[LabeledImage], method: str, scale: float, min_size: int
) -> dict:
    """Discover on 60% of each unknown generator's images, enrol the pure clusters, score the rest."""
    generators = sorted({im.generator for im in images})
    order = {
        g: [i for i in sorted(range(len(images)), key=lambda i: images[i].path.name) if images[i].generator == g]
        for g in generators
    }
    discover_idx = [i for g in generators for i in order[g][: round(DISCOVERY_SHARE * len(order[g]))]]
    held_idx = [i for g in generators for i in order[g][round(DISCOVERY_SHARE * len(order[g])) :]]
    store = copy.deepcopy(space.store)
    tau = store.threshold.value
    scored = space.store.fitted_rule().score(vectors[discover_idx])
    rejected = [i for i, s in zip(discover_idx, scored.scores) if not s < tau]
    labels = group_labels(vectors[rejected], space.store, min_cluster_size=min_size, method=method, cut_scale=scale)
    enrolled: dict[str, int] = {}
    clusters = []
    for c in sorted(set(labels.tolist()) - {NOISE}):
        members = [rejected[j] for j in np.flatnonzero(labels == c)]
        top, count = Counter(images[i].generator for i in members).most_common(1)[0]
        clusters.append({"size": len(members), "majority": top, "share": count / len(members)})
        if count / len(members) >= PURE and top not in enrolled:
            space_vectors = vectors[members]
            store.enroll(f"new:{top}", space_vectors)
            enrolled[top] = len(members)
    after = store.fitted_rule().score(vectors[held_idx]) if held_idx else None
    names = store.names
    per_generator = {}
    for g in generators:
        mine = [k for k, i in enumerate(held_idx) if images[i].generator == g]
        if not mine:
            continue
        accepted = after.scores[mine] < tau
        as_g = accepted & (np.array([names[c] for c in after.candidates[mine]]) == f"new:{g}")
        per_generator[g] = {
            "enrolled": g in enrolled,
            "held_back": len(mine),
            "attributed_to_it": float(as_g.mean()),
            "rejected": float((~accepted).mean()),
        }
    new = [v["attributed_to_it"] for v in per_generator.values() if v["enrolled"]]
    rest = [k for k, i in enumerate(held_idx) if images[i].generator not in enrolled]
    crr_rest = float((after.scores[rest] >= tau).mean()) if rest else None
    return {
        "method": method if method == HDBSCAN_METHOD else f"{method} x{scale:g}",
        "discovery_images": len(discover_idx),
        "rejected": len(rejected),
        "clusters": clusters,
        "enrolled": enrolled,
        "n_new": len(enrolled),
        "n_unknown_generators": len(generators),
        "mean_attributed_to_new": float(np.mean(new)) if new else None,
        "crr_remaining": crr_rest,
        "n_remaining": len(rest),
        "per_generator": per_generator,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fsd")
    parser.add_argument("--zoo", type=Path, default=Path("~/.osma/benchmarks/zoo").expanduser())
    parser.add_argument("--splits", type=int, nargs="*", default=[1, 3])
    parser.add_argument("--real", action="store_true", help="also the six real generators of --data as unknown")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--min-cluster-size", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    embedder = Embedder.from_file(default_model_path(args.model), device="cpu")
    if embedder.is_routed:
        embedder = embedder.for_regime(LOSSLESS)
    options = EmbedOptions(workers=args.workers)
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad")
    results = {"model": args.model, "min_cluster_size": args.min_cluster_size, "splits": {}}
    runs = [(f"split{s}", s) for s in args.splits] + ([("real-six", 1)] if args.real else [])
    for label, split_no in runs:
        start = time.perf_counter()
        split = load_pose_split(args.zoo, split_no)
        space = Space(embedder, list(split.train), list(split.val), list(split.class_names), cache, options)
        unknown = list(split.test_unknown) if label != "real-six" else real_six(args.data)
        vectors, images = space.embed(unknown)
        truth = [im.generator for im in images]
        entry = {
            "n_unknown": len(images),
            "n_generators": len(set(truth)),
            "table5": table5(vectors, truth, space.store, args.min_cluster_size),
            "end_to_end": [
                end_to_end(space, vectors, images, m, s, args.min_cluster_size)
                for m, s in [(HDBSCAN_METHOD, 1.0)] + [(AGGLOMERATIVE, x) for x in SCALES[1:]]
            ],
            "seconds": round(time.perf_counter() - start, 1),
        }
        results["splits"][label] = entry
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(
            label,
            json.dumps(
                {
                    k: {m: round(v[m], 3) for m in ("purity", "nmi", "ari", "clustered")}
                    for k, v in entry["table5"].items()
                }
            ),
            entry["seconds"],
            "s",
            flush=True,
        )


def real_six(data: Path) -> list[LabeledImage]:
    """The fixed test part of each of the six real generators (``scripts/shared_data_split.py``), as unknowns."""
    from shared_data_split import GENERATORS, ordered_files, split_files

    out = []
    for name, rel in GENERATORS.items():
        if name == "real":
            continue
        out += [
            LabeledImage(path=p, label=-1, kind="real-generator", generator=name)
            for p in split_files(ordered_files(data.resolve() / rel))["test"]
        ]
    return out


if __name__ == "__main__":
    main()
