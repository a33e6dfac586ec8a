"""The few minutes a GPU is at hand: check the CUDA paths, then measure them (docs/gpu.md).

1. runs the tests marked ``cuda`` (``pytest -m cuda``, in a subprocess);
2. on N generated 256x256 JPEGs (quality 90, 4:2:0, in memory), for the shipped default
   model (``fsd``; a freshly built one with its settings if the weights are not there) and
   MISLNet at 256 px (freshly initialised: the speed is the architecture's):
   - forward: images/s of the model on already decoded uint8 crops (host to GPU copy
     included), and for MISLNet also without mixed precision;
   - each decoder alone, in this one process: Pillow (what the pipeline's loader workers
     run), torchvision's libjpeg-turbo on the CPU, nvJPEG on the GPU (``decode_jpegs``);
   - decode then forward, batch by batch, per decoder: images/s and the share of the time
     spent decoding;
   - the pipeline itself, ``Embedder.embed_files`` over the files on disk (Pillow in loader
     workers overlapped with the model), in the model's lossless regime;
3. prints a table and writes every figure as JSON to ``--out``.

Each timing stops after ``--max-seconds`` (images/s from what ran by then), so that the
whole script stays under 5 minutes; the goal is >= 2,000 images/s on one modern GPU.
Without CUDA it says so and exits with status 2 at once.

Usage: python benchmarks/gpu_check.py --out gpu_figures.json [--n 2048] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from osma_cli.data.gpu_decode import decode_jpegs  # noqa: E402
from osma_cli.embed import Embedder  # noqa: E402

GOAL_IMAGES_PER_S = 2000.0
Decoder = Callable[[Sequence[bytes], int, torch.device], torch.Tensor]
"""JPEG bytes, crop size, model device -> (B, 3, c, c) uint8 centre crops."""


def make_jpegs(n: int, size: int = 256, seed: int = 0) -> list[bytes]:
    """Smooth random content plus noise at quality 90 (4:2:0): cheap and JPEG-realistic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0, 6, size=3)
        base = 127 + 60 * np.sin(a * xx * np.pi + b * yy * np.pi + c)
        pixels = np.clip(base[..., None] + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def centre_crops(images: Sequence[torch.Tensor], crop: int) -> torch.Tensor:
    """(3, H, W) images -> (B, 3, crop, crop), the centred window (images at least crop wide)."""
    cut = []
    for image in images:
        top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
        cut.append(image[:, top : top + crop, left : left + crop])
    return torch.stack(cut)


def decode_pillow(data: Sequence[bytes], crop: int, device: torch.device) -> torch.Tensor:
    images = [torch.from_numpy(np.array(Image.open(io.BytesIO(item)).convert("RGB"))).permute(2, 0, 1) for item in data]
    return centre_crops(images, crop)


def decode_torchvision_cpu(data: Sequence[bytes], crop: int, device: torch.device) -> torch.Tensor:
    return centre_crops(decode_jpegs(data, device="cpu"), crop)


def decode_nvjpeg(data: Sequence[bytes], crop: int, device: torch.device) -> torch.Tensor:
    return centre_crops(decode_jpegs(data, device=device), crop)


DECODERS: dict[str, Decoder] = {
    "pillow": decode_pillow,
    "torchvision-cpu": decode_torchvision_cpu,
    "nvjpeg-cuda": decode_nvjpeg,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timer:
    """Sums the seconds of each part of a batch loop, stopping after ``max_seconds`` in all."""

    max_seconds: float
    images: int = 0
    total: float = 0.0

    def over(self) -> bool:
        return self.total >= self.max_seconds


def batches_of(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def time_forward(embedder: Embedder, crops: torch.Tensor, batch_size: int, max_seconds: float) -> float:
    """Images/s of ``embed_crops`` on host uint8 crops (the first batch warms up, untimed)."""
    device = embedder.device
    host = crops.pin_memory() if device.type == "cuda" else crops
    parts = list(torch.split(host, batch_size))
    embedder.embed_crops(parts[0])
    sync(device)
    timer = Timer(max_seconds)
    for part in parts:
        start = time.perf_counter()
        embedder.embed_crops(part)
        sync(device)
        timer.total += time.perf_counter() - start
        timer.images += len(part)
        if timer.over():
            break
    return timer.images / timer.total


def time_decode_then_forward(
    embedder: Embedder, jpegs: Sequence[bytes], decoder: Decoder, batch_size: int, max_seconds: float
) -> dict:
    """Decode alone, and decode then forward batch by batch: images/s and the decode share."""
    device = embedder.device
    batches = batches_of(jpegs, batch_size)
    decoder(batches[0], embedder.crop_size, device)  # warm-up (nvJPEG's handles, CUDA context)
    embedder.embed_crops(decoder(batches[0], embedder.crop_size, device))
    sync(device)
    decode_s = forward_s = 0.0
    images = 0
    for batch in batches:
        start = time.perf_counter()
        crops = decoder(batch, embedder.crop_size, device)
        sync(device)
        middle = time.perf_counter()
        embedder.embed_crops(crops)
        sync(device)
        decode_s += middle - start
        forward_s += time.perf_counter() - middle
        images += len(batch)
        if decode_s + forward_s >= max_seconds:
            break
    return {
        "images": images,
        "decode_img_s": images / decode_s,
        "decode_then_forward_img_s": images / (decode_s + forward_s),
        "decode_share": decode_s / (decode_s + forward_s),
    }


def time_pipeline(
    embedder: Embedder, files: Sequence[Path], batch_size: int, workers: int, max_seconds: float
) -> float:
    """Images/s of ``embed_files`` (Pillow in loader workers, overlapped with the model)."""
    list(embedder.embed_files(files[:batch_size], batch_size=batch_size, workers=workers))
    start, images = time.perf_counter(), 0
    for item in embedder.embed_files(files, batch_size=batch_size, workers=workers):
        assert item.ok, item.error
        images += 1
        if images % batch_size == 0 and time.perf_counter() - start >= max_seconds:
            break
    sync(embedder.device)
    return images / (time.perf_counter() - start)


def measure(
    models: dict[str, Embedder],
    jpegs: Sequence[bytes],
    *,
    batch_size: int,
    decoders: Sequence[str],
    max_seconds: float,
    workers: int,
    folder: Path,
) -> dict:
    """Every figure for every model; ``folder`` receives the JPEGs as files for the pipeline."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, item in enumerate(jpegs):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(item)
        files.append(path)
    figures: dict = {}
    for label, embedder in models.items():
        crops = decode_pillow(jpegs, embedder.crop_size, embedder.device)
        entry: dict = {
            "architecture": embedder.meta.architecture,
            "crop": embedder.crop_size,
            "kind": embedder.meta.kind,
            "mixed_precision": embedder.mixed_precision,
            "forward_img_s": time_forward(embedder, crops, batch_size, max_seconds),
        }
        if embedder.mixed_precision:
            full = Embedder(embedder.model, embedder.meta, embedder.device, mixed_precision=False)
            entry["forward_float32_img_s"] = time_forward(full, crops, batch_size, max_seconds)
        entry["decoders"] = {
            name: time_decode_then_forward(embedder, jpegs, DECODERS[name], batch_size, max_seconds)
            for name in decoders
        }
        entry["pipeline_img_s"] = time_pipeline(embedder, files, batch_size, workers, max_seconds)
        entry["pipeline_workers"] = workers
        figures[label] = entry
    return figures


def default_models(device: torch.device) -> dict[str, Embedder]:
    """The shipped default model (or a fresh one with its settings) and a fresh MISLNet at 256 px."""
    from osma_cli.home import DEFAULT_MODEL, shipped_weights
    from osma_cli.nets import get_model
    from osma_cli.weights import WeightsMeta

    path = shipped_weights(DEFAULT_MODEL)
    if path is not None:
        shipped = Embedder.from_file(path, device=str(device))
        label = f"{DEFAULT_MODEL} (shipped)"
    else:
        model = get_model(DEFAULT_MODEL)
        meta = WeightsMeta(
            architecture=DEFAULT_MODEL,
            embedding_dim=model.embedding_dim,
            crop_size=256,
            l2_normalize=False,
            kind="descriptor",
        )
        shipped = Embedder(model, meta, device)
        label = f"{DEFAULT_MODEL} (fresh: no shipped weights)"
    torch.manual_seed(0)
    mislnet = get_model("mislnet")
    meta = WeightsMeta(architecture="mislnet", embedding_dim=mislnet.embedding_dim, crop_size=256, l2_normalize=True)
    return {label: shipped, "mislnet-256 (fresh)": Embedder(mislnet, meta, device)}


def run_cuda_tests(timeout: float) -> dict:
    """``pytest -m cuda`` in a subprocess: its exit status and its last lines."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        status, tail = done.returncode, (done.stdout + done.stderr).strip().splitlines()[-12:]
    except subprocess.TimeoutExpired:
        status, tail = None, [f"timed out after {timeout:.0f} s"]
    return {"returncode": status, "passed": status == 0, "seconds": time.perf_counter() - start, "tail": tail}


def table(figures: dict) -> str:
    """One line per model and decoder: what the issue asks for, compactly."""
    lines = [f"{'model':<32} {'forward':>9} {'decoder':<16} {'decode':>9} {'dec+fwd':>9} {'decode %':>8}"]
    for label, entry in figures.items():
        for k, (name, d) in enumerate(entry["decoders"].items()):
            forward = f"{entry['forward_img_s']:9.0f}" if k == 0 else " " * 9
            lines.append(
                f"{label if k == 0 else '':<32} {forward} {name:<16} {d['decode_img_s']:9.0f} "
                f"{d['decode_then_forward_img_s']:9.0f} {100 * d['decode_share']:7.0f}%"
            )
        extra = f"  float32 forward {entry['forward_float32_img_s']:.0f}" if "forward_float32_img_s" in entry else ""
        lines.append(
            f"{'':<32} pipeline (Pillow in {entry['pipeline_workers']} workers): "
            f"{entry['pipeline_img_s']:.0f} images/s{extra}"
        )
    lines.append("(images/s at 256 px; decode and dec+fwd in one process, batch by batch)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    parser.add_argument("--n", type=int, default=2048, help="JPEGs to time on (256x256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=8.0, help="cap on each timing")
    parser.add_argument("--workers", type=int, default=None, help="loader workers of the pipeline timing")
    parser.add_argument("--skip-tests", action="store_true", help="measure only")
    parser.add_argument("--test-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (this script is for a machine with a GPU)", file=sys.stderr)
        return 2
    from osma_cli.data import default_workers
    from osma_cli.runtime import resolve_device

    device = resolve_device("cuda")
    report: dict = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "n_images": args.n,
        "batch_size": args.batch_size,
        "goal_img_s": GOAL_IMAGES_PER_S,
    }
    if not args.skip_tests:
        report["cuda_tests"] = run_cuda_tests(args.test_timeout)
        print(
            f"cuda tests: {'passed' if report['cuda_tests']['passed'] else 'FAILED'} "
            f"({report['cuda_tests']['seconds']:.0f} s)\n  " + "\n  ".join(report["cuda_tests"]["tail"]),
            flush=True,
        )
    t0 = time.perf_counter()
    jpegs = make_jpegs(args.n)
    print(f"made {args.n} JPEGs in {time.perf_counter() - t0:.1f} s; measuring on {report['gpu']}", flush=True)
    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as tmp:
        report["models"] = measure(
            default_models(device),
            jpegs,
            batch_size=args.batch_size,
            decoders=list(DECODERS),
            max_seconds=args.max_seconds,
            workers=workers,
            folder=Path(tmp) / "images",
        )
    best = max(max(d["decode_then_forward_img_s"] for d in e["decoders"].values()) for e in report["models"].values())
    report["best_end_to_end_img_s"] = best
    report["goal_met"] = best >= GOAL_IMAGES_PER_S
    print(table(report["models"]))
    print(
        f"best decode+forward: {best:.0f} images/s (goal {GOAL_IMAGES_PER_S:.0f}: "
        f"{'met' if report['goal_met'] else 'not met'})"
    )
    args.out.write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.out}")
    return 0 if report.get("cuda_tests", {"passed": True})["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
