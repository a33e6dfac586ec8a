"""Side by side on the built-in benchmark: models x open-set rules x splits, one Markdown table.

Each (model, rule, split) is ``run_benchmark`` as ``osma benchmark`` runs it: references from the
split's training images, tau from its validation images at 95% acceptance, every metric on its
test images. A descriptor's projection is fitted on each split's own known generators (so no
unknown generator of the split has shaped it); a network is used as it is. Features come from
the embedding cache, so a second rule or split describes no image again.

``--data-root`` points at a copy of the benchmark (e.g. one made by ``jpeg_benchmark_root.py``,
whose test images are JPEG re-compressed); default: the built-in one.

Usage:
    python scripts/descriptor_comparison.py --model mislnet=weights/osma-mislnet.safetensors \\
        --model fsd=/tmp/fsd.safetensors --rules fang mahalanobis gmm --splits 1 2 3 4 5 --out table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from osma_cli.api import EmbedOptions
from osma_cli.cache import EmbeddingCache
from osma_cli.embed import Embedder
from osma_cli.evaluation.protocol import run_benchmark
from osma_cli.evaluation.sources import load_pose_split
from osma_cli.home import osma_home
from osma_cli.rules import get_rule

KINDS = ("seed", "arch", "dataset")
COLUMNS = (
    ["acc"]
    + [f"AUC {k}" for k in KINDS]
    + ["AUC"]
    + [f"OSCR {k}" for k in KINDS]
    + ["OSCR", "aF1", "CRR", "aF1-CRR area"]
)


def row(metrics: dict) -> list[float]:
    kinds = metrics.get("per_kind", {})
    values = [metrics["closed_set_accuracy"]]
    values += [kinds.get(k, {}).get("auc", np.nan) for k in KINDS] + [metrics["auc"]]
    values += [kinds.get(k, {}).get("oscr", np.nan) for k in KINDS] + [metrics["oscr"]]
    values += [metrics["af1"], metrics["crr"], metrics["af1_crr_auc"]]
    return [100 * (np.nan if v is None else v) for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=weights.safetensors")
    parser.add_argument("--rules", nargs="+", default=["fang"], help="NAME or NAME:{json params}")
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--data-root", type=Path, default=osma_home() / "benchmarks" / "zoo")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    parser.add_argument("--json", type=Path, help="write every split's metrics here")
    args = parser.parse_args()
    lines = ["| model | rule | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    everything = {}
    for spec in args.model:
        label, _, path = spec.partition("=")
        embedder = Embedder.from_file(path, device="cpu")
        cache = EmbeddingCache.for_embedder(embedder, n_crops=1, small="pad")
        for rule_spec in args.rules:
            name, _, params = rule_spec.partition(":")
            rule = get_rule(name, **(json.loads(params) if params else {}))
            rows = []
            for k in args.splits:
                run = run_benchmark(
                    embedder,
                    load_pose_split(args.data_root, f"split{k}"),
                    options=EmbedOptions(batch_size=16, workers=args.workers),
                    cache=cache,
                    rule=rule,
                )
                metrics = run.report.to_dict()
                everything[f"{label} {rule_spec} split{k}"] = metrics
                rows.append(row(metrics))
                print(
                    f"{label} {rule_spec} split{k}: " + " ".join(f"{c} {v:.1f}" for c, v in zip(COLUMNS, rows[-1])),
                    flush=True,
                )
            mean = np.mean(rows, axis=0)
            lines.append(f"| {label} | {rule_spec} | " + " | ".join(f"{v:.1f}" for v in mean) + " |")
    table = "\n".join(lines) + "\n"
    print(f"\nmean of splits {', '.join(map(str, args.splits))} ({args.data_root}):\n{table}")
    if args.out:
        args.out.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
