"""``osma benchmark --perturb`` end to end on the tiny POSE fixture, with tiny random networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.errors import EXIT_OK, EXIT_USAGE
from tests.pose_fixture import SPLIT, make_pose_fixture

runner = CliRunner()
FIGURES = ("accuracy", "auc", "oscr", "crr")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory) -> Path:
    return make_pose_fixture(tmp_path_factory.mktemp("pose"), n_per_class=4, size=48)


def test_json_has_a_record_per_row_and_the_clean_row_is_the_plain_run(pose_root, tiny_weights):
    result = invoke(
        "benchmark",
        SPLIT,
        "--data-root",
        pose_root,
        "--model",
        tiny_weights,
        "--workers",
        0,
        "--perturb",
        "jpeg:90",
        "--perturb",
        "crop:0.5",
        "--json",
    )
    assert result.exit_code == EXIT_OK, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["perturbation"] for r in rows] == ["clean", "jpeg:90", "crop:0.5"]
    assert all(r["schema"] == 1 and r["command"] == "benchmark" and r["model"] == "tiny" for r in rows)
    assert all(r["split"] == SPLIT and r["n_known"] == 12 and r["n_unknown"] == 12 for r in rows)
    plain = json.loads(
        invoke("benchmark", SPLIT, "--data-root", pose_root, "--model", tiny_weights, "--workers", 0, "--json").stdout
    )
    assert rows[0]["accuracy"] == pytest.approx(plain["metrics"]["closed_set_accuracy"])
    for key in ("auc", "oscr", "crr"):
        assert rows[0][key] == pytest.approx(plain["metrics"][key])
    assert all(r["threshold"] == pytest.approx(plain["threshold"]["value"]) for r in rows)  # tau from clean val


def test_two_models_in_one_table_and_one_plot_per_figure(tmp_path, pose_root, tiny_weights, other_weights):
    out = tmp_path / "out"
    args = [
        "benchmark",
        SPLIT,
        "--data-root",
        pose_root,
        "--model",
        tiny_weights,
        "--model",
        other_weights,
        "--workers",
        0,
        "--perturb",
        "standard",
        "--out",
        out,
    ]
    result = invoke(*args)
    assert result.exit_code == EXIT_OK, result.output
    lines = result.stdout.splitlines()
    for model in ("tiny", "other"):
        for label in ("clean", "jpeg:90", "jpeg:50", "resize:0.75", "blur:1", "noise:2", "crop:0.5"):
            assert any(model in line and f" {label} " in line for line in lines), (model, label)
    saved = json.loads((out / "robustness.json").read_text())
    assert len(saved) == 2 * 9 and {r["model"] for r in saved} == {"tiny", "other"}
    again = [json.loads(line) for line in invoke(*args, "--json").stdout.splitlines()]

    def untimed(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert untimed(again) == untimed(saved)  # the second run reads the perturbed files and embeddings back
    for figure in FIGURES:
        png = out / f"robustness_{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("spec", ["jpeg:0", "resize:2", "foo:1", "crop:x"])
def test_a_bad_spec_is_a_usage_error_naming_it(pose_root, tiny_weights, spec):
    result = invoke("benchmark", SPLIT, "--data-root", pose_root, "--model", tiny_weights, "--perturb", spec)
    assert result.exit_code == EXIT_USAGE
    assert spec in result.output


def test_several_models_need_perturb(pose_root, tiny_weights, other_weights):
    result = invoke("benchmark", SPLIT, "--data-root", pose_root, "--model", tiny_weights, "--model", other_weights)
    assert result.exit_code == EXIT_USAGE and "--perturb" in result.output
