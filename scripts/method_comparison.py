"""Compare metric learning, POSE and metric learning with POSE's augmentation on the built-in benchmark.

For each split, three models (more with the --with-* flags) are trained with the same budget
(epochs, crop, batch size, seed, steps per epoch) on the split's training annotation files,
with its validation files:

    metric      osma train                   (ProxyNCA++, from scratch, lr 7e-4 x0.6 eight times)
    pose        osma train --method pose     (the paper's variant)
    metric+osa  osma train --open-space-aug
    pose-code   osma train --method pose --pose-variant released-code   (with --with-released-code)
    pose-fast   osma train --method pose with metric learning's rate and decay (with --with-pose-fast):
                POSE's own Adam rate, 1e-4 throughout, is meant for runs of ~100k steps
    metric-dct  osma train --arch dct_cnn (with --with-dct-metric): metric learning on POSE's
                backbone, which tells the backbone's share of a difference from the method's
    metric-dct+osa  the same with --open-space-aug (with --with-dct-osa)

then ``osma benchmark splitN --data-root ZOO --model M --json --out OUT/<method>/splitN``.
OUT/table.md gets one row per method (mean over the splits; the columns of
``benchmark_splits.py``, in percent), a table per split, and the wall time of each training.

Every step is skipped when its output exists (weights OUT/<method>/splitN.safetensors, then
OUT/<method>/splitN/metrics.json), so an interrupted run continues where it stopped; a training
that was cut off starts again from scratch. Weights trained with another budget are refused.

Usage:
    python scripts/method_comparison.py --out /tmp/mc --epochs 10
    python scripts/method_comparison.py --out /tmp/mc-smoke --splits 1 --epochs 1 --steps-per-epoch 2 \\
        --with-released-code
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmark_splits import figures, markdown, mean

from osma_cli.home import osma_home

METHODS = {
    "metric": [],
    "pose": ["--method", "pose"],
    "metric+osa": ["--open-space-aug"],
}
RELEASED_CODE = {"pose-code": ["--method", "pose", "--pose-variant", "released-code"]}
POSE_FAST = {"pose-fast": ["--method", "pose"]}
DCT_METRIC = {"metric-dct": ["--arch", "dct_cnn"]}
DCT_OSA = {"metric-dct+osa": ["--arch", "dct_cnn", "--open-space-aug"]}
OSMA = [sys.executable, "-m", "osma_cli"]
POSE_SCHEDULE = {"pose", "pose-code"}
"""Methods trained at POSE's own rate (1e-4, constant); every other one gets metric learning's."""


def run(command: list[str]) -> str:
    """Run an osma command (printed first); its stdout."""
    print("$ " + shlex.join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {shlex.join(command)}")
    return done.stdout


def train(weights: Path, method: str, flags: list[str], split: int, args) -> float:
    """Train unless ``weights`` exist; the wall time in seconds.

    ``osma train --json``'s summary (per-epoch history included), the budget and the wall time
    go to ``<weights stem>.train.json``.
    """
    budget = [
        "--epochs",
        str(args.epochs),
        "--crop",
        str(args.crop),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
    ]
    if method not in POSE_SCHEDULE:
        # ProxyNCA++ decays its rate every 2 (long) epochs in the paper; with short epochs it
        # would vanish early, so decay 8 times over the run, as the shipped defaults do.
        flags = ["--lr", "7e-4", "--decay-every", str(max(1, args.epochs // 8)), "--lr-decay", "0.6", *flags]
    if args.steps_per_epoch is not None:
        budget += ["--steps-per-epoch", str(args.steps_per_epoch)]
    record = weights.with_name(weights.stem + ".train.json")
    if weights.exists():
        done = json.loads(record.read_text()) if record.exists() else {}
        if done.get("budget", budget) != budget:
            sys.exit(f"{weights} was trained with {shlex.join(done['budget'])}: use another --out")
        print(f"# {weights} exists: not trained again", file=sys.stderr)
        return done.get("wall_s", float("nan"))
    annotations = args.zoo / "dataset" / f"split{split}_{{0}}" / "annotations" / f"split{split}_{{0}}.txt"
    start = time.monotonic()
    # --force: only ever replaces the checkpoint of a run that was cut off
    summary = run(
        OSMA
        + [
            "train",
            "--annotations",
            str(annotations).format("train"),
            "--val-annotations",
            str(annotations).format("val"),
            "--data-root",
            str(args.zoo),
            "--out",
            str(weights),
            "--force",
            "--json",
            *budget,
            *flags,
        ]
    )
    wall = time.monotonic() - start
    record.write_text(json.dumps({"wall_s": wall, "budget": budget, "train": json.loads(summary)}, indent=2) + "\n")
    return wall


def benchmark(weights: Path, split: int, zoo: Path) -> list[float]:
    """``osma benchmark`` unless its metrics.json exists; the table row."""
    out = weights.with_suffix("")
    if not (out / "metrics.json").exists():
        run(
            OSMA
            + [
                "benchmark",
                f"split{split}",
                "--data-root",
                str(zoo),
                "--model",
                str(weights),
                "--json",
                "--out",
                str(out),
            ]
        )
    return figures(json.loads((out / "metrics.json").read_text())["metrics"])


def wall_table(walls: dict[str, dict[int, float]], splits: list[int]) -> str:
    head = ["method"] + [f"split{k}" for k in splits] + ["total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [
        "| " + " | ".join([m] + [f"{t[k]:.0f}" for k in splits] + [f"{sum(t.values()):.0f}"]) + " |"
        for m, t in walls.items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument(
        "--with-released-code", action="store_true", help="also train POSE's released-code variant (pose-code)"
    )
    parser.add_argument(
        "--with-pose-fast",
        action="store_true",
        help="also train POSE with metric learning's learning rate and decay (pose-fast)",
    )
    parser.add_argument(
        "--with-dct-metric",
        action="store_true",
        help="also train metric learning on POSE's dct_cnn backbone (metric-dct)",
    )
    parser.add_argument(
        "--with-dct-osa",
        action="store_true",
        help="also train metric learning on dct_cnn with --open-space-aug (metric-dct+osa)",
    )
    parser.add_argument(
        "--zoo", type=Path, default=osma_home() / "benchmarks" / "zoo", help="the built benchmark (osma zoo build)"
    )
    args = parser.parse_args()
    methods = (
        METHODS
        | (DCT_METRIC if args.with_dct_metric else {})
        | (DCT_OSA if args.with_dct_osa else {})
        | (POSE_FAST if args.with_pose_fast else {})
        | (RELEASED_CODE if args.with_released_code else {})
    )

    rows: dict[int, dict[str, list[float]]] = {k: {} for k in args.splits}
    walls: dict[str, dict[int, float]] = {m: {} for m in methods}
    for k in args.splits:
        for method, flags in methods.items():
            weights = args.out / method / f"split{k}.safetensors"
            weights.parent.mkdir(parents=True, exist_ok=True)
            walls[method][k] = train(weights, method, flags, k, args)
            rows[k][method] = benchmark(weights, k, args.zoo)

    budget = f"{args.epochs} epochs, crop {args.crop}, batch {args.batch_size}, seed {args.seed}" + (
        f", at most {args.steps_per_epoch} steps per epoch" if args.steps_per_epoch else ""
    )
    means = {m: mean([rows[k][m] for k in args.splits]) for m in methods}
    sections = [
        f"# Method comparison ({budget})\n",
        f"## Mean over split{', split'.join(map(str, args.splits))}\n",
        markdown(means, "method"),
    ]
    for k in args.splits:
        sections += [f"## split{k}\n", markdown(rows[k], "method")]
    sections += ["## Training wall time (s)\n", wall_table(walls, args.splits)]
    table = "\n".join(sections)
    (args.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
