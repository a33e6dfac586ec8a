"""Thousands of bad and odd files through ``osma attribute``: no traceback, one record each.

Makes N files of many kinds from a few good images: truncated at a random byte, bit flips in
JPEG and PNG data, zero bytes, random bytes with an image suffix, text files named .png,
images with huge dimensions in their header (decompression-bomb guard), 1x1 and 2x2 images,
16-bit and palette PNGs, CMYK JPEGs, animated GIFs, names that are not UTF-8, FIFOs; then runs
``python -m osma_cli attribute DIR --json`` once on all of them and checks that

- it exits with 0 or 3 (some files unreadable), never with a traceback on stderr;
- there is exactly one JSON record per file, and each is ``ok``, ``error`` or ``skipped``;
- every damaged file that decoded carries a warning or an error (counted per kind).

Usage:
    python benchmarks/bad_files_stress.py [--n 2000] [--model weights/osma-mislnet.safetensors] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def good_images(rng: np.random.Generator) -> dict[str, bytes]:
    pixels = (128 + 60 * np.sin(np.arange(96)[None, :, None] / 5.0) + rng.normal(0, 8, (96, 96, 3))).clip(0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    out = {}
    for fmt, key in (("PNG", "png"), ("JPEG", "jpg")):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        out[key] = buffer.getvalue()
    return out


def make(kind: str, good: dict[str, bytes], rng: random.Random) -> tuple[str, bytes]:
    """(suffix, bytes) of one file of ``kind``."""
    if kind == "truncated-png":
        data = good["png"]
        return ".png", data[: rng.randrange(8, len(data) - 1)]
    if kind == "truncated-jpg":
        data = good["jpg"]
        return ".jpg", data[: rng.randrange(4, len(data) - 1)]
    if kind in ("bitflip-png", "bitflip-jpg"):
        data = bytearray(good[kind[-3:]])
        for _ in range(rng.randrange(1, 6)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return "." + kind[-3:], bytes(data)
    if kind == "empty":
        return ".png", b""
    if kind == "random-bytes":
        return rng.choice([".png", ".jpg", ".webp", ".tif"]), os.urandom(rng.randrange(1, 4096))
    if kind == "text":
        return ".png", b"this is not an image\n" * rng.randrange(1, 50)
    if kind == "huge-header":
        buffer = io.BytesIO()
        Image.new("L", (1, 1)).save(buffer, format="PNG")
        data = bytearray(buffer.getvalue())
        data[16:24] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")
        return ".png", bytes(data)
    buffer = io.BytesIO()
    if kind == "tiny":
        Image.new("RGB", (rng.choice([1, 2]), rng.choice([1, 2])), (9, 9, 9)).save(buffer, format="PNG")
        return ".png", buffer.getvalue()
    if kind == "png16":
        Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(buffer, format="PNG")
        return ".png", buffer.getvalue()
    if kind == "palette":
        Image.new("RGB", (64, 64), (200, 10, 10)).convert("P").save(buffer, format="PNG")
        return ".png", buffer.getvalue()
    if kind == "cmyk":
        Image.new("CMYK", (64, 64), (10, 200, 30, 5)).save(buffer, format="JPEG")
        return ".jpg", buffer.getvalue()
    if kind == "gif":
        frames = [Image.new("P", (64, 64), i) for i in range(3)]
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
        return ".gif", buffer.getvalue()
    raise ValueError(kind)


KINDS = (
    "truncated-png",
    "truncated-jpg",
    "bitflip-png",
    "bitflip-jpg",
    "empty",
    "random-bytes",
    "text",
    "huge-header",
    "tiny",
    "png16",
    "palette",
    "cmyk",
    "gif",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--refs", type=Path)
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    good = good_images(np.random.default_rng(args.seed))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="osma-bad-"))
    folder.mkdir(parents=True, exist_ok=True)
    kind_of: dict[str, str] = {}
    for i in range(args.n):
        kind = KINDS[i % len(KINDS)]
        suffix, data = make(kind, good, rng)
        name = f"{i:05d}-{kind}{suffix}"
        (folder / name).write_bytes(data)
        kind_of[name] = kind
    odd = os.fsencode(folder) + b"/caf\xe9-nonutf8.png"
    with open(odd, "wb") as handle:
        handle.write(good["png"])
    os.mkfifo(folder / "fifo.png")
    command = [sys.executable, "-m", "osma_cli", "attribute", str(folder), "--json"]
    if args.model:
        command += ["--model", str(args.model)]
    if args.refs:
        command += ["--refs", str(args.refs)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, timeout=3600)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines() if line.strip()]
    stderr = done.stderr.decode("utf-8", "replace")
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for record in records:
        name = Path(record["path"]).name
        kind = kind_of.get(name, "non-utf8" if "caf" in name else "fifo" if name == "fifo.png" else "?")
        flagged = record["status"] != "ok" or bool(record.get("warnings"))
        by_kind[kind][record["status"] + (" (warned)" if record["status"] == "ok" and flagged else "")] += 1
    expected = args.n + 2
    print(f"{expected} files, {len(records)} records, exit {done.returncode}, {seconds:.1f} s")
    print(f"traceback on stderr: {'Traceback' in stderr}")
    for kind in sorted(by_kind):
        print(f"  {kind:14s} {dict(by_kind[kind])}")
    ok = done.returncode in (0, 3) and len(records) == expected and "Traceback" not in stderr
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
