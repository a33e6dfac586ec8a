"""Would references built from clean images *and* JPEG copies hold under JPEG? A measurement.

For each split, the references and tau come from the training and validation images of two
copies of the benchmark (the built-in one and one made by ``jpeg_benchmark_root.py
--all-parts`` at quality Q), labelled alike; the test images come from a third copy (clean,
or re-compressed at some quality). A descriptor's projection is fitted on the same mixed
training images. This is the "JPEG-aware references" option of issue 14, measured without
building it into osma.

Usage:
    python scripts/jpeg_aware_references.py --model fsd.safetensors --extra-root /tmp/zoo-q90-all \\
        --test-root /tmp/zoo-q90 --splits 1 3
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from osma_cli.api import EmbedOptions
from osma_cli.cache import EmbeddingCache
from osma_cli.embed import Embedder
from osma_cli.evaluation.protocol import run_benchmark
from osma_cli.evaluation.sources import load_pose_split
from osma_cli.home import osma_home
from osma_cli.rules import get_rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=osma_home() / "benchmarks" / "zoo")
    parser.add_argument("--extra-root", type=Path, required=True, help="a --all-parts JPEG copy")
    parser.add_argument("--test-root", type=Path, help="where the test images come from (default: --root)")
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--rule", default="fang")
    args = parser.parse_args()
    embedder = Embedder.from_file(args.model, device="cpu")
    cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad")
    rows = []
    for k in args.splits:
        clean, extra = (load_pose_split(r, f"split{k}") for r in (args.root, args.extra_root))
        test = load_pose_split(args.test_root or args.root, f"split{k}")
        mixed = replace(
            clean,
            train=clean.train + extra.train,
            val=clean.val + extra.val,
            test_known=test.test_known,
            test_unknown=test.test_unknown,
        )
        m = run_benchmark(
            embedder, mixed, options=EmbedOptions(batch_size=16, workers=1), cache=cache, rule=get_rule(args.rule)
        ).report.to_dict()
        rows.append([100 * m[key] for key in ("closed_set_accuracy", "auc", "oscr", "crr")])
        print(f"split{k}: acc {rows[-1][0]:.1f} AUC {rows[-1][1]:.1f} OSCR {rows[-1][2]:.1f} CRR {rows[-1][3]:.1f}")
    mean = np.mean(rows, axis=0)
    print(f"mean: acc {mean[0]:.1f} AUC {mean[1]:.1f} OSCR {mean[2]:.1f} CRR {mean[3]:.1f}")


if __name__ == "__main__":
    main()
