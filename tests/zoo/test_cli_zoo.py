"""``osma zoo`` through Typer's test runner, on the tiny zoo (the recipe is swapped in)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from osma_cli.cli.zoo import zoo_app
from osma_cli.errors import EXIT_ERROR, EXIT_OK

runner = CliRunner()


def invoke(*args):
    return runner.invoke(zoo_app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def tiny_default(tiny_zoo, monkeypatch):
    """Make the tiny recipe the default one for the commands."""
    from osma_cli.zoo import materialise, recipe

    tiny, weights = tiny_zoo
    monkeypatch.setattr(recipe, "default_recipe", lambda: tiny)
    monkeypatch.setattr(materialise, "default_recipe", lambda: tiny)
    monkeypatch.setattr(materialise, "default_workers", lambda: 0)
    return tiny, weights


def test_every_command_has_help():
    result = invoke("--help")
    assert result.exit_code == EXIT_OK
    for name in ("train", "build", "list"):
        assert name in result.output
        sub = invoke(name, "--help")
        assert sub.exit_code == EXIT_OK and len(sub.output) > 100


def test_list_shows_every_generator_and_its_roles():
    result = invoke("list", "--json")
    assert result.exit_code == EXIT_OK
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["command"] == "zoo list"
    assert len(data["generators"]) == 24
    first = data["generators"][0]
    assert first["steps"] is None  # no weights where tests look (OSMA_WEIGHTS_DIR is empty)
    assert set(first["splits"]) == {f"split{k}" for k in range(1, 6)}
    table = invoke("list")
    assert "tconv-cameras-s0" in table.output and "K K s K K" in table.output


def test_list_reads_the_weights(tiny_default):
    _, weights = tiny_default
    data = json.loads(invoke("list", "--json", "--weights", weights).stdout)
    assert all(g["steps"] == 2 and g["psnr_heldout"] is not None for g in data["generators"])


def test_build_without_weights_says_what_to_do():
    result = invoke("build")
    assert result.exit_code == EXIT_ERROR
    text = " ".join(result.output.split())
    assert "have no weights" in text and "osma zoo train" in text


def test_train_then_build_then_verify(tiny_default, tmp_path):
    _, weights = tiny_default
    out = tmp_path / "w"
    shutil.copytree(weights, out)
    result = invoke("train", "--out", out, "--only", "tconv-cameras-s0", "--force", "--steps", 1)
    assert result.exit_code == EXIT_OK, result.output
    assert "tconv-cameras-s0: 1 steps" in result.output
    assert "nothing to train" in invoke("train", "--out", out).output
    trained = invoke("train", "--out", out, "--only", "tconv-cameras-s0", "--force", "--steps", 1, "--json")
    record = json.loads(trained.stdout)
    assert record["schema"] == 1 and record["command"] == "zoo train" and record["weights"] == str(out)
    assert [(t["name"], t["steps"]) for t in record["trained"]] == [("tconv-cameras-s0", 1)]
    assert "tconv-cameras-s0: 1 steps" in trained.stderr

    root = tmp_path / "bench"
    result = invoke("build", "--root", root, "--weights", out, "--json")
    assert result.exit_code == EXIT_OK, result.output
    report = json.loads(result.stdout)
    assert report["written"] == report["images"] > 0 and report["reference"]["status"] == "absent"
    assert report["schema"] == 1 and report["command"] == "zoo build"

    verified = invoke("build", "--verify", "--root", root, "--weights", out)
    assert verified.exit_code == EXIT_OK and "all intact" in verified.output
    victim = next(root.glob("dataset/zoo/fake/*/*.png"))
    pixels = np.asarray(Image.open(victim)).copy()
    pixels[3, 3] = 255 - pixels[3, 3]
    Image.fromarray(pixels).save(victim)
    damaged = invoke("build", "--verify", "--root", root, "--weights", out)
    assert damaged.exit_code == EXIT_ERROR and "damaged" in damaged.output

    repaired = json.loads(invoke("build", "--root", root, "--weights", out, "--json").stdout)
    assert repaired["written"] == 1
    assert invoke("build", "--verify", "--root", root, "--weights", out).exit_code == EXIT_OK
    checked = json.loads(invoke("build", "--verify", "--root", root, "--weights", out, "--json").stdout)
    assert checked["command"] == "zoo build --verify" and checked["ok"] is True


def test_write_digests_then_verify_matches(tiny_default, tmp_path):
    _, weights = tiny_default
    out = tmp_path / "w"
    shutil.copytree(weights, out)
    root = tmp_path / "bench"
    assert invoke("build", "--root", root, "--weights", out, "--write-digests").exit_code == EXIT_OK
    assert (out / "benchmark-digests.json").is_file()
    verified = invoke("build", "--verify", "--root", root, "--weights", out)
    assert verified.exit_code == EXIT_OK and "identical to osma's reference" in verified.output


def test_benchmark_builds_the_builtin_benchmark_on_first_use(tiny_default, tiny_weights, tmp_path, monkeypatch):
    from osma_cli.cli.app import app

    _, weights = tiny_default
    shipped = tmp_path / "shipped"
    shutil.copytree(weights, shipped / "zoo")
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(shipped))
    args = ["benchmark", "split1", "--model", str(tiny_weights), "--json", "--workers", "0"]
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == EXIT_OK, first.output
    assert "first use" in first.stderr
    report = json.loads(first.stdout)["metrics"]
    assert report["n_unknown"] > 0 and 0 <= report["closed_set_accuracy"] <= 1
    again = runner.invoke(app, args, catch_exceptions=False)
    assert again.exit_code == EXIT_OK and "first use" not in again.stderr
    assert json.loads(again.stdout)["metrics"]["auc"] == report["auc"]


def test_descriptor_model_on_the_tiny_zoo_with_every_rule(tiny_default, tmp_path, monkeypatch):
    """The fsd extractor end to end on the built-in benchmark: each rule gives a full report."""
    from osma_cli.cli.app import app
    from osma_cli.nets import get_model
    from osma_cli.weights import WeightsMeta, save_weights

    _, weights = tiny_default
    shipped = tmp_path / "shipped"
    shutil.copytree(weights, shipped / "zoo")
    monkeypatch.setenv("OSMA_WEIGHTS_DIR", str(shipped))
    settings = {"block": 3, "scales": 2, "window": 16}
    model = get_model("fsd", **settings)
    path = tmp_path / "fsd.safetensors"
    save_weights(
        path,
        model,
        WeightsMeta(
            architecture="fsd",
            embedding_dim=model.raw_dim,
            crop_size=16,
            l2_normalize=False,
            kind="descriptor",
            arch_kwargs=settings,
        ),
    )
    scores = {}
    for rule in ("fang", "mahalanobis", "gmm:components=1,covariance=diag"):
        result = runner.invoke(
            app,
            ["benchmark", "split1", "--model", str(path), "--rule", rule, "--json", "--workers", "0"],
            catch_exceptions=False,
        )
        assert result.exit_code == EXIT_OK, result.output
        run = json.loads(result.stdout)
        metrics = run["metrics"]
        assert metrics["n_unknown"] > 0 and 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["oscr"] <= 1.0
        scores[run["score"]] = metrics["auc"]
    assert set(scores) == {"norm. distance", "Mahalanobis", "neg. log-lik."}
