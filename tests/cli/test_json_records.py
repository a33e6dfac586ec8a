"""Every command that reports something a pipeline needs has ``--json``: one record on
stdout with ``schema`` and ``command`` (docs/output.md), messages on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.errors import EXIT_OK
from tests.conftest import write_images

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def record(result, command: str) -> dict:
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["command"] == command
    return data


@pytest.fixture
def built(tmp_path: Path, tiny_weights: Path, image_tree: Path) -> tuple[Path, dict]:
    refs = tmp_path / "refs.h5"
    data = record(
        invoke("build", image_tree, "--out", refs, "--model", tiny_weights, "--workers", 0, "--json"), "build"
    )
    return refs, data


def test_build_json(built):
    refs, data = built
    assert data["path"] == str(refs)
    assert [g["name"] for g in data["generators"]] == ["checkergan", "smoothgan"]
    assert data["threshold"]["value"] > 0 and data["unreadable"] == 0 and data["repeated"] == 0


def test_enroll_json(tmp_path, built, tiny_weights):
    refs, _ = built
    write_images(tmp_path / "stripes", "stripes", 4, seed=5)
    result = invoke(
        "enroll",
        tmp_path / "stripes",
        "--name",
        "stripegan",
        "--refs",
        refs,
        "--model",
        tiny_weights,
        "--workers",
        0,
        "--json",
    )
    data = record(result, "enroll")
    assert data["name"] == "stripegan" and data["added"] == 4 and data["count"] == 4
    assert data["refs"] == str(refs) and data["sigma"] > 0 and data["update"] is False
    assert "enrolled 4 images" in result.stderr


def test_refs_json_records(built):
    refs, _ = built
    assert record(invoke("refs", "list", "--refs", refs, "--json"), "refs list")["generators"]
    assert record(invoke("refs", "show", "smoothgan", "--refs", refs, "--json"), "refs show")["count"] == 5
    result = invoke("refs", "remove", "smoothgan", "--refs", refs, "--yes", "--json")
    data = record(result, "refs remove")
    assert data == {
        "schema": 1,
        "command": "refs remove",
        "refs": str(refs),
        "name": "smoothgan",
        "count": 5,
        "remaining": 1,
    }
    assert "removed" in result.stderr


def test_info_json(built, tiny_weights):
    refs, _ = built
    data = record(invoke("info", "--model", tiny_weights, "--refs", refs, "--json"), "info")
    assert data["model"]["architecture"] == "mislnet"


def test_zoo_list_json():
    data = record(invoke("zoo", "list", "--json"), "zoo list")
    assert len(data["generators"]) == 24


def test_demo_json(tmp_path, monkeypatch, built, tiny_weights):
    """The demo's records are attribute's, named ``demo``, with the expected verdict."""
    import osma_cli.demo
    from osma_cli.demo import DemoImage

    refs, _ = built

    def fake_images(folder):
        paths = write_images(Path(folder), "smooth", 2, seed=9)
        return [DemoImage(path=p, what="a test image", expected="smoothgan") for p in paths]

    monkeypatch.setattr(osma_cli.demo, "write_demo_images", fake_images)
    result = invoke("demo", "--out", tmp_path / "demo", "--model", tiny_weights, "--refs", refs, "--json")
    assert result.exit_code == EXIT_OK, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2
    assert all(r["schema"] == 1 and r["command"] == "demo" and r["expected"] == "smoothgan" for r in lines)
    assert "Sample images" in result.stderr


def test_calibrate_reports_what_tau_costs_and_the_tau_it_replaces(tmp_path, built, tiny_weights):
    refs, build_record = built
    val = tmp_path / "val"
    write_images(val / "smoothgan", "smooth", 10, seed=21)
    write_images(val / "checkergan", "checker", 10, seed=22)
    write_images(val / "stripegan", "stripes", 8, seed=23)  # unknown
    base = ["--model", tiny_weights, "--refs", refs, "--workers", 0]
    result = invoke("calibrate", val, "--acceptance", 0.9, "--json", *base)
    data = record(result, "calibrate")
    assert data["acceptance"] == 0.9 and data["n_known"] == 20 and data["n_unknown"] == 8
    assert 0.0 <= data["crr"] <= 1.0
    assert data["old_threshold"]["value"] == build_record["threshold"]["value"]
    assert data["threshold"]["target"] == 0.9 and data["unknown_folders"] == ["stripegan"]
    assert "accepts 90.00% of the 20 known" in result.stderr and "CRR" in result.stderr
    assert "was " in result.stderr


def test_calibrate_refuses_acceptance_with_target_crr(tmp_path, built, tiny_weights):
    refs, _ = built
    result = invoke(
        "calibrate", tmp_path, "--acceptance", 0.9, "--target-crr", 0.9, "--refs", refs, "--model", tiny_weights
    )
    assert result.exit_code == 2 and "--target-crr" in result.stderr
