"""A fixed train/val/test split of the development data in ``../shared/data``.

The six real generators and the camera photos ("real") are split per file, deterministically
(sha256 of the file name orders each class; the first 20% are test, the next 15%
validation). The result is a folder tree of symbolic links, one sub-folder per generator
for each part (and ``train-known``/``val-known`` without the held-out generators), ready for
``osma train``/``osma build``/``osma calibrate``, and a manifest for ``osma benchmark --manifest``
in which some generators are held out as unknowns.

The test part is written to ``--test-list`` so that it stays aside across experiments.

Usage:
    python scripts/shared_data_split.py --data ../shared/data --out /tmp/osma-shared \
        [--unknown cyclegan:arch --unknown pix2pix-map2sat:dataset]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

GENERATORS = {
    "real": "real/cameras",
    "stable-diffusion-v1": "generated/sd-v1-txt2img",
    "stylegan2": "generated/stylegan2-pizza-256",
    "cyclegan": "generated/cyclegan-horse2zebra",
    "pix2pix-facades": "generated/pix2pix-facades",
    "pix2pix-edges2shoes": "generated/pix2pix-edges2shoes",
    "pix2pix-map2sat": "generated/pix2pix-map2sat",
}
TEST_FRACTION = 0.20
VAL_FRACTION = 0.15
SUFFIXES = {".png", ".jpg", ".jpeg"}


def ordered_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES]
    return sorted(files, key=lambda p: hashlib.sha256(str(p.relative_to(folder)).encode()).hexdigest())


def split_files(files: list[Path]) -> dict[str, list[Path]]:
    n_test = round(len(files) * TEST_FRACTION)
    n_val = round(len(files) * VAL_FRACTION)
    return {"test": files[:n_test], "val": files[n_test : n_test + n_val], "train": files[n_test + n_val :]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--unknown", action="append", default=[], help="NAME[:KIND] held out of the known classes in the manifest"
    )
    parser.add_argument("--test-list", type=Path, default=None)
    args = parser.parse_args()
    data = args.data.resolve()
    unknown = dict((u.split(":") + [""])[:2] for u in args.unknown)
    for name in unknown:
        if name not in GENERATORS:
            parser.error(f"unknown generator {name!r}; choose from {', '.join(GENERATORS)}")

    test_lines = []
    manifest: dict = {"name": "shared-data", "root": str(args.out.resolve()), "known": {}, "unknown": {}}
    for name, rel in GENERATORS.items():
        parts = split_files(ordered_files(data / rel))
        for part, files in parts.items():
            folders = [args.out / part / name]
            if name not in unknown and part != "test":
                folders.append(args.out / f"{part}-known" / name)
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
                for f in files:
                    link = folder / (f"{f.parent.name}_{f.name}" if name == "real" else f.name)
                    if not link.exists():
                        os.symlink(f, link)
        test_lines += [str(f.relative_to(data)) for f in parts["test"]]
        if name in unknown:
            entry = {"test": f"test/{name}"}
            if unknown[name]:
                entry["kind"] = unknown[name]
            manifest["unknown"][name] = entry
        else:
            manifest["known"][name] = {"train": f"train/{name}", "val": f"val/{name}", "test": f"test/{name}"}
        print(f"{name:22s} train {len(parts['train']):4d}  val {len(parts['val']):3d}  test {len(parts['test']):3d}")
    if unknown:
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if args.test_list is not None:
        args.test_list.write_text("\n".join(sorted(test_lines)) + "\n")


if __name__ == "__main__":
    main()
