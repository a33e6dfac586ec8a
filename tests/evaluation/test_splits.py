"""Benchmark splits: the POSE layout (read as released) and user manifests, and their errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from osma_cli.errors import DataError, UsageError
from osma_cli.evaluation.sources import (
    UNKNOWN_KINDS,
    BenchmarkSplit,
    LabeledImage,
    PoseAnnotations,
    load_manifest,
    load_pose_split,
    pose_annotation_files,
    write_pose_annotations,
)
from tests.conftest import write_images
from tests.pose_fixture import CLASS_NAMES, SPLIT, UNKNOWN_GENERATORS, make_pose_fixture

N = 3


@pytest.fixture
def pose_root(tmp_path: Path) -> Path:
    return make_pose_fixture(tmp_path / "pose", n_per_class=N, size=16)


def annotation(root: Path, key: str) -> Path:
    return pose_annotation_files(root / "dataset", SPLIT)[key]


def insert_line(file: Path, number: int, line: str) -> None:
    lines = file.read_text().splitlines(keepends=True)
    lines.insert(number - 1, line)
    file.write_text("".join(lines))


# --------------------------------------------------------------------------- POSE layout


@pytest.mark.parametrize("where", ["holder", "dataset"])
def test_pose_round_trip(pose_root: Path, where: str) -> None:
    data_root = pose_root if where == "holder" else pose_root / "dataset"
    split = load_pose_split(data_root, SPLIT)
    assert split.name == SPLIT
    assert split.class_names == CLASS_NAMES
    for part in ("train", "val", "test_known"):
        images = getattr(split, part)
        assert sorted(i.label for i in images) == sorted(list(range(3)) * N)
        assert all(i.kind == "" and i.generator == CLASS_NAMES[i.label] for i in images)
    assert len(split.test_unknown) == 3 * N
    assert {i.label for i in split.test_unknown} == {-1}
    assert sorted(i.kind for i in split.test_unknown) == sorted(list(UNKNOWN_KINDS) * N)
    assert all(i.generator == UNKNOWN_GENERATORS[i.kind] for i in split.test_unknown)
    everything = split.train + split.val + split.test
    assert len({i.path for i in everything}) == len(everything)
    for image in everything:
        assert image.path.is_absolute() and image.path == image.path.resolve()
        assert image.path.is_file()
        assert image.path.is_relative_to(pose_root.resolve() / "dataset" / "OSMA")
    assert any(" " in i.path.name for i in split.train)  # POSE's real file names have spaces
    assert split.source == f"POSE layout at {pose_root.resolve()} ({SPLIT})"


def test_pose_both_roots_and_split_spellings_agree(pose_root: Path) -> None:
    reference = load_pose_split(pose_root, "split1")
    assert load_pose_split(pose_root / "dataset", 1) == reference
    assert load_pose_split(str(pose_root), "1") == reference


def test_pose_summary(pose_root: Path) -> None:
    summary = load_pose_split(pose_root, SPLIT).summary()
    assert summary["classes"] == list(CLASS_NAMES)
    assert summary["counts"] == {"train": 3 * N, "val": 3 * N, "test_known": 3 * N, "test_unknown": 3 * N}
    assert summary["per_class"] == {name: {"train": N, "val": N, "test": N} for name in CLASS_NAMES}
    assert summary["unknown_kinds"] == {"seed": N, "arch": N, "dataset": N}
    assert summary["unknown_generators"] == {
        name: {"kind": kind, "count": N} for kind, name in UNKNOWN_GENERATORS.items()
    }
    assert json.loads(json.dumps(summary)) == summary


def test_pose_written_labels_follow_pose(pose_root: Path) -> None:
    """``_test_out`` numbers unknown generators across kinds, each kind file from 0."""
    out = annotation(pose_root, "test_out").read_text().splitlines()
    assert [line.split("\t")[1] for line in out] == ["0"] * N + ["1"] * N + ["2"] * N
    assert all(line.startswith("./dataset/OSMA/") for line in out)
    arch = annotation(pose_root, "arch").read_text().splitlines()
    assert [line.split("\t")[1] for line in arch] == ["0"] * N


def test_pose_tolerates_blank_lines_spaces_crlf_and_bom(pose_root: Path) -> None:
    reference = load_pose_split(pose_root, SPLIT)
    train = annotation(pose_root, "train")
    lines = train.read_text().splitlines()
    lines[0] = lines[0].replace("\t", "   ") + "  "  # space separator, trailing blanks
    train.write_bytes(("\ufeff" + "\r\n".join(lines[:2] + ["", "   "] + lines[2:]) + "\r\n\n").encode())
    assert load_pose_split(pose_root, SPLIT) == reference


@pytest.mark.parametrize(
    "line,reason",
    [
        ("./dataset/OSMA/real/no_label.png", "no label"),
        ("./dataset/OSMA/real/x.png\tseven", "not an integer"),
        ("./dataset/OSMA/real/x.png\t1.0", "not an integer"),
        ("./dataset/OSMA/real/x.png\t-1", "negative label"),
        ("\t3", "empty image path"),
    ],
)
def test_pose_malformed_line_names_file_and_line(pose_root: Path, line: str, reason: str) -> None:
    train = annotation(pose_root, "train")
    insert_line(train, 3, line + "\n")
    with pytest.raises(DataError) as info:
        load_pose_split(pose_root, SPLIT)
    message = str(info.value)
    assert str(train) in message and "line 3" in message and reason in message
    assert line.strip().split("\t")[0] in message


def test_pose_unknown_files_may_use_negative_labels(pose_root: Path) -> None:
    out = annotation(pose_root, "test_out")
    out.write_text(out.read_text().replace("\t0\n", "\t-1\n"))
    assert len(load_pose_split(pose_root, SPLIT).test_unknown) == 3 * N


def test_pose_missing_annotation_lists_what_is_there(pose_root: Path) -> None:
    annotation(pose_root, "train").unlink()
    with pytest.raises(DataError) as info:
        load_pose_split(pose_root, SPLIT)
    message = str(info.value)
    assert "split1_train/annotations/split1_train.txt" in message
    assert str(pose_root / "dataset" / "split1_train") in message  # what was looked for
    assert "split1_test_out_seed.txt" in message  # what is there


def test_pose_wrong_split_name_lists_what_is_there(pose_root: Path) -> None:
    with pytest.raises(DataError, match="split1_val.txt") as info:
        load_pose_split(pose_root, "split7")
    assert "split7_train.txt" in str(info.value)


def test_pose_missing_test_file(pose_root: Path) -> None:
    annotation(pose_root, "test").unlink()
    with pytest.raises(DataError, match="closed-set test"):
        load_pose_split(pose_root, SPLIT)


def test_pose_missing_unknown_files(pose_root: Path) -> None:
    for key in ("test_out", *UNKNOWN_KINDS):
        annotation(pose_root, key).unlink()
    with pytest.raises(DataError, match="split1_test_out.txt"):
        load_pose_split(pose_root, SPLIT)


def test_pose_without_unknown_images(pose_root: Path) -> None:
    for key in ("test_out", *UNKNOWN_KINDS):
        annotation(pose_root, key).write_text("\n")
    with pytest.raises(DataError, match="no unknown images"):
        load_pose_split(pose_root, SPLIT)


def test_pose_missing_image_names_file_path_and_tries(pose_root: Path) -> None:
    test_file = annotation(pose_root, "test")
    first = test_file.read_text().splitlines()[1].split("\t")[0]
    (pose_root / first).unlink()
    with pytest.raises(DataError) as info:
        load_pose_split(pose_root, SPLIT)
    message = str(info.value)
    assert "1 of" in message and first in message and str(test_file) in message
    assert "line 2" in message and "chosen among" in message


def test_pose_no_images_at_all_says_what_was_tried(pose_root: Path) -> None:
    shutil.rmtree(pose_root / "dataset" / "OSMA")
    with pytest.raises(DataError) as info:
        load_pose_split(pose_root, SPLIT)
    message = str(info.value)
    assert str(annotation(pose_root, "train")) in message
    assert str(pose_root.resolve() / "dataset" / "OSMA") in message


def test_pose_images_elsewhere(pose_root: Path, tmp_path: Path) -> None:
    reference = load_pose_split(pose_root, SPLIT)
    images = tmp_path / "big_disk"
    (images / "dataset").mkdir(parents=True)
    shutil.move(pose_root / "dataset" / "OSMA", images / "dataset" / "OSMA")
    moved = load_pose_split(pose_root, SPLIT, image_root=images)
    assert moved.class_names == reference.class_names
    assert [i.path.relative_to(images.resolve()) for i in moved.train] == [
        i.path.relative_to(pose_root.resolve()) for i in reference.train
    ]


def test_pose_unknown_kinds_from_kind_files(pose_root: Path) -> None:
    """An unknown in ``_test_out`` only has kind ""; one in a kind file only is still read."""
    seed = annotation(pose_root, "seed")
    seed_lines = seed.read_text().splitlines(keepends=True)
    seed.write_text("".join(seed_lines[1:]))
    out = annotation(pose_root, "test_out")
    out_lines = out.read_text().splitlines(keepends=True)
    arch_line = next(line for line in out_lines if "MMDGAN" in line)
    out.write_text("".join(line for line in out_lines if line != arch_line))
    split = load_pose_split(pose_root, SPLIT)
    kinds = {i.path.name + i.path.parent.name: i.kind for i in split.test_unknown}
    assert sorted(kinds.values()) == sorted([""] + ["seed"] * (N - 1) + ["arch"] * N + ["dataset"] * N)
    assert split.test_unknown[-1].kind == "arch"  # listed in the arch file only


def test_pose_unknown_in_two_kind_files(pose_root: Path) -> None:
    first_seed = annotation(pose_root, "seed").read_text().splitlines()[0]
    insert_line(annotation(pose_root, "arch"), 1, first_seed + "\n")
    with pytest.raises(DataError, match="two unknown kinds"):
        load_pose_split(pose_root, SPLIT)


def test_pose_label_gap_and_untrained_label(pose_root: Path) -> None:
    train = annotation(pose_root, "train")
    original = train.read_text()
    train.write_text(original.replace("\t1\n", "\t3\n"))
    with pytest.raises(DataError, match="no training image has label 1"):
        load_pose_split(pose_root, SPLIT)
    train.write_text(original)
    test_file = annotation(pose_root, "test")
    test_file.write_text(test_file.read_text().replace("\t2\n", "\t5\n", 1))
    with pytest.raises(DataError, match=r"line \d+: label 5 has no training images"):
        load_pose_split(pose_root, SPLIT)


def test_pose_image_in_train_and_test(pose_root: Path) -> None:
    first_train = annotation(pose_root, "train").read_text().splitlines()[0]
    insert_line(annotation(pose_root, "test"), 1, first_train + "\n")
    with pytest.raises(DataError, match="listed twice"):
        load_pose_split(pose_root, SPLIT)


def test_pose_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        load_pose_split(tmp_path / "nowhere", SPLIT)


def test_write_pose_annotations_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown kinds"):
        write_pose_annotations(
            tmp_path, 1, PoseAnnotations(train=[("a.png", 0)], test=[("b.png", 0)], unknown={"seeds": [("c.png", 0)]})
        )
    with pytest.raises(UsageError, match="tab"):
        write_pose_annotations(tmp_path, 1, PoseAnnotations(train=[("a\tb.png", 0)], test=[]))
    with pytest.raises(UsageError, match="integer >= 0"):
        write_pose_annotations(tmp_path, 1, PoseAnnotations(train=[("a.png", -1)], test=[]))


def test_split_refuses_inconsistent_images(tmp_path: Path) -> None:
    image = LabeledImage(tmp_path / "a.png", 2)
    with pytest.raises(UsageError, match="known images need a label"):
        BenchmarkSplit("s", ("a", "b"), (image,), (), (), (), "test")
    with pytest.raises(UsageError, match="unknown images need label -1"):
        BenchmarkSplit("s", ("a",), (), (), (), (LabeledImage(tmp_path / "a.png", -1, "kin"),), "test")


# --------------------------------------------------------------------------- manifests


@pytest.fixture
def manifest_data(tmp_path: Path) -> Path:
    """bench/data/<generator>/<part>/ with two images each, and an empty folder."""
    data = tmp_path / "bench" / "data"
    kinds = {"zeta": "smooth", "alpha": "checker"}
    for g, (name, kind) in enumerate(kinds.items()):
        for p, part in enumerate(("train", "val", "test")):
            write_images(data / name / part, kind, 2, seed=10 * g + p, size=8)
    write_images(data / "newgan", "stripes", 2, seed=99, size=8)
    write_images(data / "seedgan" / "a", "smooth", 1, seed=98, size=8)
    write_images(data / "seedgan" / "b", "smooth", 1, seed=97, size=8)
    (data / "empty").mkdir()
    return tmp_path / "bench"


TOML = """\
name = "my-benchmark"

