"""How close does ``osma attribute`` come to the network's own speed?

Makes N generated 256x256 JPEGs, then times:

1. forward only: the network on the same crops, already decoded and in memory, in the same
   batches (the ceiling for any pipeline);
2. the pipeline: ``osma_cli.api.attribute_files`` (what ``osma attribute`` calls): decode in
   DataLoader workers, crop, embed, nearest-centroid lookup;
3. the command itself, ``osma attribute --json DIR``, in a fresh process (start-up and
   model loading included), with that process's peak resident memory, for N/4 and N images
   (peak memory should not grow with N).

Usage: python benchmarks/attribute_throughput.py [--n 1000] [--arch mislnet] [--crop 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from osma_cli.api import EmbedOptions, attribute_files
from osma_cli.data import ImageCropDataset
from osma_cli.embed import Embedder
from osma_cli.nets import get_model
from osma_cli.references import ReferenceStore, Threshold
from osma_cli.weights import WeightsMeta, load_weights, save_weights


def make_jpegs(folder: Path, n: int, size: int = 256, seed: int = 0) -> list[Path]:
    """Smooth random content plus noise, saved at quality 90: cheap, JPEG-realistic."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 6, size=3)
        base = 127 + 60 * np.sin(a * xx * np.pi + b * yy * np.pi + c)
        img = base[..., None] + rng.normal(0, 12, size=(size, size, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def peak_rss_mb_of_command(cmd: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of a child process (its own, not its workers')."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--arch", default="mislnet")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        paths = make_jpegs(tmp / "images", args.n)
        print(f"made {args.n} JPEGs in {time.perf_counter() - t0:.1f}s")

        torch.manual_seed(0)
        model = get_model(args.arch)
        meta = save_weights(
            tmp / "model.safetensors",
            model,
            WeightsMeta(
                architecture=args.arch,
                embedding_dim=model.embedding_dim,
                crop_size=args.crop,
                l2_normalize=True,
                arch_kwargs={},
            ),
        )
        model, meta = load_weights(tmp / "model.safetensors")
        embedder = Embedder(model, meta, torch.device(args.device))
        store = ReferenceStore.for_weights(meta)
        rng = np.random.default_rng(1)
        for k in range(8):
            store.enroll(f"gen{k}", rng.normal(size=(4, meta.embedding_dim)))
        store.set_threshold(Threshold(value=2.0, method="benchmark"))
        store.save(tmp / "refs.h5")

        dataset = ImageCropDataset(paths, args.crop)
        crops = torch.cat([dataset[i][1] for i in range(len(dataset))])
        batches = list(torch.split(crops, args.batch_size))
        embedder.embed_crops(batches[0])  # warm-up
        t0 = time.perf_counter()
        for batch in batches:
            embedder.embed_crops(batch)
        forward_s = time.perf_counter() - t0
        del crops, batches

        options = EmbedOptions(batch_size=args.batch_size, workers=args.workers)
        t0 = time.perf_counter()
        n_done = sum(
            1 for r in attribute_files(embedder, store, paths, threshold=2.0, options=options) if r.error is None
        )
        pipeline_s = time.perf_counter() - t0
        assert n_done == args.n

        result = {
            "n_images": args.n,
            "arch": args.arch,
            "crop": args.crop,
            "batch_size": args.batch_size,
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "forward_only_img_s": args.n / forward_s,
            "pipeline_img_s": args.n / pipeline_s,
            "ratio": forward_s / pipeline_s,
        }
        if not args.skip_cli:
            for n in (args.n // 4, args.n):
                subset = tmp / f"subset{n}"
                subset.mkdir()
                for p in paths[:n]:
                    os.link(p, subset / p.name)
                cmd = [
                    sys.executable,
                    "-m",
                    "osma_cli",
                    "attribute",
                    "--json",
                    str(subset),
                    "--model",
                    str(tmp / "model.safetensors"),
                    "--refs",
                    str(tmp / "refs.h5"),
                    "--device",
                    args.device,
                    "--batch-size",
                    str(args.batch_size),
                ]
                wall, rss = peak_rss_mb_of_command(cmd)
                result[f"cli_{n}_wall_s"] = wall
                result[f"cli_{n}_img_s"] = n / wall
                result[f"cli_{n}_peak_rss_mb"] = rss
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
