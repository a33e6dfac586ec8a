"""``osma train --method fsd-detector`` and ``osma detect`` end to end, on tiny images and a tiny descriptor."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.detector_file import load_detector
from osma_cli.errors import EXIT_OK, EXIT_SOME_INPUTS_FAILED
from osma_cli.nets import get_model
from osma_cli.weights import WeightsMeta, save_weights
from tests.conftest import pattern_image, write_images

SMALL = {"block": 3, "scales": 2, "window": 48}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def save_descriptor(path: Path, **settings) -> Path:
    model = get_model("fsd", **{**SMALL, **settings})
    save_weights(
        path,
        model,
        WeightsMeta(
            architecture="fsd",
            embedding_dim=model.raw_dim,
            crop_size=model.settings["window"],
            l2_normalize=False,
            kind="descriptor",
            arch_kwargs={**SMALL, **settings},
        ),
    )
    return path


def noisy_photo(rng: np.random.Generator, size: int = 56) -> np.ndarray:
    """A stand-in for a photograph: smooth content plus independent sensor-like noise."""
    base = pattern_image("smooth", rng, size).astype(np.float64)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny descriptor, a folder of 'real' photos (4 cameras x 6), and a detector fitted by the CLI."""
    root = tmp_path_factory.mktemp("detect")
    descriptor = save_descriptor(root / "fsd.safetensors")
    real = root / "real"
    rng = np.random.default_rng(0)
    for camera in range(4):
        for i in range(6):
            path = real / f"camera{camera}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(noisy_photo(rng)).save(path, quality=92)
    detector = root / "detector.safetensors"
    result = invoke(
        "train",
        real,
        "--method",
        "fsd-detector",
        "--model",
        descriptor,
        "--out",
        detector,
        "--copies",
        "offgrid:3,jpeg:90",
        "--pca-dim",
        4,
        "--held-out",
        0.25,
        "--restarts",
        3,
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    return {
        "root": root,
        "descriptor": descriptor,
        "real": real,
        "detector": detector,
        "summary": json.loads(result.stdout),
    }


def test_training_records_its_settings_and_holds_out_whole_cameras(trained):
    summary = trained["summary"]
    assert summary["schema"] == 1 and summary["command"] == "train" and summary["kind"] == "detector"
    assert summary["copies"] == ["original", "offgrid:3", "jpeg:90"]
    assert summary["n_fit_photos"] == 18 and summary["n_held_out_photos"] == 6
    assert len(summary["held_out_groups"]) == 1
    detector, meta = load_detector(trained["detector"])
    assert meta.fit["pca_dim"] == 4 and meta.mixture["covariance"] == "full" and meta.acceptance == 0.95
    assert meta.fit["restarts"] == 3 and meta.fit["restart_seeds"] == [0, 1, 2] and meta.fit["seed"] in (0, 1, 2)
    assert summary["fit"]["held_out_mean_log_density"] == meta.fit["held_out_mean_log_density"]
    assert meta.recipe["held_out_groups"] == summary["held_out_groups"]
    assert set(meta.metrics["held_out_acceptance"]) == {"original", "offgrid:3", "jpeg:90"}


def test_detect_json_records(trained, tmp_path):
    fakes = write_images(tmp_path / "fakes", "checker", 3, seed=5, size=56)
    result = invoke(
        "detect",
        trained["real"] / "camera0",
        *fakes,
        "--detector",
        trained["detector"],
        "--model",
        trained["descriptor"],
        "--json",
        "--workers",
        0,
    )
    assert result.exit_code == EXIT_OK, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 9
    for r in records:
        assert r["schema"] == 1 and r["command"] == "detect" and r["status"] == "ok" and r["error"] is None
        assert r["verdict"] == ("synthetic" if r["score"] >= r["threshold"] else "real")
        assert r["margin"] == pytest.approx(r["threshold"] - r["score"])
        assert isinstance(r["warnings"], list) and isinstance(r["nll"], float)
    detector, _ = load_detector(trained["detector"])
    assert all(r["threshold"] == detector.threshold for r in records)
    assert [r["verdict"] for r in records if "checker" in r["path"]] == ["synthetic"] * 3


def test_bad_files_get_error_records_and_exit_3(trained, tmp_path):
    good = write_images(tmp_path / "in", "smooth", 2, seed=1, size=56)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = invoke(
        "detect",
        tmp_path / "in",
        "--detector",
        trained["detector"],
        "--model",
        trained["descriptor"],
        "--json",
        "--workers",
        0,
    )
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["broken.png"]["status"] == "error" and records["broken.png"]["verdict"] is None
    assert records["broken.png"]["error"]
    assert all(records[p.name]["status"] == "ok" for p in good)
    assert "broken.png" in result.stderr


def test_csv_to_stdout_and_table(trained, tmp_path):
    images = write_images(tmp_path / "in", "dots", 2, seed=3, size=56)
    result = invoke(
        "detect",
        *images,
        "--detector",
        trained["detector"],
        "--model",
        trained["descriptor"],
        "--csv",
        "-",
        "--workers",
        0,
    )
    assert result.exit_code == EXIT_OK, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in images]
    assert set(rows[0]) == {
        "path",
        "path_bytes_b64",
        "status",
        "verdict",
        "score",
        "threshold",
        "margin",
        "nll",
        "error",
        "warnings",
    }
    table = invoke(
        "detect", *images, "--detector", trained["detector"], "--model", trained["descriptor"], "--workers", 0
    )
    assert table.exit_code == EXIT_OK and "threshold" in table.stdout and images[0].name in table.stdout


