"""Enrol unknown generators of the built-in benchmark and measure what changes.

Fang et al.'s headline capability: a generator never seen in training is enrolled from a few
of its images, without retraining, and is then recognised, while the other unknowns are
still rejected. With osma's own commands:

1. ``osma benchmark SPLIT --model M --out OUT/bench``: references of the split's known
   generators (train part) and tau calibrated on their validation images.
2. ``osma attribute`` on every unknown test image of the split with that store: CRR before.
3. ``osma enroll --name G`` for each ``--enroll G`` from G's *train-part* images (the zoo
   makes every generator on the train, val and test photos; the split lists only its test
   images as unknown, so the train images are never seen by the benchmark).
4. ``osma attribute`` again: each enrolled generator's test images attributed to it
   (per-generator accuracy), and CRR of the unknowns that were not enrolled, before/after.

Usage:
    python scripts/enrolment_figures.py --model weights/osma-mislnet.safetensors \
        --split split1 --enroll resup-kair-s0 --enroll tconv-cameras-s1 --out /tmp/enrol
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TILE_SUFFIX = re.compile(r"-y\d+-x\d+$")


def osma(*args: str) -> str:
    command = [sys.executable, "-m", "osma_cli", *args]
    shown = [a if len(a) < 80 else a[:40] + "..." for a in command[:12]]
    print("$ " + shlex.join(shown) + (" ..." if len(command) > 12 else ""), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 3):
        sys.exit(f"failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def photo_parts() -> dict[str, str]:
    """Photo id -> benchmark part (train/val/test) of the zoo's held-out photos."""
    from osma_cli.zoo.photos import PhotoSet

    return {p.id: p.part for p in PhotoSet.open().photos if p.role == "heldout"}


def generator_images(zoo_root: Path, name: str, part: str) -> list[Path]:
    parts = photo_parts()
    folder = zoo_root / "dataset" / "zoo" / "fake" / name
    return sorted(p for p in folder.glob("*.png") if parts.get(TILE_SUFFIX.sub("", p.stem)) == part)


def verdicts(model: Path, store: Path, paths: list[Path]) -> dict[str, str]:
    lines = osma(
        "attribute", "--model", str(model), "--refs", str(store), "--json", *[str(p) for p in paths]
    ).splitlines()
    return {r["path"]: r["verdict"] for r in map(json.loads, lines) if r["status"] == "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--split", default="split1")
    parser.add_argument("--enroll", action="append", required=True, metavar="GENERATOR")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from osma_cli.evaluation.sources import load_pose_split
    from osma_cli.zoo import ensure_builtin_benchmark

    zoo_root = ensure_builtin_benchmark()
    split = load_pose_split(zoo_root, args.split)
    osma("benchmark", args.split, "--model", str(args.model), "--out", str(args.out / "bench"), "--json")
    store = args.out / "store.h5"
    shutil.copyfile(args.out / "bench" / "references.h5", store)

    unknown = {str(im.path): (Path(im.path).parent.name, im.kind) for im in split.test_unknown}
    missing = [g for g in args.enroll if g not in {g for g, _ in unknown.values()}]
    if missing:
        sys.exit(f"not unknown generators of {args.split}: {', '.join(missing)}")
    paths = [Path(p) for p in unknown]
    before = verdicts(args.model, store, paths)
    for name in args.enroll:
        train = generator_images(zoo_root, name, "train")
        osma("enroll", "--name", name, "--model", str(args.model), "--refs", str(store), *map(str, train))
        print(f"enrolled {name} from {len(train)} train-part images", file=sys.stderr)
    after = verdicts(args.model, store, paths)

    per_generator: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, (gen, _) in unknown.items():
        per_generator[gen].append((before[path], after[path]))
    result = {"split": args.split, "enrolled": {}, "still_unknown": {}}
    for name in args.enroll:
        pairs = per_generator[name]
        result["enrolled"][name] = {
            "test_images": len(pairs),
            "attributed_to_it_after": sum(a == name for _, a in pairs) / len(pairs),
            "rejected_before": sum(b == "unknown" for b, _ in pairs) / len(pairs),
        }
    rest = [
        (b, a, unknown[p][1])
        for p, (b, a) in zip(unknown, ((before[p], after[p]) for p in unknown))
        if unknown[p][0] not in args.enroll
    ]
    for kind in sorted({k for _, _, k in rest}) + ["all"]:
        sel = [(b, a) for b, a, k in rest if kind in (k, "all")]
        result["still_unknown"][kind] = {
            "images": len(sel),
            "crr_before": sum(b == "unknown" for b, _ in sel) / len(sel),
            "crr_after": sum(a == "unknown" for _, a in sel) / len(sel),
        }
    (args.out / "enrolment.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