[known.zeta]
train = "data/zeta/train"
val = "data/zeta/val"
test = "data/zeta/test"

[known.alpha]
train = ["data/alpha/train"]
test = "data/alpha/test"

[unknown.newgan]
kind = "arch"
test = "data/newgan"

[unknown.seedgan]
kind = "seed"
test = ["data/seedgan/a", "data/seedgan/b/smooth_00.png"]
"""

MANIFEST = {
    "name": "my-benchmark",
    "known": {
        "zeta": {"train": "data/zeta/train", "val": "data/zeta/val", "test": "data/zeta/test"},
        "alpha": {"train": ["data/alpha/train"], "test": "data/alpha/test"},
    },
    "unknown": {
        "newgan": {"kind": "arch", "test": "data/newgan"},
        "seedgan": {"kind": "seed", "test": ["data/seedgan/a", "data/seedgan/b/smooth_00.png"]},
    },
}


def fields(split: BenchmarkSplit) -> tuple:
    return (split.name, split.class_names, split.train, split.val, split.test_known, split.test_unknown)


def test_manifest_toml_and_json_agree(manifest_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml_file = manifest_data / "bench.toml"
    toml_file.write_text(TOML)
    json_file = manifest_data / "bench.json"
    json_file.write_text(json.dumps(MANIFEST))
    monkeypatch.chdir(tmp_path)  # relative paths are read from the manifest's folder
    from_toml, from_json = load_manifest(toml_file), load_manifest(str(json_file))
    assert fields(from_toml) == fields(from_json)
    assert from_toml.source == f"manifest {toml_file.resolve()}"

    split = from_toml
    assert split.name == "my-benchmark"
    assert split.class_names == ("zeta", "alpha")  # file order, not sorted
    data = manifest_data.resolve() / "data"
    assert [i.path for i in split.train if i.label == 1] == sorted((data / "alpha" / "train").glob("*.png"))
    assert all(i.generator == split.class_names[i.label] for i in split.train)
    assert [i.label for i in split.val] == [0, 0]
    assert [(i.label, i.kind, i.generator) for i in split.test_unknown] == [(-1, "arch", "newgan")] * 2 + [
        (-1, "seed", "seedgan")
    ] * 2
    summary = split.summary()
    assert summary["counts"] == {"train": 4, "val": 2, "test_known": 4, "test_unknown": 4}
    assert summary["per_class"] == {
        "zeta": {"train": 2, "val": 2, "test": 2},
        "alpha": {"train": 2, "val": 0, "test": 2},
    }
    assert summary["unknown_kinds"] == {"seed": 2, "arch": 2}


def test_manifest_root_and_default_name(manifest_data: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "manifests" / "mine.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps({**{k: v for k, v in MANIFEST.items() if k != "name"}, "root": "../bench"}))
    split = load_manifest(elsewhere)
    assert split.name == "mine"
    assert len(split.test_unknown) == 4


def edit(change):
    manifest = json.loads(json.dumps(MANIFEST))
    change(manifest)
    return manifest


@pytest.mark.parametrize(
    "change,key,words",
    [
        (lambda m: m.update(extra=1), "extra", "unknown key"),
        (lambda m: m["known"]["zeta"].update(tset="x"), "known.zeta.tset", "did you mean 'test'"),
        (lambda m: m["known"]["zeta"].pop("train"), "known.zeta.train", "missing"),
        (lambda m: m["known"]["alpha"].pop("test"), "known.alpha.test", "missing"),
        (lambda m: m["unknown"]["newgan"].pop("test"), "unknown.newgan.test", "missing"),
        (lambda m: m["unknown"]["newgan"].update(train="data/newgan"), "unknown.newgan.train", "unknown key"),
        (lambda m: m["known"]["zeta"].update(val="data/empty"), "known.zeta.val", "no images"),
        (lambda m: m["known"]["zeta"].update(val="data/nope"), "known.zeta.val", "no such folder"),
        (lambda m: m["known"]["zeta"].update(val=[]), "known.zeta.val", "non-empty list"),
        (lambda m: m["known"]["zeta"].update(val=3), "known.zeta.val", "non-empty list"),
        (lambda m: m["unknown"].update(Zeta={"test": "data/newgan"}), "unknown.Zeta", "also a known generator"),
        (lambda m: m["unknown"]["newgan"].update(kind="architecture"), "unknown.newgan.kind", "not an unknown kind"),
        (lambda m: m["known"].update(unknown=m["known"]["zeta"]), "known.unknown", "invalid generator name"),
        (lambda m: m["known"].update(zeta="data/zeta"), "known.zeta", "must be a table"),
        (lambda m: m.pop("unknown"), "unknown", "missing"),
        (lambda m: m.update(known={}), "known", "no known generators"),
        (lambda m: m.update(root="nowhere"), "root", "no such folder"),
        (lambda m: m["known"]["alpha"].update(test="data/alpha/train"), "known.alpha.test", "listed twice"),
    ],
)
def test_manifest_errors_name_manifest_and_key(manifest_data: Path, change, key: str, words: str) -> None:
    path = manifest_data / "bench.json"
    path.write_text(json.dumps(edit(change)))
    with pytest.raises(DataError) as info:
        load_manifest(path)
    message = str(info.value)
    assert str(path) in message and key in message and words in message


def test_manifest_file_errors(manifest_data: Path) -> None:
    yaml = manifest_data / "bench.yaml"
    yaml.write_text("name: x\n")
    with pytest.raises(DataError, match=r"\.toml or a \.json"):
        load_manifest(yaml)
    with pytest.raises(DataError, match="no such manifest"):
        load_manifest(manifest_data / "missing.toml")
    bad_toml = manifest_data / "bad.toml"
    bad_toml.write_text("[known.zeta\ntrain = 1\n")
    with pytest.raises(DataError, match="invalid TOML"):
        load_manifest(bad_toml)
    bad_json = manifest_data / "bad.json"
    bad_json.write_text('{"known": {,}}')
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_manifest(bad_json)
    listed = manifest_data / "list.json"
    listed.write_text("[]")
    with pytest.raises(DataError, match="must be a table"):
        load_manifest(listed)


def test_manifest_toml_without_a_toml_reader(manifest_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10 without tomli: a clear error that says what to do, JSON still works."""
    from osma_cli.evaluation.sources import manifest

    monkeypatch.setattr(manifest, "tomllib", None)
    toml_file = manifest_data / "bench.toml"
    toml_file.write_text(TOML)
    with pytest.raises(DataError, match="tomli") as info:
        load_manifest(toml_file)
    assert "JSON" in str(info.value)
    json_file = manifest_data / "bench.json"
    json_file.write_text(json.dumps(MANIFEST))
    assert load_manifest(json_file).class_names == ("zeta", "alpha")
