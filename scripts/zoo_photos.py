"""Make the zoo's shipped photo set, ``osma_cli/zoo/photos/``, from the project's real photos.

Run once by a developer (not at run time); the result is committed. Reads
``../shared/data`` (``--data``), writes ``photos.csv``, ``SOURCES`` and the images:

- camera photos (CC0, drewnoakes/digicam_corpus): cropped further, losslessly, with
  ``jpegtran -crop`` on the 16-pixel MCU grid (DCT coefficients, quantisation tables and
  EXIF unchanged; ``-perfect`` refuses anything that is not an exact transform);
- KAIR test images (MIT): PNG originals copied byte for byte, BMP originals stored as PNG
  of the same pixels. ``08.png`` (Lena) is left out.

Selection (deterministic): the 48 camera models sorted by name, even positions give the
"cameras" training set (2 photos each, 512x512 crops), odd positions the held-out photos
(1 photo each, one 512x256 crop = two 256-pixel tiles). Seven KAIR images are held out;
the other 23 are the "kair" training set. Held-out photos are assigned to the benchmark's
train / val / test parts by source photo.

    python scripts/zoo_photos.py --data ../shared/data --out osma_cli/zoo/photos
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

from PIL import Image

MCU = 16
TRAIN_CROP = (512, 512)
HELDOUT_CROP = (512, 256)
HELDOUT_PARTS = ("train", "test", "train", "val", "train", "test")
KAIR_HELDOUT = {
    "baby.bmp": "train",
    "03.png": "train",
    "face_04.png": "train",
    "head.bmp": "val",
    "10.png": "test",
    "12.png": "test",
    "face_08.png": "test",
}
KAIR_EXCLUDED = {"08.png": "Lena: left out of the shipped set"}
CAMERA_SOURCE = "drewnoakes/digicam_corpus (commit 6385e5e)"
KAIR_SOURCE = "cszn/KAIR testsets (commit fc1732f)"
FIELDS = (
    "id",
    "path",
    "domain",
    "role",
    "part",
    "width",
    "height",
    "sha256",
    "source",
    "original_name",
    "licence",
    "note",
)


SOURCES = """\
Photographs shipped with osma for its built-in benchmark (osma zoo)
==================================================================

photos.csv lists every file: its id, path, role (generator training or held-out content
of the benchmark), benchmark part, size, sha256, source, original file name, licence and
how it was made. scripts/zoo_photos.py made this folder from osma's development data.

cameras/<Make_Model>/NN.jpg  --  CC0 1.0 (public domain dedication)
    From drewnoakes/digicam_corpus (https://github.com/drewnoakes/digicam_corpus,
    commit 6385e5e): photographs straight from digital cameras, dedicated to the public
    domain by their contributors. Each file is a lossless crop (jpegtran -crop -perfect
    -copy all, on the 16-pixel MCU grid) of a lossless crop of the camera's file: the DCT
    coefficients, quantisation tables and EXIF are the camera's. Decoded pixels equal those
    of the camera's file except within 2 pixels of a crop edge, where the decoder's chroma
    up-sampling sees different neighbours. original_name in photos.csv is the camera's file.

