"""A copy of the built-in benchmark whose test images of some splits are JPEG re-compressed.

The training and validation images stay as built (references as the model builds them);
every test image of the named splits (known and unknown) is re-encoded as a JPEG of the given
quality and written under its own name (``--all-parts``: the training and validation images
too, which measures a model whose references come from images of the same compression): osma
reads the format from the content, not the extension, so the split's annotation files need no
change. The copy is made with hard links where a file is unchanged.

Usage:
    python scripts/jpeg_benchmark_root.py --quality 90 --splits 1 3 --out /tmp/zoo-q90
    osma benchmark split1 --data-root /tmp/zoo-q90 --model M
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
from pathlib import Path

from PIL import Image

from osma_cli.evaluation.sources import load_pose_split
from osma_cli.home import osma_home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", type=int, required=True)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--source", type=Path, default=osma_home() / "benchmarks" / "zoo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--all-parts", action="store_true", help="re-compress training and validation images too")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.source, args.out, copy_function=os.link)
    recompressed = 0
    for k in args.splits:
        split = load_pose_split(args.out, f"split{k}")
        images = list(split.test_known) + list(split.test_unknown)
        if args.all_parts:
            images += list(split.train) + list(split.val)
        for image in images:
            path = Path(image.path)
            if path.stat().st_nlink == 1:
                continue  # re-compressed already (a test image of an earlier split)
            with Image.open(path) as pixels:
                buffer = io.BytesIO()
                pixels.convert("RGB").save(buffer, format="JPEG", quality=args.quality)
            path.unlink()
            path.write_bytes(buffer.getvalue())
            recompressed += 1
    print(f"{args.out}: {recompressed} images re-compressed at quality {args.quality}")


if __name__ == "__main__":
    main()
