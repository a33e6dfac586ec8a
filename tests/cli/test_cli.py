"""The commands through Typer's test runner: output shapes, exit codes, messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.errors import EXIT_ERROR, EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE
from osma_cli.references import ReferenceStore
from tests.conftest import write_images

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def built_store(tmp_path: Path, tiny_weights: Path, image_tree: Path) -> Path:
    refs = tmp_path / "refs.h5"
    result = invoke("build", image_tree, "--out", refs, "--model", tiny_weights, "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    return refs


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def all_commands(group, prefix: str = ""):
    """Every command and sub-command (Typer vendors click, so duck-type the groups)."""
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if getattr(cmd, "commands", None):
            yield from all_commands(cmd, f"{prefix}{name} ")


def test_every_command_has_help():
    import typer.main

    root = typer.main.get_command(app)
    names = []
    for name, cmd in all_commands(root):
        assert cmd.help and cmd.help.strip(), f"`osma {name}` has no help text"
        result = invoke(*name.split(), "--help")
        assert result.exit_code == 0
        names.append(name)
    assert {"attribute", "build", "enroll", "info", "refs list", "refs show", "refs remove"} <= set(names)


def test_build_writes_store_with_threshold(built_store: Path):
    store = ReferenceStore.load(built_store)
    assert store.names == ["checkergan", "smoothgan"]
    assert [g.count for g in store.generators.values()] == [5, 5]
    assert store.threshold is not None and store.threshold.value > 0
    assert "leave-one-out" in store.threshold.method


def test_build_refuses_to_overwrite(built_store: Path, tiny_weights: Path, image_tree: Path):
    result = invoke("build", image_tree, "--out", built_store, "--model", tiny_weights)
    assert result.exit_code == EXIT_USAGE
    assert "--force" in result.output


def test_attribute_json_shape_and_exit_code(built_store: Path, tiny_weights: Path, image_tree: Path):
    result = invoke(
        "attribute", image_tree, "--json", "--top", 2, "--model", tiny_weights, "--refs", built_store, "--workers", 0
    )
    assert result.exit_code == EXIT_OK, result.output
    records = json_lines(result.stdout)
    assert len(records) == 10
    for r in records:
        assert set(r) == {
            "schema",
            "command",
            "path",
            "path_bytes_b64",
            "status",
            "verdict",
            "candidate",
            "score",
            "threshold",
            "margin",
            "error",
            "warnings",
            "regime",
            "top",
            "file_id",
            "model",
            "references",
            "settings",
        }
        st = Path(r["path"]).stat()
        assert r["file_id"] == f"stat:{st.st_size}:{st.st_mtime_ns}"
        assert len(r["model"]) == len(r["references"]) == len(r["settings"]) == 16
        assert r["schema"] == 1 and r["command"] == "attribute" and r["path_bytes_b64"] is None and r["warnings"] == []
        assert r["status"] == "ok" and r["error"] is None
        assert r["candidate"] in ("checkergan", "smoothgan")
        assert r["verdict"] in (r["candidate"], "unknown")
        assert (r["verdict"] != "unknown") == (r["score"] < r["threshold"])
        assert r["margin"] == pytest.approx(r["threshold"] - r["score"])
        assert len(r["top"]) == 2 and r["top"][0]["name"] == r["candidate"]
        assert r["top"][0]["distance"] <= r["top"][1]["distance"]


def test_bad_files_are_reported_and_the_batch_goes_on(tmp_path, built_store, tiny_weights, image_tree):
    folder = tmp_path / "mixed"
    good = write_images(folder, "smooth", 2, seed=9)
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.jpg").write_bytes(b"this is not an image")
    result = invoke("attribute", folder, "--json", "--model", tiny_weights, "--refs", built_store, "--workers", 0)
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED
    records = {Path(r["path"]).name: r for r in json_lines(result.stdout)}
    assert set(records) == {"empty.png", "junk.jpg"} | {p.name for p in good}
    assert records["empty.png"]["status"] == "error" and "empty" in records["empty.png"]["error"]
    assert records["junk.jpg"]["status"] == "error"
    assert all(records[p.name]["status"] == "ok" for p in good)
    assert "2 of 4 files could not be read" in result.stderr


def test_attribute_csv_and_table(tmp_path, built_store, tiny_weights, image_tree):
    out = tmp_path / "out.csv"
    result = invoke(
        "attribute",
        image_tree / "smoothgan",
        "--csv",
        out,
        "--top",
        2,
        "--model",
        tiny_weights,
        "--refs",
        built_store,
        "--workers",
        0,
    )
    assert result.exit_code == EXIT_OK, result.output
    assert "smooth_00.png" in result.stdout and "threshold tau" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5
    assert {"path", "verdict", "score", "top2", "top2_normalized_distance"} <= set(rows[0])


def test_threshold_override(built_store, tiny_weights, image_tree):
    result = invoke(
        "attribute",
        image_tree,
        "--json",
        "--threshold",
        "1e-9",
        "--model",
        tiny_weights,
        "--refs",
        built_store,
        "--workers",
        0,
    )
    assert all(r["verdict"] == "unknown" for r in json_lines(result.stdout))
    result = invoke(
        "attribute",
        image_tree,
        "--json",
        "--threshold",
        "1e9",
        "--model",
        tiny_weights,
        "--refs",
        built_store,
        "--workers",
        0,
    )
    assert all(r["verdict"] == r["candidate"] for r in json_lines(result.stdout))


def test_usage_errors_exit_2(built_store, tiny_weights, image_tree):
    assert invoke("attribute", image_tree, "--top", 0).exit_code == EXIT_USAGE
    assert (
        invoke("attribute", image_tree, "--model", tiny_weights, "--refs", built_store, "--device", "tpu").exit_code
        == EXIT_USAGE
    )
    assert invoke("no-such-command").exit_code == EXIT_USAGE


def test_missing_defaults_say_what_to_do(image_tree):
    result = invoke("attribute", image_tree)
    assert result.exit_code == EXIT_ERROR
    assert "no default model" in result.stderr and "--model" in result.stderr


def test_store_from_other_weights_is_refused(built_store, other_weights, image_tree):
    result = invoke("attribute", image_tree, "--model", other_weights, "--refs", built_store)
    assert result.exit_code == EXIT_ERROR
    assert "other weights" in result.stderr


def test_enroll_update_and_refusals(tmp_path, built_store, tiny_weights):
    new = tmp_path / "newgan"
    write_images(new, "stripes", 4, seed=5)
    base = ["--model", tiny_weights, "--refs", built_store, "--workers", 0]
    assert invoke("enroll", new, "--name", "stripegan", *base).exit_code == EXIT_OK
    assert ReferenceStore.load(built_store).get("stripegan").count == 4
    again = invoke("enroll", new, "--name", "stripegan", *base)
    assert again.exit_code == EXIT_ERROR and "--update" in again.stderr
    same = invoke("enroll", new, "--name", "stripegan", "--update", *base)  # the same files again
    assert same.exit_code == EXIT_OK
    assert "skipped 4 images already enrolled in stripegan" in same.stderr
    assert ReferenceStore.load(built_store).get("stripegan").count == 4
    more = tmp_path / "more"
    write_images(more, "stripes", 4, seed=7)
    assert invoke("enroll", new, more, "--name", "stripegan", "--update", *base).exit_code == EXIT_OK
    assert ReferenceStore.load(built_store).get("stripegan").count == 8

    single = tmp_path / "single"
    write_images(single, "stripes", 1, seed=6)
    few = invoke("enroll", single, "--name", "lonely", *base)
    assert few.exit_code == EXIT_ERROR and "at least 2" in few.stderr
    assert "lonely" not in ReferenceStore.load(built_store)


def test_enroll_into_user_home_creates_store(tmp_path, tiny_weights, isolated_home):
    new = tmp_path / "newgan"
    write_images(new, "stripes", 3, seed=5)
    result = invoke("enroll", new, "--name", "stripegan", "--model", tiny_weights, "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    assert ReferenceStore.load(isolated_home / "references-fsd.h5").names == ["stripegan"]


def test_refs_list_show_remove(built_store):
    listed = json.loads(invoke("refs", "list", "--refs", built_store, "--json").stdout)
    assert [g["name"] for g in listed["generators"]] == ["checkergan", "smoothgan"]
    assert listed["threshold"]["value"] > 0
    shown = json.loads(invoke("refs", "show", "smoothgan", "--refs", built_store, "--json").stdout)
    assert shown["count"] == 5
    assert invoke("refs", "remove", "smoothgan", "--refs", built_store, "--yes").exit_code == EXIT_OK
    assert ReferenceStore.load(built_store).names == ["checkergan"]
    missing = invoke("refs", "show", "smoothgan", "--refs", built_store)
    assert missing.exit_code == EXIT_ERROR and "no generator named" in missing.stderr


def test_info_reports_model_and_store(built_store, tiny_weights):
    data = json.loads(invoke("info", "--model", tiny_weights, "--refs", built_store, "--json").stdout)
    assert data["model"]["architecture"] == "mislnet"
    assert data["references"]["generators"][0]["name"] == "checkergan"
    assert data["device"] == "cpu"
    bare = json.loads(invoke("info", "--json").stdout)
    assert "no default model" in bare["model"]["error"]


def test_enrolled_generator_is_then_recognised(tmp_path, built_store, tiny_weights):
    """The headline capability, small: images of a newly enrolled generator are attributed to it."""
    write_images(tmp_path / "stripes_train", "stripes", 6, seed=11)
    write_images(tmp_path / "stripes_test", "stripes", 4, seed=12)
    base = ["--model", tiny_weights, "--refs", built_store, "--workers", 0]
    assert invoke("enroll", tmp_path / "stripes_train", "--name", "stripegan", *base).exit_code == 0
    result = invoke("attribute", tmp_path / "stripes_test", "--json", "--threshold", "1e9", *base)
    assert [r["candidate"] for r in json_lines(result.stdout)] == ["stripegan"] * 4


def test_enrolment_end_to_end_recognises_the_new_generator_and_still_rejects_others(
    tmp_path, built_store, tiny_weights
):
    """The paper's headline, small: an unknown generator is rejected, then enrolled from its
    own images (no retraining) and recognised, while another unknown stays rejected."""
    base = ["--model", tiny_weights, "--refs", built_store, "--workers", 0]
    val = tmp_path / "val"
    write_images(val / "smoothgan", "smooth", 10, seed=21)
    write_images(val / "checkergan", "checker", 10, seed=22)
    assert invoke("calibrate", val, "--acceptance", 0.95, *base).exit_code == EXIT_OK
    write_images(tmp_path / "new_train", "stripes", 8, seed=31)
    write_images(tmp_path / "unknown" / "stripes", "stripes", 6, seed=32)
    write_images(tmp_path / "unknown" / "dots", "dots", 6, seed=33)

    def verdicts(folder):
        return [r["verdict"] for r in json_lines(invoke("attribute", folder, "--json", *base).stdout)]

    assert verdicts(tmp_path / "unknown" / "stripes") == ["unknown"] * 6
    dots_before = verdicts(tmp_path / "unknown" / "dots")
    assert dots_before == ["unknown"] * 6
    assert invoke("enroll", tmp_path / "new_train", "--name", "stripegan", *base).exit_code == EXIT_OK
    assert verdicts(tmp_path / "unknown" / "stripes") == ["stripegan"] * 6
    assert verdicts(tmp_path / "unknown" / "dots") == dots_before


def test_calibrate_sets_tau_for_target_acceptance(tmp_path, built_store, tiny_weights):
    val = tmp_path / "val"
    write_images(val / "smoothgan", "smooth", 10, seed=21)
    write_images(val / "checkergan", "checker", 10, seed=22)
    base = ["--model", tiny_weights, "--refs", built_store, "--workers", 0]
    result = invoke("calibrate", val, "--acceptance", 0.9, *base)
    assert result.exit_code == EXIT_OK, result.output
    store = ReferenceStore.load(built_store)
    assert store.threshold.target == 0.9 and "acceptance" in store.threshold.method
    verdicts = json_lines(invoke("attribute", val, "--json", *base).stdout)
    accepted = sum(r["verdict"] != "unknown" for r in verdicts)
    assert accepted == 18  # exactly 90% of the 20 validation images


def test_calibrate_target_crr_uses_unknown_folders(tmp_path, built_store, tiny_weights):
    val = tmp_path / "val"
    write_images(val / "smoothgan", "smooth", 4, seed=21)
    write_images(val / "stripegan", "stripes", 8, seed=23)  # not in the store: unknown
    base = ["--model", tiny_weights, "--refs", built_store, "--workers", 0]
    result = invoke("calibrate", val, "--target-crr", 0.75, *base)
    assert result.exit_code == EXIT_OK, result.output
    assert "stripegan" in result.stderr and "CRR" in result.stderr
    verdicts = json_lines(invoke("attribute", val / "stripegan", "--json", *base).stdout)
    assert sum(r["verdict"] == "unknown" for r in verdicts) >= 6


def test_benchmark_of_an_unknown_builtin_split_says_which_exist():
    result = invoke("benchmark", "split9")
    assert result.exit_code == EXIT_USAGE
    text = " ".join(result.stderr.split())
    assert "split9" in text and "split1, split2" in text and "--data-root" in text


def test_builtin_benchmark_without_zoo_weights_says_what_to_do():
    result = invoke("benchmark", "split1")  # OSMA_WEIGHTS_DIR is empty in tests
    assert result.exit_code == EXIT_ERROR
    assert "osma zoo train" in " ".join(result.stderr.split())


def test_top_table_says_how_the_list_is_ranked(built_store, tiny_weights, image_tree):
    result = invoke("attribute", image_tree, "--top", 2, "--model", tiny_weights, "--refs", built_store, "--workers", 0)
    assert result.exit_code == EXIT_OK, result.output
    text = " ".join(result.stdout.split())
    assert "ranked by distance to each centroid; verdict on the norm. distance" in text
    single = invoke("attribute", image_tree, "--model", tiny_weights, "--refs", built_store, "--workers", 0)
    assert "ranked by" not in single.stdout


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_threshold_is_refused_before_the_model_loads(tmp_path, image_tree, value):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not weights")  # loading it would fail with another message
    result = invoke("attribute", image_tree, "--threshold", value, "--model", broken)
    assert result.exit_code == EXIT_USAGE and "finite" in result.output
    assert "safetensors" not in result.output


@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_threshold_is_refused_for_a_distance_rule(built_store, tiny_weights, image_tree, value):
    result = invoke(
        "attribute", image_tree, "--threshold", value, "--model", tiny_weights, "--refs", built_store, "--workers", 0
    )
    assert result.exit_code == EXIT_USAGE and "positive" in result.stderr


def test_a_store_given_as_the_model_says_to_pass_it_to_refs(built_store, image_tree):
    result = invoke("attribute", image_tree, "--model", built_store)
    assert result.exit_code == EXIT_ERROR
    text = " ".join(result.stderr.split())
    assert "reference store" in text and "--refs" in text and "download" not in text


def test_info_table_marks_build_machine_paths_and_hides_empty_class_names(tmp_path, built_store):
    from osma_cli.nets import get_model
    from osma_cli.weights import WeightsMeta, save_weights

    model = get_model("mislnet")
    save_weights(
        tmp_path / "w.safetensors",
        model,
        WeightsMeta(
            architecture="mislnet",
            embedding_dim=model.embedding_dim,
            crop_size=32,
            l2_normalize=False,
            arch_kwargs={},
            recipe={"data": {"root": "/tmp/scratch/train", "n_train": 3}, "osma_tree_dirty": True},
        ),
    )
    result = invoke("info", "--model", tmp_path / "w.safetensors", "--refs", built_store)
    assert result.exit_code == EXIT_OK, result.output
    lines = result.stdout.splitlines()
    assert "/tmp/scratch/train (build machine)" in result.stdout
    assert "class_names" not in result.stdout
    assert not any(set(line) <= set("┃ ") and "┃" in line for line in lines)  # no blank header row
    data = json.loads(invoke("info", "--model", tmp_path / "w.safetensors", "--json").stdout)
    assert data["model"]["recipe"]["data"]["root"] == "/tmp/scratch/train"  # JSON: as recorded


@pytest.mark.parametrize("name", ["a/b", "a\\b", "tab\there", "new\nline", " "])
def test_enroll_refuses_names_that_are_no_folder_name(tmp_path, built_store, tiny_weights, name):
    write_images(tmp_path / "new", "stripes", 3, seed=4)
    result = invoke("enroll", tmp_path / "new", "--name", name, "--refs", built_store, "--model", tiny_weights)
    assert result.exit_code == EXIT_USAGE and "--name" in result.stderr
    assert ReferenceStore.load(built_store).names == ["checkergan", "smoothgan"]


def test_build_refuses_an_output_that_is_not_h5(tmp_path, tiny_weights, image_tree):
    result = invoke("build", image_tree, "--out", tmp_path / "refs.txt", "--model", tiny_weights)
    assert result.exit_code == EXIT_USAGE and ".h5" in result.stderr
    assert not (tmp_path / "refs.txt").exists()


def test_a_path_given_twice_is_processed_once(tmp_path, built_store, tiny_weights, image_tree):
    base = ["--model", tiny_weights, "--refs", built_store, "--workers", 0, "--json"]
    one = image_tree / "smoothgan" / "smooth_00.png"
    twice = invoke("attribute", one, image_tree / "smoothgan" / ".." / "smoothgan" / "smooth_00.png", *base)
    assert twice.exit_code == EXIT_OK and len(json_lines(twice.stdout)) == 1
    assert "given more than once" in twice.stderr
    overlap = invoke("attribute", image_tree / "smoothgan", one, *base)
    assert len(json_lines(overlap.stdout)) == 5 and "found more than once" in overlap.stderr
    write_images(tmp_path / "new", "stripes", 3, seed=4)
    enrolled = invoke("enroll", tmp_path / "new", tmp_path / "new", "--name", "stripegan", *base)
    assert enrolled.exit_code == EXIT_OK, enrolled.output
    assert json.loads(enrolled.stdout)["added"] == 3 and "given more than once" in enrolled.stderr
