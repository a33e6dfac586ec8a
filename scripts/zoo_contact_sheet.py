"""Render the zoo's contact sheet: a few benchmark images per generator beside the real ones.

    python scripts/zoo_contact_sheet.py [--root $OSMA_HOME/benchmarks/zoo] [--out docs/zoo_contact_sheet.png]

Reads a finished build (``osma zoo build``). One panel per class (real, then every
generator in recipe order): three 96-pixel crops of three benchmark test images at 1:1
(no resampling; the most detailed window of the real image, the same window for every
class) and, last, the flattest 32-pixel window of the first image enlarged 3x (nearest
neighbour, for the eye only), where up-sampling traces show best.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from osma_cli.zoo.materialise import default_root, image_relpath, read_manifest
from osma_cli.zoo.photos import PhotoSet
from osma_cli.zoo.recipe import REAL, default_recipe

CROP = 96
DETAIL = 32
ZOOM = 3
COLUMNS = 4
LABEL = 14
GAP = 6


def window(image: np.ndarray, size: int, *, flattest: bool) -> tuple[int, int]:
    """Origin (on a 16-pixel grid) of the window of ``image`` with the most (or least)
    local detail, measured by the mean absolute difference between neighbours."""
    grey = image.astype(float).mean(axis=2)
    detail = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    best, origin = None, (0, 0)
    for top in range(0, detail.shape[0] - size + 1, 16):
        for left in range(0, detail.shape[1] - size + 1, 16):
            value = detail[top : top + size, left : left + size].mean()
            if best is None or (value < best if flattest else value > best):
                best, origin = value, (top, left)
    return origin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/zoo_contact_sheet.png"))
    parser.add_argument(
        "--tiles",
        default="cam-Epson_PhotoPC-3100Z-04,kair-face_08,kair-10",
        help="held-out test photos (ids) whose first tile is shown",
    )
    args = parser.parse_args()
    root = args.root or default_root()
    manifest = read_manifest(root)
    if manifest is None:
        raise SystemExit(f"no finished build in {root}: run `osma zoo build` first")
    recipe = default_recipe()
    tiles = PhotoSet.open(recipe.photos).tiles(recipe.tile)
    chosen = []
    for photo_id in args.tiles.split(","):
        candidates = [t for t in tiles if t.photo.id.startswith(photo_id)]
        if not candidates:
            raise SystemExit(f"no held-out tile of a photo {photo_id!r}")
        chosen.append(candidates[0])
    classes = [REAL] + [spec.name for spec in recipe.generators]
    reals = [np.asarray(Image.open(root / image_relpath(REAL, t)).convert("RGB")) for t in chosen]
    windows = [window(im, CROP, flattest=False) for im in reals]
    top0, left0 = windows[0]
    dy, dx = window(reals[0][top0 : top0 + CROP, left0 : left0 + CROP], DETAIL, flattest=True)
    detail_origin = (top0 + dy, left0 + dx)
    panel_w = len(chosen) * (CROP + 2) + DETAIL * ZOOM
    panel_h = CROP + LABEL
    rows = (len(classes) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * (panel_w + GAP), rows * (panel_h + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, name in enumerate(classes):
        x0 = (index % COLUMNS) * (panel_w + GAP)
        y0 = (index // COLUMNS) * (panel_h + GAP)
        draw.text((x0 + 2, y0), name, fill="black")
        for column, tile in enumerate(chosen):
            relpath = image_relpath(name, tile)
            if relpath not in manifest.images:  # a generator never known has test tiles only
                continue
            pixels = np.asarray(Image.open(root / relpath).convert("RGB"))
            top, left = windows[column]
            crop = pixels[top : top + CROP, left : left + CROP]
            sheet.paste(Image.fromarray(crop), (x0 + column * (CROP + 2), y0 + LABEL))
            if column == 0:
                top, left = detail_origin
                detail = pixels[top : top + DETAIL, left : left + DETAIL].repeat(ZOOM, 0).repeat(ZOOM, 1)
                sheet.paste(Image.fromarray(detail), (x0 + len(chosen) * (CROP + 2), y0 + LABEL))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]})")


if __name__ == "__main__":
    main()
