"""Figures on the six real generators of ``../shared/data`` (their fixed test part).

1. ``closed``: with a model and its reference store (e.g. the shipped defaults, where all six
   and ``real`` are known), ``osma attribute`` on every test image: closed-set accuracy (the
   nearest reference, no threshold) and the accuracy of the verdict at the store's tau.
2. ``loo``: leave one out. For each real generator G in turn, a model is trained by
   ``osma train`` on the training tree of ``scripts/train_defaults.py`` without G (from
   scratch, or ``--init`` weights; ``--epochs`` given), then ``osma benchmark --manifest`` with ``real``
   and the other five as known (train part -> references, val part -> tau) and G's test part
   as the unknown: is G rejected (CRR), and how well are known and unknown told apart (AUC)?
   With ``--model`` a descriptor (``osma train --method fsd``), nothing is trained: ``osma
   benchmark`` fits its projection on the five known generators' training images each time,
   so G has shaped nothing it is scored with. ``--rule`` passes a rule to ``osma benchmark``.

Caveat: each generator comes with its own content (zebras, shoes, pizza, prompts), so these
figures mix traces and subject matter.

Usage:
    python scripts/real_generators.py closed --work /tmp/osma-defaults \
        --model weights/osma-mislnet.safetensors --refs weights/references-mislnet.h5 [--jpeg 90]
    python scripts/real_generators.py loo --work /tmp/osma-defaults --epochs 30 --out /tmp/loo
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

GENERATORS = (
    "stable-diffusion-v1",
    "stylegan2",
    "cyclegan",
    "pix2pix-facades",
    "pix2pix-edges2shoes",
    "pix2pix-map2sat",
)


def osma(*args: str, log: Path | None = None) -> str:
    command = [sys.executable, "-m", "osma_cli", *args]
    print("$ " + shlex.join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if log is not None:
        log.write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 3):
        sys.exit(f"failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def jpeg_copy(test: Path, quality: int, out: Path) -> Path:
    """The test part with every image re-encoded once as a JPEG of ``quality`` (Pillow, 4:2:0)."""
    from PIL import Image

    for folder in sorted(p for p in test.iterdir() if p.is_dir()):
        (out / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir()):
            with Image.open(image) as opened:
                opened.convert("RGB").save(
                    out / folder.name / (image.stem + ".jpg"), format="JPEG", quality=quality, subsampling="4:2:0"
                )
    return out


def closed(work: Path, model: Path, refs: Path, crops: int = 1, jpeg: int | None = None) -> dict:
    """``crops``: ``osma attribute --crops`` (the references stay as built); ``jpeg``: the test
    images re-encoded at this quality first (in ``work/test-q<jpeg>``)."""
    test = work / "shared" / "test"
    if jpeg is not None:
        test = jpeg_copy(test, jpeg, work / f"test-q{jpeg}")
    classes = ["real", *GENERATORS]
    records = [
        json.loads(line)
        for line in osma(
            "attribute",
            "--model",
            str(model),
            "--refs",
            str(refs),
            "--crops",
            str(crops),
            "--json",
            *[str(test / c) for c in classes],
        ).splitlines()
    ]
    truth = {str(p): c for c in classes for p in (test / c).iterdir()}
    per_class = {}
    for c in classes:
        mine = [r for r in records if truth.get(r["path"]) == c and r["status"] == "ok"]
        per_class[c] = {
            "images": len(mine),
            "closed_set_accuracy": sum(r["candidate"] == c for r in mine) / len(mine),
            "verdict_accuracy": sum(r["verdict"] == c for r in mine) / len(mine),
        }
    ok = [r for r in records if r["status"] == "ok"]
    return {
        "images": len(ok),
        "closed_set_accuracy": sum(r["candidate"] == truth[r["path"]] for r in ok) / len(ok),
        "verdict_accuracy": sum(r["verdict"] == truth[r["path"]] for r in ok) / len(ok),
        "per_class": per_class,
    }


def tree_without(work: Path, held_out: str, out: Path) -> tuple[Path, Path]:
    """Training folders and a validation list without ``held_out`` (labels renumbered)."""
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    classes = sorted(p.name for p in (work / "train").iterdir() if p.name != held_out)
    for c in classes:
        if not (train / c).exists():
            os.symlink((work / "train" / c).resolve(), train / c)
    lines = [
        f"{(work / 'val' / c / f.name).resolve()}\t{k}\n"
        for k, c in enumerate(classes)
        for f in sorted((work / "val" / c).iterdir())
    ]
    (out / "val.txt").write_text("".join(lines))
    return train, out / "val.txt"


def manifest_for(work: Path, held_out: str, out: Path) -> Path:
    shared = (work / "shared").resolve()
    known = {
        c: {"train": str(shared / "train" / c), "val": str(shared / "val" / c), "test": str(shared / "test" / c)}
        for c in ["real", *GENERATORS]
        if c != held_out
    }
    data = {
        "name": f"shared-without-{held_out}",
        "known": known,
        "unknown": {held_out: {"test": str(shared / "test" / held_out)}},
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def leave_one_out(
    work: Path,
    epochs: int,
    out: Path,
    only: list[str],
    init_weights: Path | None,
    descriptor: Path | None = None,
    rule: str | None = None,
) -> dict:
    results = {}
    for g in only or GENERATORS:
        folder = out / g
        folder.mkdir(parents=True, exist_ok=True)
        model = descriptor if descriptor is not None else folder / "model.safetensors"
        if not model.is_file():
            train, val = tree_without(work, g, folder)
            init = ["--init", str(init_weights)] if init_weights is not None else []
            osma(
                "train",
                str(train),
                "--val-annotations",
                str(val),
                *init,
                "--crop",
                "128",
                "--epochs",
                str(epochs),
                "--lr",
                "7e-4",
                "--decay-every",
                str(max(1, epochs // 8)),
                "--lr-decay",
                "0.6",
                "--seed",
                "0",
                "--cache-decoded",
                "--out",
                str(model),
                "--force",
                log=folder / "train.log",
            )
        extra = ["--rule", rule] if rule else []
        report = json.loads(
            osma(
                "benchmark",
                "--manifest",
                str(manifest_for(work, g, folder)),
                "--model",
                str(model),
                *extra,
                "--json",
                "--out",
                str(folder / "bench"),
            )
        )["metrics"]
        results[g] = {k: report[k] for k in ("closed_set_accuracy", "auc", "oscr", "crr", "af1")}
        print(g, json.dumps(results[g]), file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["closed", "loo"])
    parser.add_argument("--work", type=Path, required=True, help="the folder of scripts/train_defaults.py")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--refs", type=Path)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--crops", type=int, default=1, help="closed: osma attribute --crops N")
    parser.add_argument("--init", type=Path, help="start from these weights (default: from scratch)")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--rule", help="loo: osma benchmark --rule")
    parser.add_argument("--jpeg", type=int, help="closed: re-encode the test images at this JPEG quality first")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.what == "closed":
        if args.model is None or args.refs is None:
            parser.error("closed needs --model and --refs")
        result = closed(args.work, args.model, args.refs, args.crops, args.jpeg)
    else:
        if args.out is None:
            parser.error("loo needs --out")
        result = leave_one_out(args.work, args.epochs, args.out, args.only, args.init, args.model, args.rule)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
