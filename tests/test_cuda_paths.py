"""The CUDA paths, each against the CPU or float32: run with ``pytest -m cuda`` on a GPU.

Every test here is skipped with a reason where CUDA is absent (``benchmarks/gpu_check.py``
runs them first on the day a GPU is at hand). What each one holds:

- mixed precision (bfloat16 autocast) gives the verdicts of float32, embeddings to ~1e-2;
  float32 on the GPU (TF32 off, ``runtime.configure_numerics``) gives the CPU's to ~1e-4;
- pinned-memory loading hands over page-locked batches and the same embeddings;
- the descriptor's batched least-squares solve and the whole self-description on CUDA equal
  the CPU's (float64);
- two processes under NCCL train the model one GPU trains (needs two GPUs);
- nvJPEG decoding gives Pillow's pixels to the IDCT's rounding.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from tests.conftest import write_images

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")]


def cuda_embedder(weights: Path, *, mixed_precision: bool):
    from osma_cli.embed import Embedder
    from osma_cli.weights import load_weights

    model, meta = load_weights(weights)
    return Embedder(model, meta, torch.device("cuda"), mixed_precision=mixed_precision)


@pytest.fixture(scope="module")
def pattern_files(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("cuda_images")
    return {kind: write_images(root / kind, kind, 8, seed=k, size=64) for k, kind in enumerate(("smooth", "checker"))}


def test_mixed_precision_gives_the_verdicts_of_float32(tiny_weights: Path, pattern_files) -> None:
    from osma_cli.embed import Embedder, embed_all
    from osma_cli.rules.fang import score_embeddings

    files = [p for kind in ("smooth", "checker") for p in pattern_files[kind]]
    labels = np.repeat([0, 1], 8)
    full, _ = embed_all(cuda_embedder(tiny_weights, mixed_precision=False), files, workers=0)
    half, _ = embed_all(cuda_embedder(tiny_weights, mixed_precision=True), files, workers=0)
    cpu, _ = embed_all(Embedder.from_file(tiny_weights, device="cpu"), files, workers=0)
    np.testing.assert_allclose(full, cpu, atol=1e-4, rtol=1e-4)  # TF32 off: the GPU computes the CPU's numbers
    scale = np.abs(full).max()
    assert np.abs(half - full).max() <= 2e-2 * scale
    references = [i for i in range(16) if i % 4]  # three in four enrolled, the rest queried
    queries = [i for i in range(16) if i % 4 == 0]
    centroids = np.stack([full[[i for i in references if labels[i] == k]].mean(0) for k in (0, 1)])
    sigmas = np.array([full[[i for i in references if labels[i] == k]].std() + 1e-6 for k in (0, 1)])
    verdict_full = score_embeddings(full[queries], centroids, sigmas)
    verdict_half = score_embeddings(half[queries], centroids, sigmas)
    np.testing.assert_array_equal(verdict_half.candidates, verdict_full.candidates)


def test_pinned_memory_loading_hands_over_page_locked_batches(tiny_weights: Path, pattern_files) -> None:
    from osma_cli.data import ImageCropDataset, crop_loader
    from osma_cli.embed import Embedder

    files = pattern_files["checker"]
    dataset = ImageCropDataset(files, 32)
    batches = list(crop_loader(dataset, batch_size=4, workers=1, pin_memory=True))
    assert batches and all(b.crops.is_pinned() and b.owners.is_pinned() for b in batches)
    on_gpu = [
        item.embedding
        for item in cuda_embedder(tiny_weights, mixed_precision=False).embed_files(files, batch_size=4, workers=1)
    ]
    on_cpu = [
        item.embedding
        for item in Embedder.from_file(tiny_weights, device="cpu").embed_files(files, batch_size=4, workers=1)
    ]
    np.testing.assert_allclose(np.stack(on_gpu), np.stack(on_cpu), atol=1e-4, rtol=1e-4)


def test_the_descriptors_batched_solve_on_cuda_equals_the_cpus() -> None:
    from osma_cli.nets.self_prediction import solve_predictor

    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(6, 3, 80, 24)))
    G = a.transpose(-1, -2) @ a  # positive definite, batched (6, 3, 24, 24)
    h = torch.from_numpy(rng.normal(size=(6, 3, 24)))
    n = torch.full((6,), 80, dtype=torch.int64)
    for constrained, groups in ((False, 1), (True, 1), (True, 3)):
        cpu = solve_predictor(G, h, n, groups=groups, constrained=constrained)
        gpu = solve_predictor(G.cuda(), h.cuda(), n.cuda(), groups=groups, constrained=constrained)
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-9, rtol=1e-9)


def test_the_self_description_on_cuda_equals_the_cpus() -> None:
    from osma_cli.nets import get_model

    torch.manual_seed(0)
    x = torch.rand(4, 3, 96, 80, dtype=torch.float64)
    exact = get_model("fsd", residual_precision="float64")
    torch.testing.assert_close(exact.cuda().describe(x.cuda()).cpu(), exact.cpu().describe(x), atol=1e-8, rtol=1e-8)
    shipped_settings = get_model("fsd")  # float32 residuals: ~2e-6 from float64 on the CPU already
    torch.testing.assert_close(
        shipped_settings.cuda().describe(x.cuda()).cpu(), shipped_settings.cpu().describe(x), atol=1e-4, rtol=1e-4
    )


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with NCCL needs two GPUs (one rank per GPU)")
def test_two_gpus_under_nccl_train_the_model_one_gpu_trains(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from osma_cli.runtime import configure_numerics
    from osma_cli.training.distributed import DistContext
    from tests.training.test_distributed import _worker, assert_close_states, train_state
    from tests.training.test_loop import _free_port

    configure_numerics()
    single = train_state(DistContext(device=torch.device("cuda", 0)), batch_size=8, mixed_precision=False)
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path), 4, "cuda"), nprocs=2, join=True, start_method="spawn"
    )
    for rank in (0, 1):
        assert_close_states(single, load_file(tmp_path / f"rank{rank}.safetensors"), prefix="model.")


def _jpeg(pixels: np.ndarray, subsampling: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, subsampling=subsampling)
    return buffer.getvalue()


def test_gpu_jpeg_decoding_gives_pillows_pixels_to_the_idcts_rounding() -> None:
    from osma_cli.data.gpu_decode import decode_jpegs

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256
    smooth = 127 + 60 * np.sin(3 * xx * np.pi + 2 * yy * np.pi)[..., None] + rng.normal(0, 12, (256, 256, 3))
    pixels = np.clip(smooth, 0, 255).astype(np.uint8)
    for subsampling, p999, mean in ((0, 2, 0.5), (2, 4, 1.5)):  # 4:4:4 (the IDCT only), 4:2:0 (+ up-sampling)
        data = [_jpeg(np.roll(pixels, 17 * i, axis=1), subsampling) for i in range(4)]
        decoded = decode_jpegs(data, device="cuda")
        for tensor, item in zip(decoded, data):
            assert tensor.device.type == "cuda" and tensor.dtype == torch.uint8
            reference = torch.from_numpy(np.array(Image.open(io.BytesIO(item)).convert("RGB"))).permute(2, 0, 1)
            diff = (tensor.cpu().int() - reference.int()).abs().float()
            assert tensor.shape == reference.shape
            assert float(torch.quantile(diff.flatten(), 0.999)) <= p999, subsampling
            assert float(diff.mean()) <= mean, subsampling
