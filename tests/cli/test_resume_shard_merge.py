"""Long runs: ``--out`` resumes after a stop at any point, ``--shard`` partitions, ``osma merge``
gives one run's file, ``--cache`` recomputes nothing (docs/scale.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma_cli import api
from osma_cli.cli.app import app
from osma_cli.embed import Embedder
from osma_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE
from tests.conftest import write_images

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def said(result) -> str:
    """stderr with rich's line folding undone."""
    return " ".join(result.stderr.split())


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Eleven images of two kinds and one unreadable file, in two folders."""
    root = tmp_path / "inputs"
    write_images(root / "a", "smooth", 6, seed=5)
    write_images(root / "b", "checker", 5, seed=6)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def attribute(out: Path, inputs: Path, weights: Path, refs: Path, *extra):
    return invoke(
        "attribute", inputs, "--out", out, "--model", weights, "--refs", refs, "--workers", 0, "--batch-size", 4, *extra
    )


@pytest.fixture
def uninterrupted(tmp_path: Path, inputs: Path, tiny_weights: Path, built_store: Path) -> bytes:
    out = tmp_path / "whole.jsonl"
    result = attribute(out, inputs, tiny_weights, built_store)
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED, result.output  # the broken file, reported
    return out.read_bytes()


def line_ends(data: bytes) -> list[int]:
    return [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]


def test_records_carry_their_file_and_run(uninterrupted: bytes, inputs: Path):
    records = [json.loads(line) for line in uninterrupted.splitlines()]
    assert len(records) == 12 and len({r["path"] for r in records}) == 12
    assert len({(r["model"], r["references"], r["settings"]) for r in records}) == 1
    for r in records:
        st = os.stat(r["path"])
        assert r["file_id"] == f"stat:{st.st_size}:{st.st_mtime_ns}"


def test_resume_after_a_stop_at_any_point_gives_one_runs_records(
    tmp_path, uninterrupted, inputs, tiny_weights, built_store
):
    """Cut the file where a kill could leave it: before the first record, inside one (a torn
    write), between two, after the last. Each resumed run ends with the uninterrupted bytes."""
    ends = line_ends(uninterrupted)
    cuts = {0, 7, ends[0], ends[0] + 50, ends[4], ends[4] + 1, ends[-2], ends[-1] - 3, ends[-1]}
    for cut in sorted(cuts):
        out = tmp_path / f"cut{cut}.jsonl"
        out.write_bytes(uninterrupted[:cut])
        result = attribute(out, inputs, tiny_weights, built_store)
        assert result.exit_code == EXIT_SOME_INPUTS_FAILED, result.output  # the broken file counts, resumed or not
        assert out.read_bytes() == uninterrupted, f"cut at byte {cut}"


def test_resume_after_an_interrupt_mid_batch(tmp_path, uninterrupted, inputs, tiny_weights, built_store, monkeypatch):
    out = tmp_path / "stopped.jsonl"
    real = api.attribute_files

    def stops_after_five(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == 5:  # the second batch of 4 is half written
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(api, "attribute_files", stops_after_five)
    result = attribute(out, inputs, tiny_weights, built_store)
    assert result.exit_code == EXIT_INTERRUPTED
    assert "run the same command again to resume" in said(result)
    assert len(out.read_bytes().splitlines()) == 5
    monkeypatch.setattr(api, "attribute_files", real)
    attribute(out, inputs, tiny_weights, built_store)
    assert out.read_bytes() == uninterrupted


def test_csv_resumes_too(tmp_path, inputs, tiny_weights, built_store):
    whole, cut = tmp_path / "whole.csv", tmp_path / "cut.csv"
    attribute(whole, inputs, tiny_weights, built_store)
    data = whole.read_bytes()
    assert data.count(b"\r\n") == 13  # the header and twelve rows
    cut.write_bytes(data[: data.index(b"\r\n", 400) + 30])  # a torn row
    attribute(cut, inputs, tiny_weights, built_store)
    assert cut.read_bytes() == data


def test_resuming_with_another_model_store_or_setting_is_refused(
    tmp_path, inputs, tiny_weights, other_weights, built_store, image_tree
):
    out = tmp_path / "run.jsonl"
    attribute(out, inputs, tiny_weights, built_store)
    before = out.read_bytes()
    result = attribute(out, inputs, tiny_weights, built_store, "--top", 2)
    assert result.exit_code == EXIT_USAGE and "other settings" in said(result)
    other_refs = tmp_path / "other.h5"
    assert invoke("build", image_tree, "--out", other_refs, "--model", other_weights, "--workers", 0).exit_code == 0
    result = attribute(out, inputs, other_weights, other_refs)
    assert result.exit_code == EXIT_USAGE and "another model" in said(result)
    new_generator = write_images(tmp_path / "newgan", "smooth", 3, seed=9)
    assert (
        invoke(
            "enroll", "--name", "newgan", *new_generator, "--refs", built_store, "--model", tiny_weights, "--workers", 0
        ).exit_code
        == 0
    )
    result = attribute(out, inputs, tiny_weights, built_store)
    assert result.exit_code == EXIT_USAGE and "reference-store contents" in said(result)
    assert out.read_bytes() == before


def test_a_changed_file_is_attributed_again_and_merge_keeps_its_new_record(tmp_path, inputs, tiny_weights, built_store):
    out = tmp_path / "run.jsonl"
    attribute(out, inputs, tiny_weights, built_store)
    changed = inputs / "a" / "smooth_00.png"
    write_images(tmp_path / "fresh", "checker", 1, seed=11)[0].replace(changed)
    result = attribute(out, inputs, tiny_weights, built_store)
    assert "changed since they were recorded" in said(result)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 13 and records[-1]["path"] == str(changed)
    merged = tmp_path / "merged.jsonl"
    assert invoke("merge", out, "--out", merged, "--inputs", inputs).exit_code == EXIT_OK
    kept = [json.loads(line) for line in merged.read_text().splitlines()]
    assert len(kept) == 12 and kept[0] == records[-1]


def test_hash_tells_files_by_their_bytes(tmp_path, inputs, tiny_weights, built_store):
    out = tmp_path / "hashed.jsonl"
    attribute(out, inputs, tiny_weights, built_store, "--hash")
    first = out.read_bytes()
    touched = inputs / "a" / "smooth_01.png"
    os.utime(touched, ns=(1, 1))
    result = attribute(out, inputs, tiny_weights, built_store, "--hash")
    assert out.read_bytes() == first and "12 records already there, 0 files to go" in said(result)
    import hashlib

    record = next(json.loads(line) for line in first.splitlines() if json.loads(line)["path"] == str(touched))
    assert record["file_id"] == "sha256:" + hashlib.sha256(touched.read_bytes()).hexdigest()


def same_records(a: bytes, b: bytes) -> None:
    """Equal records, numbers to float tolerance (a network's last bits depend on its batch's shape)."""
    left, right = ([json.loads(line) for line in data.splitlines()] for data in (a, b))
    assert len(left) == len(right)
    for x, y in zip(left, right):
        assert {k: v for k, v in x.items() if k not in ("score", "margin", "top")} == {
            k: v for k, v in y.items() if k not in ("score", "margin", "top")
        }
        assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-6) if x["score"] is not None else True
        assert [t["name"] for t in x["top"]] == [t["name"] for t in y["top"]]


def test_shards_merge_into_one_runs_file(tmp_path, uninterrupted, inputs, tiny_weights, built_store):
    """Byte for byte when each image is its own batch; to float tolerance in batches (the
    shards' batches are not one run's)."""
    whole = tmp_path / "whole-b1.jsonl"
    attribute(whole, inputs, tiny_weights, built_store, "--batch-size", 1)
    for batch in (1, 4):
        parts = [tmp_path / f"part{i}-b{batch}.jsonl" for i in (1, 2, 3)]
        for i, part in enumerate(parts, start=1):
            attribute(part, inputs, tiny_weights, built_store, "--shard", f"{i}/3", "--batch-size", batch)
        assert sum(len(p.read_bytes().splitlines()) for p in parts) == 12
        merged = tmp_path / f"merged-b{batch}.jsonl"
        result = invoke("merge", *parts, "--out", merged, "--inputs", inputs)
        assert result.exit_code == EXIT_OK, result.output
        if batch == 1:
            assert merged.read_bytes() == whole.read_bytes()
        else:
            same_records(merged.read_bytes(), uninterrupted)

    parts = [tmp_path / f"part{i}-b1.jsonl" for i in (1, 2, 3)]
    refused = tmp_path / "refused.jsonl"
    missing = invoke("merge", *parts[:2], "--out", refused, "--inputs", inputs)
    assert missing.exit_code != EXIT_OK and "have no record" in said(missing)
    doubled = invoke("merge", *parts, parts[0], "--out", refused, "--inputs", inputs)
    assert doubled.exit_code != EXIT_OK and "more than one record" in said(doubled)
    outside = invoke("merge", *parts, "--out", refused, "--inputs", inputs / "a")
    assert outside.exit_code != EXIT_OK and "not under the inputs" in said(outside)
    assert not refused.exists()


def test_merge_refuses_parts_of_different_runs(tmp_path, inputs, tiny_weights, built_store):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    attribute(one, inputs, tiny_weights, built_store, "--shard", "1/2")
    attribute(two, inputs, tiny_weights, built_store, "--shard", "2/2", "--threshold", 0.5)
    result = invoke("merge", one, two, "--out", tmp_path / "m.jsonl", "--inputs", inputs)
    assert result.exit_code != EXIT_OK and "different runs" in said(result)


def test_csv_shards_merge_byte_for_byte(tmp_path, inputs, tiny_weights, built_store):
    whole = tmp_path / "whole.csv"
    attribute(whole, inputs, tiny_weights, built_store, "--batch-size", 1)
    parts = [tmp_path / f"p{i}.csv" for i in (1, 2)]
    for i, part in enumerate(parts, start=1):
        attribute(part, inputs, tiny_weights, built_store, "--shard", f"{i}/2", "--batch-size", 1)
    merged = tmp_path / "merged.csv"
    assert invoke("merge", *parts, "--out", merged, "--inputs", inputs).exit_code == EXIT_OK
    assert merged.read_bytes() == whole.read_bytes()


def test_bad_out_and_shard_options_are_usage_errors(tmp_path, inputs, tiny_weights, built_store):
    for extra, message in (
        (["--out", tmp_path / "r.json"], "cannot tell the format"),
        (["--out", tmp_path / "missing" / "r.jsonl"], "does not exist"),
        (["--out", tmp_path / "r.jsonl", "--shard", "0/4"], "counted from 1"),
        (["--out", tmp_path / "r.jsonl", "--shard", "2-4"], "not of the form i/n"),
        (["--from-cache", "--detect"], "reads no image"),
    ):
        result = invoke("attribute", inputs, "--model", tiny_weights, "--refs", built_store, *extra)
        assert result.exit_code == EXIT_USAGE and message in said(result), (extra, result.stderr)
    not_ours = tmp_path / "notes.jsonl"
    not_ours.write_text("my own notes\n")
    result = attribute(not_ours, inputs, tiny_weights, built_store)
    assert result.exit_code != EXIT_OK and "not a results file written by osma" in said(result)
    assert not_ours.read_text() == "my own notes\n"


def test_the_cache_serves_every_feature_on_a_second_run(tmp_path, inputs, tiny_weights, built_store, monkeypatch):
    """Counting the network's forward calls: the second run makes none and writes the same records."""
    calls = []
    real = Embedder.features_of_crops
    monkeypatch.setattr(
        Embedder, "features_of_crops", lambda self, crops: calls.append(len(crops)) or real(self, crops)
    )
    plain = invoke("attribute", inputs, "--json", "--model", tiny_weights, "--refs", built_store, "--workers", 0)
    assert sum(calls) == 11
    calls.clear()
    first = invoke(
        "attribute", inputs, "--json", "--cache", "--model", tiny_weights, "--refs", built_store, "--workers", 0
    )
    assert sum(calls) == 11 and first.stdout == plain.stdout
    calls.clear()
    second = invoke(
        "attribute",
        inputs,
        "--json",
        "--cache",
        "--model",
        tiny_weights,
        "--refs",
        built_store,
        "--workers",
        0,
        "--threshold",
        0.1,
    )
    assert calls == []
    retau = [json.loads(line) for line in second.stdout.splitlines()]
    assert all(r["threshold"] == 0.1 for r in retau if r["status"] == "ok")
    cached_only = invoke(
        "attribute", inputs, "--json", "--from-cache", "--model", tiny_weights, "--refs", built_store, "--workers", 0
    )
    assert calls == [] and cached_only.exit_code == EXIT_SOME_INPUTS_FAILED
    readable = [line for line in plain.stdout.splitlines() if "broken.png" not in line]
    assert [line for line in cached_only.stdout.splitlines() if "broken.png" not in line] == readable
    new_file = write_images(inputs / "c", "smooth", 1, seed=12)[0]
    lacking = invoke(
        "attribute", new_file, "--json", "--from-cache", "--model", tiny_weights, "--refs", built_store, "--workers", 0
    )
    assert calls == [] and "not in the embedding cache" in json.loads(lacking.stdout)["error"]
