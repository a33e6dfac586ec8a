"""Building the benchmark end to end on a tiny zoo: POSE files, determinism, resume, verify."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from osma_cli.evaluation.sources import UNKNOWN_KINDS, load_pose_split
from osma_cli.zoo.materialise import (
    JOURNAL,
    MANIFEST,
    BenchmarkError,
    build_benchmark,
    compare_with_reference,
    plan_build,
    read_manifest,
    read_reference,
    verify_benchmark,
    write_reference,
)
from osma_cli.zoo.recipe import REAL
from osma_cli.zoo.splits import all_roles
from osma_cli.zoo.store import list_records, load_generator, weights_path


@pytest.fixture(scope="module")
def built(tiny_zoo, tmp_path_factory):
    recipe, weights = tiny_zoo
    plan = plan_build(recipe, weights_dir=weights)
    root = tmp_path_factory.mktemp("bench")
    report = build_benchmark(root, plan=plan, workers=0)
    return plan, root, report


def test_trained_weights_record_their_training(tiny_zoo):
    recipe, weights = tiny_zoo
    records = list_records(weights)
    assert set(records) == {s.name for s in recipe.generators}
    for record in records.values():
        assert record.training["steps"] == recipe.training.steps
        assert "psnr_heldout" in record.metrics and record.params > 0
        assert ("adv_weight" in record.training) == (record.family == "dcgan")
    model, record = load_generator(weights_path(weights, "tconv-cameras-s0"))
    assert next(model.parameters()).dtype.is_floating_point


def test_every_split_is_read_by_the_pose_loader(built):
    plan, root, report = built
    assert report.n_written == report.n_images == len(plan.images)
    for roles in all_roles(plan.recipe):
        split = load_pose_split(root, roles.name)
        assert split.class_names == (REAL, *roles.known)
        assert {i.generator for i in split.test_unknown} == set(roles.unknown)
        for image in split.test_unknown:
            assert image.kind == roles.unknown[image.generator]
        assert {i.kind for i in split.test_unknown} == set(UNKNOWN_KINDS)

        # parts are disjoint by source photo
        def photo(i):
            return i.path.name.rsplit("-y", 1)[0]

        assert not {photo(i) for i in split.train} & {photo(i) for i in split.test}
        assert split.val and split.train and split.test_known


def test_images_are_the_generators_re_synthesis(built):
    plan, root, _ = built
    image = next(i for i in plan.images if i.generator == "nearest-kair-s0")
    real = next(i for i in plan.images if i.generator == REAL and i.tile == image.tile)
    made, original = (np.asarray(Image.open(root / i.relpath)) for i in (image, real))
    assert made.shape == original.shape == (16, 16, 3)
    assert not np.array_equal(made, original)


def test_a_second_build_is_identical(built, tmp_path):
    plan, root, _ = built
    again = build_benchmark(tmp_path / "again", plan=plan, workers=0)
    assert again.fingerprint == plan.fingerprint
    first, second = read_manifest(root), read_manifest(tmp_path / "again")
    assert first.images == second.images and first.annotations == second.annotations


def test_build_resumes_and_repairs(built, tmp_path):
    plan, root, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    victims = [plan.images[3].relpath, plan.images[-1].relpath]
    (copy / victims[0]).unlink()
    (copy / victims[1]).write_bytes(b"not a png")
    report = build_benchmark(copy, plan=plan, workers=0)
    assert report.n_written == 2 and report.n_kept == len(plan.images) - 2
    assert read_manifest(copy).images == read_manifest(root).images
    assert not (copy / JOURNAL).exists()


def test_an_interrupted_build_resumes_from_its_journal(built, tmp_path):
    plan, root, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    manifest = read_manifest(copy)
    (copy / MANIFEST).unlink()
    done = list(manifest.images.items())[:10]
    (copy / JOURNAL).write_text(f"# {plan.fingerprint}\n" + "".join(f"{k}\t{v}\n" for k, v in done))
    report = build_benchmark(copy, plan=plan, workers=0)
    assert report.n_kept == 10 and report.n_written == len(plan.images) - 10


def test_verify_catches_a_damaged_and_a_missing_file(built, tmp_path):
    plan, root, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert verify_benchmark(copy, plan=plan).ok
    damaged = copy / plan.images[5].relpath
    pixels = np.asarray(Image.open(damaged)).copy()
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(damaged)
    missing = plan.images[7].relpath
    (copy / missing).unlink()
    annotation = next(copy.glob("dataset/split1_train/annotations/*.txt"))
    annotation.write_text(annotation.read_text() + "./x.png\t0\n")
    report = verify_benchmark(copy, plan=plan)
    assert not report.ok
    assert report.corrupt[0] == plan.images[5].relpath and missing in report.missing
    assert annotation.relative_to(copy).as_posix() in report.corrupt


def test_reference_digests_match_or_report_differences(built, tmp_path):
    _, root, _ = built
    manifest = read_manifest(root)
    write_reference(tmp_path / "ref.json", manifest)
    (tmp_path / "w").mkdir()
    shutil.copy(tmp_path / "ref.json", tmp_path / "w" / "benchmark-digests.json")
    reference = read_reference(tmp_path / "w")
    assert compare_with_reference(manifest, reference) == {"status": "match"}
    first = next(iter(manifest.images))
    reference["images"][first] = "0" * 64
    verdict = compare_with_reference(manifest, reference)
    assert verdict["status"] == "mismatch" and verdict["first"] == [first]
    reference["fingerprint"] = "other"
    assert compare_with_reference(manifest, reference)["status"] == "other-build"
    assert compare_with_reference(manifest, None)["status"] == "absent"


def test_a_build_with_other_weights_replaces_the_old_one(built, tiny_zoo, tmp_path):
    plan, root, _ = built
    recipe, weights = tiny_zoo
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    other_weights = tmp_path / "w"
    shutil.copytree(weights, other_weights)
    from osma_cli.zoo.train import train_zoo

    train_zoo(recipe, other_weights, only=["tconv-cameras-s0"], steps=1, force=True)
    other = plan_build(recipe, weights_dir=other_weights)
    assert other.fingerprint != plan.fingerprint
    logged = []
    report = build_benchmark(copy, plan=other, workers=0, log=logged.append)
    assert report.n_written == len(other.images) and any("removed the previous build" in m for m in logged)
    assert json.loads((copy / MANIFEST).read_text())["fingerprint"] == other.fingerprint


def test_missing_weights_are_a_clear_error(tiny_zoo, tmp_path):
    recipe, _ = tiny_zoo
    with pytest.raises(BenchmarkError, match="have no weights"):
        plan_build(recipe, weights_dir=tmp_path)


def test_ensure_builds_once(tiny_zoo, tmp_path, monkeypatch):
    from osma_cli.zoo import materialise

    recipe, weights = tiny_zoo
    monkeypatch.setattr(materialise, "plan_build", lambda *a, **k: plan_build(recipe, weights_dir=weights))
    monkeypatch.setattr(materialise, "default_workers", lambda: 0)
    logged = []
    root = materialise.ensure_builtin_benchmark(log=logged.append)
    assert root == tmp_path / "osma_home" / "benchmarks" / "zoo"
    assert len(logged) == 1 and "first use" in logged[0]
    assert load_pose_split(root, "split2").n_classes > 1
    assert materialise.ensure_builtin_benchmark(log=logged.append) == root
    assert len(logged) == 1


def test_a_foreign_dataset_folder_is_never_deleted(built, tmp_path):
    plan, _, _ = built
    (tmp_path / "dataset" / "OSMA").mkdir(parents=True)
    with pytest.raises(BenchmarkError, match="did not make"):
        build_benchmark(tmp_path, plan=plan, workers=0)
    assert (tmp_path / "dataset" / "OSMA").is_dir()
