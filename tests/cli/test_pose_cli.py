"""A POSE model is a first-class osma model: trained, attributed, calibrated and benchmarked
through the same commands as a metric-learning model; enrolling into it is refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from osma_cli.classifier import threshold_path
from osma_cli.cli.app import app
from osma_cli.data import extract_crops, load_rgb
from osma_cli.errors import EXIT_OK, EXIT_USAGE
from osma_cli.evaluation.metrics import evaluate_open_set
from osma_cli.weights import load_weights, read_meta
from tests.conftest import write_images
from tests.pose_fixture import CLASS_NAMES, SPLIT, make_pose_fixture

runner = CliRunner()
CROP = 32


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def tree(two_class_tree: Path) -> Path:
    return two_class_tree


@pytest.fixture(scope="module")
def pose_weights(tree: Path, tmp_path_factory) -> Path:
    """POSE trained through `osma train --method pose` (2 tiny epochs)."""
    out = tmp_path_factory.mktemp("pose_model") / "pose.safetensors"
    result = invoke(
        "train",
        tree,
        "--method",
        "pose",
        "--out",
        out,
        "--crop",
        CROP,
        "--epochs",
        2,
        "--steps-per-epoch",
        2,
        "--batch-size",
        6,
        "--workers",
        0,
        "--device",
        "cpu",
        "--val-fraction",
        0.34,
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "classifier" and summary["classes"] == ["checkergan", "smoothgan"]
    assert 0.0 < summary["threshold"] <= 0.5 + 1e-6
    return out


def direct_probabilities(weights: Path, path: Path) -> np.ndarray:
    model, meta = load_weights(weights)
    crops = torch.from_numpy(extract_crops(load_rgb(path), meta.crop_size, 1)).float() / 255
    with torch.no_grad():
        return torch.softmax(model.logits(crops), dim=1)[0].numpy()


def test_pose_model_attributes_through_the_same_cli(
    pose_weights: Path, tree: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    files = sorted((tree / "checkergan").glob("*.png"))[:2] + sorted((tree / "smoothgan").glob("*.png"))[:2]
    result = invoke("attribute", *files, "--model", pose_weights, "--top", 2, "--workers", 0, "--json")
    assert result.exit_code == EXIT_OK, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    tau = read_meta(pose_weights).metrics["threshold"]["value"]
    for record, path in zip(records, files):
        probs = direct_probabilities(pose_weights, path)
        assert record["candidate"] == ["checkergan", "smoothgan"][int(probs.argmax())]
        assert record["score"] == pytest.approx(1 - probs.max(), abs=1e-5)
        assert record["threshold"] == pytest.approx(tau)
        assert record["verdict"] == (record["candidate"] if record["score"] < tau else "unknown")
        assert [c["name"] for c in record["top"]] == [record["candidate"]] + [
            n for n in ("checkergan", "smoothgan") if n != record["candidate"]
        ]

    # the same command with a metric-learning model and its references gives records of the same shape
    refs = tmp_path / "refs.h5"
    assert invoke("build", tree, "--model", tiny_weights, "--out", refs, "--workers", 0).exit_code == EXIT_OK
    metric = invoke("attribute", *files, "--model", tiny_weights, "--refs", refs, "--top", 2, "--workers", 0, "--json")
    assert metric.exit_code == EXIT_OK, metric.output
    assert [set(json.loads(line)) for line in metric.stdout.splitlines()] == [set(r) for r in records]

    table = invoke("attribute", *files, "--model", pose_weights, "--workers", 0)
    assert table.exit_code == EXIT_OK and "1 - max softmax" in table.stdout
    forced = invoke("attribute", files[0], "--model", pose_weights, "--threshold", 1e-9, "--json")
    assert json.loads(forced.stdout)["verdict"] == "unknown"


def test_refs_is_refused_with_a_classifier(pose_weights: Path, tree: Path, tmp_path: Path) -> None:
    result = invoke("attribute", tree, "--model", pose_weights, "--refs", tmp_path / "r.h5")
    assert result.exit_code == EXIT_USAGE
    assert "--refs is not used with a classifier" in result.stderr


def test_enrolling_into_a_pose_model_is_refused(pose_weights: Path, tree: Path, tmp_path: Path) -> None:
    enroll = invoke(
        "enroll", tree / "checkergan", "--name", "newgan", "--model", pose_weights, "--refs", tmp_path / "r.h5"
    )
    build = invoke("build", tree, "--model", pose_weights, "--out", tmp_path / "b.h5")
    for result in (enroll, build):
        assert result.exit_code == EXIT_USAGE
        assert "closed-set classifier" in result.stderr and "osma enroll" in result.stderr
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "b.h5").exists()


def test_calibrate_writes_a_threshold_file_that_attribute_uses(pose_weights: Path, tree: Path, tmp_path: Path) -> None:
    import shutil

    weights = tmp_path / "copy.safetensors"
    shutil.copy(pose_weights, weights)
    val = tmp_path / "val"
    write_images(val / "checkergan", "checker", 3, seed=20, size=40)
    write_images(val / "smoothgan", "smooth", 3, seed=21, size=40)
    write_images(val / "stripegan", "stripes", 3, seed=22, size=40)
    result = invoke("calibrate", val, "--model", weights, "--acceptance", 1.0, "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    sidecar = threshold_path(weights)
    assert sidecar.name == "copy.threshold.json" and str(sidecar) in result.stderr.replace("\n", "")
    record = json.loads(sidecar.read_text())
    tau = record["threshold"]["value"]
    assert record["weights_sha256"] == read_meta(weights).sha256
    known = sorted((val / "checkergan").glob("*.png")) + sorted((val / "smoothgan").glob("*.png"))
    scores = [1 - direct_probabilities(weights, p).max() for p in known]
    assert tau == pytest.approx(np.nextafter(max(scores), np.inf), abs=1e-6)  # accept all known images
    attributed = invoke("attribute", *known, "--model", weights, "--workers", 0, "--json")
    lines = [json.loads(line) for line in attributed.stdout.splitlines()]
    assert all(r["threshold"] == pytest.approx(tau) and r["verdict"] != "unknown" for r in lines)

    crr = invoke("calibrate", val, "--model", weights, "--target-crr", 1.0, "--workers", 0)
    assert crr.exit_code == EXIT_OK and "stripegan" in crr.stderr

    other = tmp_path / "other.safetensors"
    shutil.copy(pose_weights, other)
    threshold_path(other).write_text(sidecar.read_text().replace(record["weights_sha256"], "0" * 64))
    stale = invoke("attribute", known[0], "--model", other)
    assert stale.exit_code != EXIT_OK and "calibrated for other weights" in stale.stderr


@pytest.fixture(scope="module")
def pose_split(tmp_path_factory) -> tuple[Path, Path]:
    """The POSE-layout fixture, and a POSE model trained on its split1 annotation files."""
    root = make_pose_fixture(tmp_path_factory.mktemp("pose_bench"), n_per_class=4, size=48)
    out = tmp_path_factory.mktemp("pose_bench_model") / "pose.safetensors"
    ann = root / "dataset"
    result = invoke(
        "train",
        "--annotations",
        ann / "split1_train" / "annotations" / "split1_train.txt",
        "--val-annotations",
        ann / "split1_val" / "annotations" / "split1_val.txt",
        "--data-root",
        root,
        "--method",
        "pose",
        "--out",
        out,
        "--crop",
        CROP,
        "--epochs",
        2,
        "--steps-per-epoch",
        2,
        "--batch-size",
        6,
        "--workers",
        0,
        "--device",
        "cpu",
    )
    assert result.exit_code == EXIT_OK, result.output
    return root, out


def test_benchmark_with_a_pose_model(pose_split, tmp_path: Path) -> None:
    root, weights = pose_split
    out = tmp_path / "bench"
    result = invoke("benchmark", SPLIT, "--data-root", root, "--model", weights, "--workers", 0, "--out", out, "--json")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["model_kind"] == "classifier" and data["score"] == "1 - max softmax"
    assert data["classes"] == list(CLASS_NAMES)
    assert data["threshold"]["method"].startswith("acceptance rate on the split's validation")
    assert set(data["metrics"]["per_kind"]) == {"seed", "arch", "dataset"}
    assert not (out / "references.h5").exists() and (out / "roc.png").stat().st_size > 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    score = np.array([float(r["score"]) for r in rows])
    assert ((score >= 0) & (score <= 1)).all()
    y = np.array([int(r["label"]) if r["true_class"] != "unknown" else -1 for r in rows])
    cand = np.array([CLASS_NAMES.index(r["candidate"]) for r in rows])
    again = evaluate_open_set(y, cand, score, len(CLASS_NAMES), data["threshold"]["value"]).to_dict()
    for key in ("closed_set_accuracy", "auc", "oscr", "crr"):
        assert again[key] == pytest.approx(data["metrics"][key], abs=1e-5)
    first = rows[0]
    probs = direct_probabilities(weights, Path(first["path"]))
    assert float(first["score"]) == pytest.approx(1 - probs.max(), abs=1e-5)


def test_benchmark_refuses_a_classifier_of_other_classes(pose_weights: Path, pose_split) -> None:
    root, _ = pose_split
    result = invoke("benchmark", SPLIT, "--data-root", root, "--model", pose_weights, "--workers", 0)
    assert result.exit_code == EXIT_USAGE
    assert "do not match" in result.stderr and "checkergan" in result.stderr


def test_benchmark_refuses_a_classifier_trained_on_another_split(pose_split) -> None:
    """Regression: trained from split1's annotation files, the model's classes are class0..K-1, which
    match any split of K classes by label; a split whose label k is another generator is refused."""
    root, weights = pose_split
    swap = {"1": "2", "2": "1"}
    for src in (root / "dataset").glob(f"{SPLIT}_*/annotations/*.txt"):
        dst = root / str(src.relative_to(root)).replace(SPLIT, "split9")
        dst.parent.mkdir(parents=True, exist_ok=True)
        lines = src.read_text().splitlines(keepends=True)
        if src.stem.endswith(("_train", "_val", "_test")):
            lines = [
                f"{path}\t{swap.get(label.strip(), label.strip())}\n"
                for path, label in (line.rsplit("\t", 1) for line in lines if line.strip())
            ]
        dst.write_text("".join(lines))
    result = invoke("benchmark", "split9", "--data-root", root, "--model", weights, "--workers", 0)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "trained on other images than split9's" in result.stderr
    assert read_meta(weights).recipe["data"]["label_folders"] == [
        "OSMA/real",
        "OSMA/fake/ProGAN/multiseed_celeba/seed_v0",
        "OSMA/fake/styleGAN/cat",
    ]


def test_info_shows_the_classifier_and_its_threshold(pose_weights: Path) -> None:
    result = invoke("info", "--model", pose_weights, "--device", "cpu", "--json")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["model"]["kind"] == "classifier"
    assert data["classifier"]["classes"] == ["checkergan", "smoothgan"]
    stored = read_meta(pose_weights).metrics["threshold"]["value"]
    assert data["classifier"]["threshold"]["value"] == pytest.approx(stored)
    table = invoke("info", "--model", pose_weights, "--device", "cpu")
    assert table.exit_code == EXIT_OK and "closed-set classifier" in table.stdout
