"""Measure the zero-shot detector: AUC and accuracy per generator, and what compression does to it.

Images (none of them seen by the detector's fit or calibration; ``scripts/train_detector.py``):

- real: the test camera photos (``WORK/test-real.txt``: every photo of the camera models whose
  photos make the zoo's test tiles) and copies of them: re-saved losslessly after a resize or an
  off-grid crop, and JPEG re-compressed at q95, q90 and q75;
- the six real generators of the development data (``DATA/generated/*``), as they are and
  JPEG-compressed at q95 and q90;
- the 24 zoo generators (their test tiles, ``ZOO/dataset/zoo/fake/<generator>``), against the
  zoo's real test tiles (the same photos, decoded, as PNG), as they are and at q90.

Per generator: AUC (synthetic = positive, the detector's score) against the real images
named in the table, the share called synthetic at the detector's threshold, and the balanced
accuracy (mean of that share and the share of the real images called real). Descriptors
are cached (``osma_cli.training.fsd_detector.describe_photos``), so a second run, or a run
with another detector on the same descriptor, describes nothing again.

``--select`` instead compares detector settings (PCA dims, mixture size, covariance) fitted
on the training photos' cached descriptors, measured on the zoo's *validation* tiles only
(generated from photos of the zoo's validation part), so the test figures stay untouched.

Usage:
    python scripts/detector_figures.py --data ../shared/data --work /tmp/osma-detector [--out docs/x.md]
    python scripts/detector_figures.py --data ../shared/data --work /tmp/osma-detector --select
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osma_cli.data import iter_image_files  # noqa: E402
from osma_cli.data.resave import Resave, parse_resave  # noqa: E402
from osma_cli.detect_files import load  # noqa: E402
from osma_cli.detection import Detector, fit_detector  # noqa: E402
from osma_cli.evaluation.metrics import roc_auc  # noqa: E402
from osma_cli.training.fsd_detector import describe_photos, photo_groups, split_held_out  # noqa: E402

TEST_LIST = REPO / "docs" / "shared_data_test_files.txt"
"""The development data's fixed test part (``scripts/shared_data_split.py``): the six generators'
figures are reported on it; the other files of the six generators may be used by ``--select``."""
REAL_COPIES = ("original", "resize:0.5", "resize:0.75", "offgrid:3", "jpeg:95", "jpeg:90", "jpeg:75")
GENERATED_COPIES = ("original", "jpeg:95", "jpeg:90")
ZOO_COPIES = ("original", "jpeg:90")


def copies_of(names) -> tuple[Resave, ...]:
    return tuple(Resave("original") if n == "original" else parse_resave(n) for n in names)


class Described:
    """Raw descriptors of a set of files, per copy name."""

    def __init__(self, embedder, paths: list[Path], names, note: str) -> None:
        start = time.time()
        described = describe_photos(embedder, paths, copies_of(names))
        self.paths = paths
        self.by_copy = {c.name: described.raw[described.copy_index == j] for j, c in enumerate(described.copies)}
        self.failures = described.failures
        print(
            f"  {note}: {len(paths)} files x {len(names)} copies, {time.time() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def zoo_tiles(zoo: Path, part: str) -> list[str]:
    """Names of the zoo's real tiles of one part (split1's lists; every split cuts the same tiles)."""
    listing = zoo / "dataset" / f"split1_{part}" / "annotations" / f"split1_{part}.txt"
    return [line.split("\t")[0].rsplit("/", 1)[1] for line in listing.read_text().splitlines() if "/real/" in line]


def test_part(data: Path) -> set[str]:
    """Paths of the six generators' test files (``TEST_LIST``), under ``data``."""
    return {str(data / line.strip()) for line in TEST_LIST.read_text().splitlines() if line.startswith("generated/")}