def test_a_detector_is_refused_with_another_descriptor(trained, tmp_path):
    other = save_descriptor(tmp_path / "other.safetensors", block=5)
    image = write_images(tmp_path / "in", "smooth", 1, seed=1, size=56)[0]
    result = invoke("detect", image, "--detector", trained["detector"], "--model", other)
    assert result.exit_code == 1
    assert "fitted on the raw descriptions of fsd.safetensors" in result.stderr


def test_without_a_shipped_detector_the_message_says_what_to_pass(tmp_path):
    image = write_images(tmp_path / "in", "smooth", 1, seed=1, size=56)[0]
    result = invoke("detect", image)
    assert result.exit_code == 1 and "--detector" in result.stderr


def test_train_options_of_the_detector_are_checked(trained, tmp_path):
    result = invoke(
        "train",
        trained["real"],
        "--method",
        "fsd-detector",
        "--model",
        trained["descriptor"],
        "--out",
        tmp_path / "d.safetensors",
        "--copies",
        "jpeg:200",
    )
    assert result.exit_code == 2 and "quality" in result.stderr
    result = invoke(
        "train",
        trained["real"],
        "--method",
        "fsd-detector",
        "--model",
        trained["descriptor"],
        "--out",
        tmp_path / "d.safetensors",
        "--covariance",
        "round",
    )
    assert result.exit_code == 2 and "covariance" in result.stderr


def test_attribute_detect_answers_real_for_what_the_detector_calls_real(trained, tmp_path):
    """``osma attribute --detect``: the detector's ``real`` wins; the others keep their attribution."""
    gens = tmp_path / "gens"
    write_images(gens / "checkergan", "checker", 4, seed=7, size=56)
    write_images(gens / "dotsgan", "dots", 4, seed=8, size=56)
    refs = tmp_path / "refs.h5"
    assert invoke("build", gens, "--out", refs, "--model", trained["descriptor"], "--workers", 0).exit_code == EXIT_OK
    inputs = [*sorted((trained["real"] / "camera0").iterdir())[:3], *sorted((gens / "checkergan").iterdir())[:2]]
    common = [
        "--model",
        trained["descriptor"],
        "--refs",
        refs,
        "--detect",
        "--detector",
        trained["detector"],
        "--workers",
        0,
    ]
    result = invoke("attribute", *inputs, *common, "--json")
    assert result.exit_code == EXIT_OK, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    plain = [
        json.loads(line)
        for line in invoke(
            "attribute", *inputs, "--model", trained["descriptor"], "--refs", refs, "--json", "--workers", 0
        ).stdout.splitlines()
    ]
    assert len(records) == len(plain) == 5
    for chained, alone in zip(records, plain):
        detection = chained["detection"]
        assert detection["verdict"] == ("synthetic" if detection["score"] >= detection["threshold"] else "real")
        expected = "real" if detection["verdict"] == "real" else alone["verdict"]
        assert chained["verdict"] == expected and chained["candidate"] == alone["candidate"]
    assert any(r["detection"]["verdict"] == "real" for r in records[:3])
    assert all(r["verdict"] == r["candidate"] or r["verdict"] == "unknown" for r in records[3:])
    csv_out = tmp_path / "out.csv"
    assert invoke("attribute", *inputs, *common, "--csv", csv_out).exit_code == EXIT_OK
    header = csv_out.read_text().splitlines()[0].split(",")
    assert {"detection_verdict", "detection_score", "detection_threshold"} <= set(header)
    assert "--detect" in invoke("attribute", *inputs, "--detector", trained["detector"]).stderr
