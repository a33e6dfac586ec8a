"""``osma benchmark`` end to end on a tiny POSE-layout fixture, with a tiny random network."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.embed import Embedder
from osma_cli.errors import EXIT_ERROR, EXIT_OK
from osma_cli.evaluation.metrics import evaluate_open_set
from tests.pose_fixture import CLASS_NAMES, SPLIT, make_pose_fixture

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory) -> Path:
    return make_pose_fixture(tmp_path_factory.mktemp("pose"), n_per_class=4, size=48)


def test_benchmark_outputs_are_consistent(tmp_path, pose_root, tiny_weights):
    out = tmp_path / "out"
    result = invoke(
        "benchmark", SPLIT, "--data-root", pose_root, "--model", tiny_weights, "--workers", 0, "--out", out, "--json"
    )
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data == json.loads((out / "metrics.json").read_text())
    m = data["metrics"]
    assert data["classes"] == list(CLASS_NAMES)
    assert set(m["per_kind"]) == {"seed", "arch", "dataset"}
    for key in ("closed_set_accuracy", "auc", "oscr", "af1", "crr", "af1_crr_auc"):
        assert 0.0 <= m[key] <= 1.0
    assert data["threshold"]["method"].startswith("acceptance rate on the split's validation")
    for name in ("roc.png", "oscr.png", "af1_crr.png", "scores.png", "references.h5"):
        assert (out / name).stat().st_size > 0

    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == m["n_known"] + m["n_unknown"]
    y = np.array([int(r["label"]) if r["true_class"] != "unknown" else -1 for r in rows])
    cand = np.array([CLASS_NAMES.index(r["candidate"]) for r in rows])
    score = np.array([float(r["score"]) for r in rows])
    kinds = np.array([r["unknown_kind"] for r in rows], dtype=object)
    again = evaluate_open_set(
        y, cand, score, len(CLASS_NAMES), data["threshold"]["value"], unknown_kind=kinds
    ).to_dict()
    for key in ("closed_set_accuracy", "auc", "oscr", "af1", "crr"):
        assert again[key] == pytest.approx(m[key], abs=1e-5)
    assert m["auc"] == pytest.approx(roc_auc_score(y == -1, score), abs=1e-5)
    assert m["crr"] == pytest.approx(np.mean(score[y == -1] >= data["threshold"]["value"]), abs=1e-9)


def test_threshold_zero_rejects_everything(pose_root, tiny_weights):
    result = invoke(
        "benchmark",
        SPLIT,
        "--data-root",
        pose_root,
        "--model",
        tiny_weights,
        "--workers",
        0,
        "--threshold",
        0,
        "--json",
    )
    m = json.loads(result.stdout)["metrics"]
    assert m["crr"] == 1.0 and all(k["crr"] == 1.0 for k in m["per_kind"].values())


def test_second_run_embeds_nothing(pose_root, tiny_weights, monkeypatch):
    calls = []
    original = Embedder.embed_files

    def counting(self, paths, **kwargs):
        calls.append(len(paths))
        return original(self, paths, **kwargs)

    monkeypatch.setattr(Embedder, "embed_files", counting)
    args = ["benchmark", SPLIT, "--data-root", pose_root, "--model", tiny_weights, "--workers", 0, "--json"]
    first = invoke(*args)
    assert sum(calls) > 0
    calls.clear()
    second = invoke(*args)
    assert sum(calls) == 0
    assert json.loads(first.stdout)["metrics"] == json.loads(second.stdout)["metrics"]


def test_table_output_has_pose_columns(pose_root, tiny_weights):
    result = invoke("benchmark", SPLIT, "--data-root", pose_root, "--model", tiny_weights, "--workers", 0)
    assert result.exit_code == EXIT_OK
    for word in ("AUC", "OSCR", "CRR", "aF1", "seed", "arch", "dataset", "closed-set accuracy"):
        assert word in result.stdout


def test_malformed_annotation_names_file_and_line(tmp_path, tiny_weights):
    root = make_pose_fixture(tmp_path / "pose", n_per_class=2)
    ann = root / "dataset" / "split1_train" / "annotations" / "split1_train.txt"
    lines = ann.read_text().splitlines()
    lines[2] = "./dataset/OSMA/no_label_here.png"
    ann.write_text("\n".join(lines) + "\n")
    result = invoke("benchmark", SPLIT, "--data-root", root, "--model", tiny_weights)
    assert result.exit_code == EXIT_ERROR
    assert "split1_train.txt" in result.stderr and "3" in result.stderr