def figures(detector: Detector, positives: np.ndarray, negatives: np.ndarray) -> dict:
    pos, neg = detector.score_raw(positives), detector.score_raw(negatives)
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    detected = float(np.mean(pos >= detector.threshold))
    passed = float(np.mean(neg < detector.threshold))
    return {
        "n": int(len(pos)),
        "n_real": int(len(neg)),
        "auc": roc_auc(labels, np.r_[pos, neg]),
        "detected": detected,
        "balanced_accuracy": (detected + passed) / 2,
    }


def share_real(detector: Detector, raw: np.ndarray) -> float:
    return float(np.mean(detector.score_raw(raw) < detector.threshold))


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def measure(args, loaded) -> dict:
    embedder, detector = loaded.embedder, loaded.detector
    print("describing (cached after the first run):", file=sys.stderr)
    test_real = [Path(p) for p in (args.work / "test-real.txt").read_text().split()]
    real = Described(embedder, test_real, REAL_COPIES, "test camera photos")
    generators = {
        g.name: Described(embedder, sorted(p for p in g.iterdir() if p.is_file()), GENERATED_COPIES, g.name)
        for g in sorted((args.data / "generated").iterdir())
    }
    zoo_root = args.zoo / "dataset" / "zoo"
    tiles = zoo_tiles(args.zoo, "test")[: args.zoo_per_generator]
    zoo_real = Described(embedder, [zoo_root / "real" / t for t in tiles], ZOO_COPIES, "zoo real test tiles")
    zoo = {
        g.name: Described(embedder, [g / t for t in tiles], ZOO_COPIES, g.name)
        for g in sorted((zoo_root / "fake").iterdir())
    }

    out: dict = {
        "detector": str(loaded.path),
        "threshold": detector.threshold,
        "acceptance": detector.acceptance,
        "real": {c: share_real(detector, real.by_copy[c]) for c in REAL_COPIES},
        "n_real": len(test_real),
        "zoo_real": {c: share_real(detector, zoo_real.by_copy[c]) for c in ZOO_COPIES},
        "generated": {},
        "zoo": {},
    }
    test_files = test_part(args.data)
    for name, d in generators.items():
        rows = np.array([str(p) in test_files for p in d.paths])
        out["generated"][name] = {
            c: figures(detector, d.by_copy[c][rows], real.by_copy["original"]) for c in GENERATED_COPIES
        }
        for c in ("jpeg:95", "jpeg:90"):
            out["generated"][name][f"{c} vs real {c}"] = figures(detector, d.by_copy[c][rows], real.by_copy[c])
        out["generated"][name]["all images"] = figures(detector, d.by_copy["original"], real.by_copy["original"])
    for name, d in zoo.items():
        out["zoo"][name] = {c: figures(detector, d.by_copy[c], zoo_real.by_copy[c]) for c in ZOO_COPIES}
    out["mean"] = {
        "generated_auc": float(np.mean([g["original"]["auc"] for g in out["generated"].values()])),
        "generated_all_images_auc": float(np.mean([g["all images"]["auc"] for g in out["generated"].values()])),
        "generated_balanced_accuracy": float(
            np.mean([g["original"]["balanced_accuracy"] for g in out["generated"].values()])
        ),
        "generated_jpeg90_auc": float(
            np.mean([g["jpeg:90 vs real jpeg:90"]["auc"] for g in out["generated"].values()])
        ),
        "generated_jpeg90_detected": float(np.mean([g["jpeg:90"]["detected"] for g in out["generated"].values()])),
        "generated_jpeg95_detected": float(np.mean([g["jpeg:95"]["detected"] for g in out["generated"].values()])),
        "zoo_auc": float(np.mean([g["original"]["auc"] for g in out["zoo"].values()])),
        "zoo_balanced_accuracy": float(np.mean([g["original"]["balanced_accuracy"] for g in out["zoo"].values()])),
        "zoo_jpeg90_auc": float(np.mean([g["jpeg:90"]["auc"] for g in out["zoo"].values()])),
        "zoo_jpeg90_detected": float(np.mean([g["jpeg:90"]["detected"] for g in out["zoo"].values()])),
    }
    out["zoo_tiles_per_generator"] = len(tiles)
    return out


