"""Make the shipped forensic self-description model and its store, with osma's own commands.

1. ``scripts/shared_data_split.py``: the fixed train/val/test split of the development data
   (the test part, ``docs/shared_data_test_files.txt``, is never used here);
2. ``osma train --method fsd``: residual filters learned on the training part's camera photos
   only, one projection per compression regime (lossless and each ``--jpeg-regimes``
   quality) fitted on the seven training classes, each regime's from the images re-encoded
   at its quality;
3. ``osma build`` on the training part (one store per regime), then ``osma calibrate`` on the
   validation part (each regime's tau at 95% acceptance of its re-encoded validation images).

Each command is printed before it runs. ``--install`` copies the two files into ``weights/``
as ``osma-fsd.safetensors`` and ``references-fsd.h5``.

Usage:
    python scripts/train_fsd_default.py --work /tmp/osma-fsd [--install]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGIMES = "95,90,75,50"
RULE = "fang"


def run(args: list[str]) -> None:
    print("$ " + shlex.join(args), flush=True)
    subprocess.run(args, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--jpeg-regimes", default=REGIMES)
    parser.add_argument("--rule", default=RULE)
    parser.add_argument("--install", action="store_true", help="copy the results into weights/")
    args = parser.parse_args()
    osma = [sys.executable, "-m", "osma_cli"]
    shared = args.work / "shared"
    model, refs = args.work / "osma-fsd.safetensors", args.work / "references-fsd.h5"
    if not (shared / "train").is_dir():
        run(
            [
                sys.executable,
                str(REPO / "scripts" / "shared_data_split.py"),
                "--data",
                str(args.data),
                "--out",
                str(shared),
            ]
        )
    run(
        [
            *osma,
            "train",
            str(shared / "train"),
            "--method",
            "fsd",
            "--photos",
            str(shared / "train" / "real"),
            "--jpeg-regimes",
            args.jpeg_regimes,
            "--rule",
            args.rule,
            "--out",
            str(model),
        ]
    )
    run([*osma, "build", str(shared / "train"), "--model", str(model), "--out", str(refs), "--force"])
    run([*osma, "calibrate", str(shared / "val"), "--model", str(model), "--refs", str(refs)])
    if args.install:
        for source, name in ((model, "osma-fsd.safetensors"), (refs, "references-fsd.h5")):
            shutil.copyfile(source, REPO / "weights" / name)
            print(f"installed weights/{name}")


if __name__ == "__main__":
    main()
