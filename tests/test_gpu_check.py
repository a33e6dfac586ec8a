"""``benchmarks/gpu_check.py`` on the CPU with a few images: every code path but nvJPEG runs.

So that the first minute on a GPU measures instead of finding a typo. The figures are
checked against what they must be (the decode share is decode time over decode and forward),
and the script's answer without CUDA is checked where there is none.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_measurements_run_on_the_cpu(tmp_path: Path) -> None:
    gpu_check = load_script()
    jpegs = gpu_check.make_jpegs(6, size=64)
    models = gpu_check.default_models(torch.device("cpu"))
    for embedder in models.values():  # 64-pixel images: a 40-pixel centre crop keeps the test fast
        embedder.meta = dataclasses.replace(embedder.meta, crop_size=40)
    figures = gpu_check.measure(
        models,
        jpegs,
        batch_size=4,
        decoders=["pillow", "torchvision-cpu"],
        max_seconds=5.0,
        workers=0,
        folder=tmp_path / "images",
    )
    assert set(figures) == set(models) and any(label.startswith("fsd") for label in figures)
    for entry in figures.values():
        assert entry["forward_img_s"] > 0 and entry["pipeline_img_s"] > 0
        for d in entry["decoders"].values():
            assert d["images"] == 6
            decode_s, total_s = d["images"] / d["decode_img_s"], d["images"] / d["decode_then_forward_img_s"]
            assert d["decode_share"] == pytest.approx(decode_s / total_s)
            assert 0 < d["decode_share"] < 1
    text = gpu_check.table(figures)
    assert "torchvision-cpu" in text and "pipeline" in text
    json.dumps(figures)  # the --out file holds them as they are


def test_the_decoders_give_the_same_crops() -> None:
    gpu_check = load_script()
    jpegs = gpu_check.make_jpegs(3, size=64)
    pillow = gpu_check.decode_pillow(jpegs, 48, torch.device("cpu"))
    torchvision_cpu = gpu_check.decode_torchvision_cpu(jpegs, 48, torch.device("cpu"))
    assert pillow.shape == (3, 3, 48, 48) and pillow.dtype == torch.uint8
    assert int((pillow.int() - torchvision_cpu.int()).abs().max()) <= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_without_cuda_the_script_says_so_and_fails(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "f.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert not (tmp_path / "f.json").exists()
