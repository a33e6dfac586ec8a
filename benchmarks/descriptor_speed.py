"""Images per second and peak memory of two models on the same images, in the same run.

Each model embeds the same files through ``Embedder.embed_files`` (what ``osma attribute``
calls: decoding in loader workers, crops or windows, the extractor, the head) in a fresh
process, so that its peak resident memory (``ru_maxrss``, workers included) is its own. The
first batch is a warm-up and not timed. Prints one line per model and the ratio.

Usage:
    python benchmarks/descriptor_speed.py --model mislnet=weights/osma-mislnet.safetensors \\
        --model fsd=weights/osma-fsd.safetensors --images ~/.osma/benchmarks/zoo/dataset/zoo/real [--n 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def measure(model: str, images: list[str], device: str, batch_size: int) -> dict:
    from osma_cli.embed import Embedder

    embedder = Embedder.from_file(model, device=device)
    warm = images[:batch_size]
    list(embedder.embed_files(warm, batch_size=batch_size))
    start = time.perf_counter()
    n = sum(1 for item in embedder.embed_files(images, batch_size=batch_size) if item.ok)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "images": n,
        "seconds": seconds,
        "images_per_s": n / seconds,
        "peak_rss_mib": peak / 1024,
        "device": str(embedder.device),
        "kind": embedder.meta.kind,
        "crop": embedder.crop_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=weights.safetensors")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from osma_cli.data import iter_image_files

    files = [str(p) for p in sorted(iter_image_files([args.images]))][: args.n]
    if args.child:
        print(json.dumps(measure(args.child, files, args.device, args.batch_size)))
        return
    results = {}
    for spec in args.model:
        label, _, path = spec.partition("=")
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                spec,
                "--images",
                str(args.images),
                "--n",
                str(args.n),
                "--device",
                args.device,
                "--batch-size",
                str(args.batch_size),
                "--child",
                path,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[label]
        print(
            f"{label}: {r['images']} images in {r['seconds']:.1f} s = {r['images_per_s']:.1f} images/s, "
            f"peak {r['peak_rss_mib']:.0f} MiB ({r['kind']}, {r['crop']} px, {r['device']})",
            flush=True,
        )
    labels = list(results)
    if len(labels) == 2:
        a, b = (results[k]["images_per_s"] for k in labels)
        print(f"{labels[1]} / {labels[0]} speed: {b / a:.2f}")


if __name__ == "__main__":
    main()
