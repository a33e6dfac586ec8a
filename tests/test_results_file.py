"""The pieces of a resumable run: the store's content identity, file identities, and reading a
results file that a kill may have cut (the CLI end to end: tests/cli/test_resume_shard_merge.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from osma_cli.errors import DataError, UsageError
from osma_cli.references import ReferenceStore, Threshold
from osma_cli.regime_store import RegimeStores, store_identity
from osma_cli.results_file import ResultsFile, RunIdentity, file_id, read_contents, results_format
from tests.test_references import FakeMeta


def small_store(seed: int = 0) -> ReferenceStore:
    rng = np.random.default_rng(seed)
    store = ReferenceStore.for_weights(FakeMeta())
    store.enroll("alpha", rng.normal(size=(4, 8)))
    store.enroll("beta", rng.normal(size=(3, 8)))
    store.set_threshold(Threshold(value=2.0, method="test"))
    return store


def test_store_identity_follows_what_decides_a_verdict(tmp_path: Path):
    store = small_store()
    first = store_identity(store)
    store.save(tmp_path / "refs.h5")
    assert store_identity(ReferenceStore.load(tmp_path / "refs.h5")) == first  # saved and read back: the same
    assert store_identity(small_store()) == first  # made again (other timestamps): the same
    changed = small_store()
    changed.enroll("alpha", np.ones((1, 8)), update=True)
    assert store_identity(changed) != first
    retau = small_store()
    retau.set_threshold(Threshold(value=2.1, method="test"))
    assert store_identity(retau) != first
    removed = small_store()
    removed.remove("beta")
    assert store_identity(removed) != first
    regimes = RegimeStores({"lossless": small_store(), "jpeg90": small_store(1)})
    swapped = RegimeStores({"lossless": small_store(1), "jpeg90": small_store()})
    assert len({store_identity(regimes), store_identity(swapped), first}) == 3


def test_run_identity_changes_with_each_setting():
    base = {"tau": 2.0, "top": 1, "crops": 1, "small": "pad", "max_pixels": 10, "detector": None, "hash": False}
    digests = {RunIdentity.of("f" * 64, "e" * 64, base).settings}
    for key, other in (
        ("tau", 2.5),
        ("top", 3),
        ("crops", 2),
        ("small", "skip"),
        ("max_pixels", 11),
        ("detector", "ab"),
        ("hash", True),
    ):
        digests.add(RunIdentity.of("f" * 64, "e" * 64, {**base, key: other}).settings)
    assert len(digests) == 8
    import hashlib

    canonical = json.dumps(base, sort_keys=True, separators=(",", ":")).encode()
    assert RunIdentity.of("f" * 64, None, base).fields() == {
        "model": "f" * 16,
        "references": None,
        "settings": hashlib.sha256(canonical).hexdigest()[:16],
    }


def test_file_id_is_size_and_mtime_or_the_bytes_hash(tmp_path: Path):
    import hashlib

    path = tmp_path / "x.png"
    path.write_bytes(b"12345")
    os.utime(path, ns=(10, 20))
    assert file_id(path) == "stat:5:20"
    assert file_id(path, content=True) == "sha256:" + hashlib.sha256(b"12345").hexdigest()
    assert file_id(tmp_path / "missing.png") is None and file_id(tmp_path / "missing.png", content=True) is None


def test_suffix_chooses_the_layout():
    assert results_format("a/r.jsonl") == results_format("r.NDJSON") == "jsonl"
    assert results_format("r.csv") == "csv"
    with pytest.raises(UsageError, match="cannot tell the format"):
        results_format("r.txt")


def record(path: str, identity: RunIdentity) -> dict:
    return {"path": path, "path_bytes_b64": None, "status": "ok", "file_id": "stat:1:2", **identity.fields()}


def test_a_torn_last_line_is_cut_and_the_rest_kept(tmp_path: Path):
    identity = RunIdentity.of("a" * 64, "b" * 64, {})
    out = tmp_path / "r.jsonl"
    lines = [json.dumps(record(f"img{i}.png", identity)) for i in range(3)]
    out.write_text("\n".join(lines) + "\n" + lines[0][:17])
    contents = read_contents(out)
    assert contents.torn and [e.key for e in contents.entries] == [b"img0.png", b"img1.png", b"img2.png"]
    with ResultsFile(out, identity) as results:
        assert results.torn_bytes == 17 and results.resumed == 3
        assert results.status_of("img1.png", "stat:1:2") == "done"
        assert results.status_of("img1.png", "stat:1:3") == "changed"
        assert results.status_of("img9.png", "stat:1:2") == "new"
        results.append(record("img3.png", identity))
    assert out.read_text() == "\n".join(lines + [json.dumps(record("img3.png", identity))]) + "\n"


def test_a_path_that_is_not_utf8_is_matched_by_its_bytes(tmp_path: Path):
    import base64

    identity = RunIdentity.of("a" * 64, None, {})
    raw = b"caf\xe9.png"
    rec = {**record("caf\\xe9.png", identity), "path_bytes_b64": base64.b64encode(raw).decode()}
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps(rec) + "\n")
    with ResultsFile(out, identity) as results:
        assert results.status_of(os.fsdecode(raw), "stat:1:2") == "done"
        assert results.status_of("caf\\xe9.png", "stat:1:2") == "new"  # the text is not the file


def test_another_runs_file_or_a_foreign_file_is_refused_untouched(tmp_path: Path):
    ours, theirs = RunIdentity.of("a" * 64, "b" * 64, {}), RunIdentity.of("a" * 64, "c" * 64, {})
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps(record("x.png", theirs)) + "\n")
    with pytest.raises(UsageError, match="reference-store contents"):
        ResultsFile(out, ours)
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"a": 1}\nhello\n')
    with pytest.raises(DataError, match="line 1 is not an attribution record"):
        ResultsFile(foreign, ours)
    assert foreign.read_text() == '{"a": 1}\nhello\n'
    table = tmp_path / "table.csv"
    table.write_text("name,value\r\nx,1\r\n")
    with pytest.raises(DataError, match="lacks the column"):
        ResultsFile(table, ours, csv_fields=["path"], csv_row=dict)


@pytest.mark.parametrize("block", [1, 2, 7, 1 << 16])
def test_the_last_record_end_is_found_from_the_end_in_any_block_size(tmp_path: Path, monkeypatch, block: int):
    """The tail is searched backwards block by block; a CSV line end may straddle two blocks."""
    from osma_cli import results_file

    monkeypatch.setattr(results_file, "TAIL_BLOCK", block)
    identity = RunIdentity.of("a" * 64, "b" * 64, {})
    fields = ["path", "path_bytes_b64", "status", "file_id", "model", "references", "settings"]
    out = tmp_path / "r.csv"
    with ResultsFile(out, identity, csv_fields=fields, csv_row=dict) as results:
        for i in range(3):
            results.append(record(f"dir\n{i}.png", identity))  # a line end inside a quoted field
    whole = out.read_bytes()
    out.write_bytes(whole + b'"dir\n3.p')
    contents = read_contents(out)
    assert contents.valid_bytes == len(whole) and contents.torn
    assert [e.key for e in contents.entries] == [f"dir\n{i}.png".encode() for i in range(3)]
    assert b"".join(whole[slice(*e.span)] for e in contents.entries) == whole[contents.header_span[1] :]