def markdown(out: dict) -> str:
    m = out["mean"]
    lines = [
        f"Threshold {out['threshold']:.2f} (passes {pct(out['acceptance'])}% of the held-out calibration "
        f"photos and their copies).",
        "",
        f"**Real test camera photos** ({out['n_real']} photos of camera models never seen), share called real, %:",
        "",
        "| " + " | ".join(REAL_COPIES) + " |",
        "|" + "---|" * len(REAL_COPIES),
        "| " + " | ".join(pct(out["real"][c]) for c in REAL_COPIES) + " |",
        "",
        "**Six real generators**, their test part (`docs/shared_data_test_files.txt`), against the real "
        "test camera photos (AUC %, share called synthetic %, balanced accuracy %); JPEG columns: the "
        "generated images compressed at that quality, against the real photos as they are / re-compressed "
        "at the same quality; last column: AUC over all of the generator's images (its other images may "
        "have been used to choose settings, `--select`):",
        "",
        "| generator | n | AUC | synthetic | bal. acc. | q95: synthetic | q95: AUC vs real / vs real q95 "
        "| q90: synthetic | q90: AUC vs real / vs real q90 | all images: AUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in out["generated"].items():
        o, a, b = g["original"], g["jpeg:95"], g["jpeg:90"]
        lines.append(
            f"| {name} | {o['n']} | {pct(o['auc'])} | {pct(o['detected'])} | {pct(o['balanced_accuracy'])} "
            f"| {pct(a['detected'])} | {pct(a['auc'])} / {pct(g['jpeg:95 vs real jpeg:95']['auc'])} "
            f"| {pct(b['detected'])} | {pct(b['auc'])} / {pct(g['jpeg:90 vs real jpeg:90']['auc'])} "
            f"| {pct(g['all images']['auc'])} ({g['all images']['n']}) |"
        )
    lines.append(
        f"| **mean** | | **{pct(m['generated_auc'])}** | | {pct(m['generated_balanced_accuracy'])} "
        f"| {pct(m['generated_jpeg95_detected'])} | | {pct(m['generated_jpeg90_detected'])} "
        f"| / {pct(m['generated_jpeg90_auc'])} | {pct(m['generated_all_images_auc'])} |"
    )
    lines += [
        "",
        f"**Zoo generators** ({out['zoo_tiles_per_generator']} test tiles each) against the zoo's real "
        f"test tiles (same photos; called real: {pct(out['zoo_real']['original'])}% as they are, "
        f"{pct(out['zoo_real']['jpeg:90'])}% at q90); q90: both sides compressed:",
        "",
        "| generator | AUC | synthetic | bal. acc. | q90: AUC | q90: synthetic |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in out["zoo"].items():
        o, j = g["original"], g["jpeg:90"]
        lines.append(
            f"| {name} | {pct(o['auc'])} | {pct(o['detected'])} | {pct(o['balanced_accuracy'])} "
            f"| {pct(j['auc'])} | {pct(j['detected'])} |"
        )
    lines.append(
        f"| **mean** | **{pct(m['zoo_auc'])}** | | {pct(m['zoo_balanced_accuracy'])} "
        f"| {pct(m['zoo_jpeg90_auc'])} | {pct(m['zoo_jpeg90_detected'])} |"
    )
    return "\n".join(lines) + "\n"


SELECT_GRID = (
    (64, 1, 1),
    (128, 1, 1),
    (64, 2, 1),
    (64, 4, 1),
    (128, 4, 1),
    (64, 4, 8),
    (96, 4, 8),
    (128, 4, 8),
    (64, 8, 8),
    (96, 8, 8),
)
"""(PCA dimensions, mixture components, restarts) compared by ``--select``."""
ALL_COPIES = ("original", "resize:0.5", "resize:0.75", "offgrid:3", "jpeg:95", "jpeg:90", "jpeg:85")
"""Every kind of copy ``--select`` describes the training photos with (its subsets are compared)."""
SELECT_COPIES = {
    "all copies": ALL_COPIES,
    "no resized copies": ("original", "offgrid:3", "jpeg:95", "jpeg:90", "jpeg:85"),
}


def select(args, loaded) -> None:
    """Detector settings compared on selection data only: the zoo's validation tiles, and the six
    generators' files outside their test part; the criterion is the mean of the two mean AUCs."""
    embedder = loaded.embedder
    real_root = args.work / "real"
    paths = sorted(iter_image_files([real_root]))
    held = split_held_out(photo_groups(paths, real_root), 0.2, 0)
    copies = ALL_COPIES
    train = describe_photos(embedder, paths, copies_of(copies))
    zoo_root = args.zoo / "dataset" / "zoo"
    tiles = zoo_tiles(args.zoo, "val")
    val_real = Described(embedder, [zoo_root / "real" / t for t in tiles], ZOO_COPIES, "zoo real val tiles")
    fakes = {
        g.name: Described(embedder, [g / t for t in tiles], ZOO_COPIES, g.name)
        for g in sorted((zoo_root / "fake").iterdir())
        if (g / tiles[0]).exists()
    }
    test_files = test_part(args.data)
    generated = {}
    for g in sorted((args.data / "generated").iterdir()):
        d = Described(embedder, sorted(p for p in g.iterdir() if p.is_file()), GENERATED_COPIES, g.name)
        generated[g.name] = d.by_copy["original"][[str(p) not in test_files for p in d.paths]]
    # real negatives for the six generators: the calibration part's originals (not the test cameras)
    print(
        "| copies | PCA | K | restarts | zoo val AUC | zoo val q90 AUC | six (non-test) AUC | criterion "
        "| zoo val synthetic | six (non-test) synthetic |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for subset, names in SELECT_COPIES.items():
        keep = np.isin(np.array(copies), names)[train.copy_index]
        fit_rows, held_rows = keep & ~held[train.photo], keep & held[train.photo]
        negatives = train.raw[held_rows & (train.copy_index == 0)]
        for pca_dim, components, restarts in SELECT_GRID:
            d = fit_detector(
                train.raw[fit_rows],
                train.raw[held_rows],
                pca_dim=pca_dim,
                components=components,
                covariance="full",
                restarts=restarts,
            )
            zoo_auc = np.mean(
                [figures(d, f.by_copy["original"], val_real.by_copy["original"])["auc"] for f in fakes.values()]
            )
            zoo90 = np.mean(
                [figures(d, f.by_copy["jpeg:90"], val_real.by_copy["jpeg:90"])["auc"] for f in fakes.values()]
            )
            six = [figures(d, raw, negatives) for raw in generated.values()]
            six_auc = np.mean([f["auc"] for f in six])
            zoo_det = np.mean([np.mean(d.score_raw(f.by_copy["original"]) >= d.threshold) for f in fakes.values()])
            print(
                f"| {subset} | {pca_dim} | {components} | {restarts} | {pct(zoo_auc)} | {pct(zoo90)} | {pct(six_auc)} "
                f"| {pct((zoo_auc + six_auc) / 2)} | {pct(zoo_det)} | {pct(np.mean([f['detected'] for f in six]))} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="scripts/train_detector.py's --work")
    parser.add_argument("--detector", type=Path, default=None, help="default: WORK/detector-fsd.safetensors")
    parser.add_argument("--zoo", type=Path, default=Path("~/.osma/benchmarks/zoo").expanduser())
    parser.add_argument("--zoo-per-generator", type=int, default=25, help="test tiles per zoo generator")
    parser.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    parser.add_argument("--json", type=Path, help="also write every figure (JSON) here")
    parser.add_argument("--select", action="store_true", help="compare settings on the zoo's validation tiles")
    args = parser.parse_args()
    detector = args.detector or args.work / "detector-fsd.safetensors"
    loaded = load(detector, REPO / "weights" / "osma-fsd.safetensors", "cpu")
    if args.select:
        select(args, loaded)
        return
    out = measure(args, loaded)
    text = markdown(out)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
