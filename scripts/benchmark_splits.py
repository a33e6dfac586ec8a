"""Run ``osma benchmark`` on several splits of the built-in benchmark and tabulate the figures.

One ``osma benchmark splitN --model M --json --out OUT/splitN`` per split (the embedding cache
makes the later splits fast: they share the images), then a Markdown table in POSE Table 4's
shape (closed-set accuracy; AUC and OSCR per unknown kind and overall) plus Fang et al.'s aF1
and CRR at the calibrated tau and the aF1-CRR area, one row per split and their mean.

Usage:
    python scripts/benchmark_splits.py --model weights/osma-mislnet.safetensors --out /tmp/bench
    python scripts/benchmark_splits.py --model M --splits 1 2 3 --out /tmp/bench --label "osma"
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

KINDS = ("seed", "arch", "dataset")
COLUMNS = (
    ["acc"]
    + [f"AUC {k}" for k in KINDS]
    + ["AUC"]
    + [f"OSCR {k}" for k in KINDS]
    + ["OSCR", "aF1", "CRR", "aF1-CRR area"]
)


def figures(metrics: dict) -> list[float]:
    """One table row, in percent, from ``metrics`` of ``osma benchmark --json``."""
    kinds = metrics.get("per_kind", {})
    row = [metrics["closed_set_accuracy"]]
    row += [kinds.get(k, {}).get("auc", float("nan")) for k in KINDS] + [metrics["auc"]]
    row += [kinds.get(k, {}).get("oscr", float("nan")) for k in KINDS] + [metrics["oscr"]]
    row += [metrics["af1"], metrics["crr"], metrics["af1_crr_auc"]]
    return [100 * (v if v is not None else float("nan")) for v in row]


def mean(rows: list[list[float]]) -> list[float]:
    """The column means of several table rows."""
    return [sum(column) / len(rows) for column in zip(*rows)]


def markdown(rows: dict[str, list[float]], label: str) -> str:
    head = "| " + " | ".join([label] + COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1) + "\n"
    body = "".join("| " + " | ".join([name] + [f"{v:.2f}" for v in row]) + " |\n" for name, row in rows.items())
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--label", default="split")
    parser.add_argument("--extra", default="", help="more options for osma benchmark, quoted")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    for k in args.splits:
        out = args.out / f"split{k}"
        command = [
            sys.executable,
            "-m",
            "osma_cli",
            "benchmark",
            f"split{k}",
            "--model",
            str(args.model),
            "--json",
            "--out",
            str(out),
            *shlex.split(args.extra),
        ]
        print("$ " + shlex.join(command), file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"split{k} failed ({done.returncode}):\n{done.stderr}")
        rows[f"split{k}"] = figures(json.loads(done.stdout)["metrics"])
    if len(rows) > 1:
        rows["mean"] = mean(list(rows.values()))
    table = markdown(rows, args.label)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