kair/*.png  --  MIT licence
    Standard test images from cszn/KAIR (https://github.com/cszn/KAIR, commit fc1732f,
    folder testsets): Set12-style grey images, Set5 colour images and face crops. PNG
    originals are copied unchanged; BMP originals are stored as PNG with the same pixels.
    "08.png" (Lena) is not included. KAIR's licence:

    MIT License

    Copyright (c) 2019 Kai Zhang

    Permission is hereby granted, free of charge, to any person obtaining a copy of this
    software and associated documentation files (the "Software"), to deal in the Software
    without restriction, including without limitation the rights to use, copy, modify,
    merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
    permit persons to whom the Software is furnished to do so, subject to the following
    conditions:

    The above copyright notice and this permission notice shall be included in all copies
    or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
    INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
    PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
    HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
    CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE
    OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

Roles: "train" photos are what the zoo's generators were trained on (the "cameras" and
"kair" training sets; the third set, dead leaves, is generated). "heldout" photos are
what the benchmark's images re-synthesise and its "real" class; no generator saw them,
and they come from other camera models than the training photos. Their "part" (train,
val, test) says which benchmark part their tiles go to, so the benchmark's training and
test images never share a source photo.
"""


def centred(size: int, extent: int) -> int:
    return max(0, (size - extent) // 2) // MCU * MCU


def jpeg_crop(src: Path, dst: Path, width: int, height: int, x: int, y: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["jpegtran", "-copy", "all", "-perfect", "-crop", f"{width}x{height}+{x}+{y}", "-outfile", str(dst), str(src)],
        check=True,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("osma_cli/zoo/photos"))
    args = parser.parse_args()
    data, out = args.data.resolve(), args.out
    with open(data / "manifest.csv", newline="", encoding="utf-8") as handle:
        manifest = {row["path"]: row for row in csv.DictReader(handle)}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rows = []

    by_model: dict[str, list[str]] = defaultdict(list)
    for path in sorted(manifest):
        if path.startswith("real/cameras/"):
            by_model[path.split("/")[2]].append(path)
    models = sorted(by_model)
    for index, model in enumerate(models):
        paths = by_model[model]
        training = index % 2 == 0
        crop_w, crop_h = TRAIN_CROP if training else HELDOUT_CROP
        usable = [
            p
            for p in paths
            if min(Image.open(data / p).size) >= HELDOUT_CROP[1] and max(Image.open(data / p).size) >= HELDOUT_CROP[0]
        ]
        if training:
            chosen = list(dict.fromkeys([usable[0], usable[len(usable) // 2]]))
        else:
            chosen = [usable[len(usable) // 2]]
        for path in chosen:
            src = data / path
            width, height = Image.open(src).size
            w, h = min(crop_w, width) // MCU * MCU, min(crop_h, height) // MCU * MCU
            x, y = centred(width, w), centred(height, h)
            name = Path(path).name
            dst = out / "cameras" / model / name
            jpeg_crop(src, dst, w, h, x, y)
            row = manifest[path]
            part = "" if training else HELDOUT_PARTS[(index // 2) % len(HELDOUT_PARTS)]
            rows.append(
                {
                    "id": f"cam-{model}-{Path(name).stem}",
                    "path": f"cameras/{model}/{name}",
                    "domain": "cameras",
                    "role": "train" if training else "heldout",
                    "part": part,
                    "width": w,
                    "height": h,
                    "sha256": sha256(dst),
                    "source": CAMERA_SOURCE,
                    "original_name": row["original_name"],
                    "licence": row["licence"],
                    "note": f"lossless crop {w}x{h}+{x}+{y} of the {width}x{height} "
                    f"osma data file, itself a {row['note']}",
                }
            )

    for path in sorted(manifest):
        if not path.startswith("real/photos/kair/"):
            continue
        name = Path(path).name
        if name in KAIR_EXCLUDED:
            continue
        src = data / path
        stem = Path(name).stem
        dst = out / "kair" / f"{stem}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix.lower() == ".png":
            shutil.copyfile(src, dst)
            note = "original file, unchanged"
        else:
            with Image.open(src) as image:
                image.save(dst, format="PNG")
            note = f"{src.suffix[1:].upper()} original stored as PNG (same pixels)"
        width, height = Image.open(dst).size
        row = manifest[path]
        heldout = name in KAIR_HELDOUT
        rows.append(
            {
                "id": f"kair-{stem}",
                "path": f"kair/{stem}.png",
                "domain": "kair",
                "role": "heldout" if heldout else "train",
                "part": KAIR_HELDOUT.get(name, ""),
                "width": width,
                "height": height,
                "sha256": sha256(dst),
                "source": KAIR_SOURCE,
                "original_name": row["original_name"],
                "licence": row["licence"],
                "note": note,
            }
        )

    with open(out / "photos.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "SOURCES").write_text(SOURCES, encoding="utf-8")
    print(f"{len(rows)} photos written to {out}")


if __name__ == "__main__":
    main()
