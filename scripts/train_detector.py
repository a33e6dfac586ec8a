"""Fit osma's shipped zero-shot detector (``weights/detector-fsd.safetensors``) with osma's own command.

1. A folder of symbolic links, ``WORK/real/``: the development camera photos (CC0), one
   sub-folder per camera model, and the KAIR test images (MIT) in ``kair/``, **leaving out**
   the test part: every photo of the camera models whose photos make the built-in
   benchmark's test tiles, and the KAIR images of those tiles (read from
   ``osma_cli/zoo/photos/photos.csv``). The zoo's generated test images are re-syntheses of
   exactly those photos, so the detector has seen neither their content nor their cameras.
   ``WORK/test-real.txt`` lists the left-out camera photos (``scripts/detector_figures.py``
   reads it).
2. ``osma train --method fsd-detector WORK/real --model weights/osma-fsd.safetensors``:
   the held-out share (whole camera models) calibrates the threshold.
3. With ``--install``: copy the detector to ``weights/``.

Usage:
    python scripts/train_detector.py --data ../shared/data --work /tmp/osma-detector [--install]
"""

from __future__ import annotations

import argparse
import csv
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ZOO_PHOTOS = REPO / "osma_cli" / "zoo" / "photos" / "photos.csv"
SHIPPED = REPO / "weights" / "detector-fsd.safetensors"


def zoo_test_sources() -> tuple[set[str], set[str]]:
    """(camera models, KAIR file stems) of the photos the zoo's test tiles are cut from."""
    cameras, kair = set(), set()
    with open(ZOO_PHOTOS, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["role"] == "heldout" and row["part"] == "test":
                folder, name = Path(row["path"]).parent, Path(row["path"]).stem
                (cameras.add(folder.name) if row["domain"] == "cameras" else kair.add(name))
    return cameras, kair


def split_real(data: Path) -> tuple[list[Path], list[Path]]:
    """(photos to train on, test camera photos): whole camera models and KAIR images left out."""
    cameras, kair = zoo_test_sources()
    train, test = [], []
    for path in sorted((data / "real" / "cameras").glob("*/*")):
        (test if path.parent.name in cameras else train).append(path)
    train += [p for p in sorted((data / "real" / "photos" / "kair").iterdir()) if p.stem not in kair]
    return train, test


def link_tree(train: list[Path], root: Path) -> None:
    """``root/<camera model>/<file>`` and ``root/kair/<file>`` as symbolic links (made afresh)."""
    if root.exists():
        shutil.rmtree(root)
    for path in train:
        folder = root / ("kair" if path.parent.name == "kair" else path.parent.name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the shared development data (SOURCES.md)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--install", action="store_true", help="copy the detector to weights/")
    parser.add_argument("--train-args", default="", help="extra options for osma train, e.g. '--pca-dim 64'")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    train, test = split_real(args.data)
    link_tree(train, args.work / "real")
    (args.work / "test-real.txt").write_text("".join(f"{p.resolve()}\n" for p in test))
    print(f"{len(train)} photos to train on, {len(test)} test camera photos left out", flush=True)
    out = args.work / "detector-fsd.safetensors"
    command = [
        sys.executable,
        "-m",
        "osma_cli",
        "train",
        str(args.work / "real"),
        "--method",
        "fsd-detector",
        "--model",
        str(REPO / "weights" / "osma-fsd.safetensors"),
        "--out",
        str(out),
        "--json",
        *shlex.split(args.train_args),
    ]
    print("$ " + shlex.join(command), flush=True)
    done = subprocess.run(command, stdout=open(args.work / "train.json", "w"))
    if done.returncode != 0:
        sys.exit(f"osma train failed ({done.returncode})")
    print((args.work / "train.json").read_text())
    if args.install:
        shutil.copyfile(out, SHIPPED)
        print(f"installed {SHIPPED} ({SHIPPED.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
