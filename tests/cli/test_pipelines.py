"""Output you can pipe, errors you can trace (issue 15): streams, exit codes, per-file reports."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.errors import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE
from tests.conftest import deny_listing, write_images

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(
        app, [os.fsdecode(a) if isinstance(a, (bytes, Path)) else str(a) for a in args], catch_exceptions=False
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


@pytest.fixture
def base(built_store, tiny_weights) -> list:
    return ["--model", tiny_weights, "--refs", built_store, "--workers", 0]


def osma(*args, **popen):
    """``python -m osma_cli`` from this checkout, in a real process."""
    env = {**os.environ, "TERM": "xterm", "PYTHONWARNINGS": "ignore"}
    env.pop("COLUMNS", None)
    return subprocess.Popen([sys.executable, "-m", "osma_cli", *map(str, args)], cwd=REPO, env=env, **popen)


# ------------------------------------------------------------------------------ streams


def test_json_reaches_stdout_while_stderr_is_a_terminal(tmp_path, base, image_tree):
    """The progress bar runs on the terminal; every record still goes to stdout, whole."""
    master, slave = pty.openpty()
    out_file = tmp_path / "out.jsonl"
    seen = bytearray()

    def drain():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    with out_file.open("wb") as out:
        proc = osma("attribute", image_tree, "--json", *base, stdout=out, stderr=slave)
    os.close(slave)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    assert proc.wait(timeout=60) == EXIT_OK, seen.decode(errors="replace")
    reader.join(5)
    os.close(master)
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(records) == 10 and all(r["status"] == "ok" for r in records)
    assert b'"verdict"' not in seen


def test_closed_pipe_ends_quietly_with_141(base, image_tree):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first record
    proc = osma("attribute", image_tree, "--json", *base, stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_BROKEN_PIPE, err.decode()
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_tables_into_a_pipe_keep_every_column(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    names = ["a-generator-with-a-rather-long-name-smooth", "another-generator-with-a-long-name-checker"]
    root = tmp_path / "long"
    write_images(root / names[0], "smooth", 3, seed=1)
    write_images(root / names[1], "checker", 3, seed=2)
    refs = tmp_path / "refs.h5"
    assert invoke("build", root, "--out", refs, "--model", tiny_weights, "--workers", 0).exit_code == 0
    result = invoke("attribute", root, "--top", 2, "--model", tiny_weights, "--refs", refs, "--workers", 0)
    assert result.exit_code == EXIT_OK
    top_cells = [line for line in result.stdout.splitlines() if "(" in line and names[0] in line]
    assert len(top_cells) == 6
    assert all(names[1] in line and "margin" not in line for line in top_cells)
    assert "top 2" in result.stdout


def test_csv_dash_is_stdout(base, image_tree):
    result = invoke("attribute", image_tree / "smoothgan", "--csv", "-", *base)
    assert result.exit_code == EXIT_OK
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5 and rows[0]["status"] == "ok" and "threshold tau" not in result.stdout
    assert invoke("attribute", image_tree, "--csv", "-", "--json", *base).exit_code == EXIT_USAGE


# ------------------------------------------------------------------------------ paths and exit codes


def test_output_paths_are_checked_before_any_work(tmp_path, base, image_tree, tiny_weights):
    missing = tmp_path / "no" / "such"
    result = invoke("attribute", image_tree, "--csv", missing / "out.csv", *base)
    assert result.exit_code == EXIT_USAGE and str(missing) in result.stderr
    result = invoke("build", image_tree, "--out", missing / "refs.h5", "--model", tiny_weights)
    assert result.exit_code == EXIT_USAGE and str(missing) in result.stderr
    result = invoke("train", image_tree, "--out", missing / "w.safetensors", "--epochs", 1)
    assert result.exit_code == EXIT_USAGE and str(missing) in result.stderr
    assert not (tmp_path / "no").exists()


def test_missing_or_empty_inputs_are_usage_errors(tmp_path, base, image_tree):
    missing = tmp_path / "nowhere"
    empty = tmp_path / "emptyfolder"
    empty.mkdir()
    out = ["--out", tmp_path / "r.h5"]
    for args, named in [
        (["attribute", image_tree, missing], missing),
        (["attribute", empty], empty),
        (["attribute", image_tree, empty], empty),
        (["enroll", missing, "--name", "x"], missing),
        (["build", missing, *out], missing),
        (["build", empty, *out], empty),
        (["calibrate", missing], missing),
        (["calibrate", empty], empty),
    ]:
        result = invoke(*args, *(base[:2] if args[0] == "build" else base))
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert named.name in result.output, (args, result.output)


def test_files_skipped_on_purpose_are_not_failures(tmp_path, base):
    folder = tmp_path / "mixed"
    write_images(folder, "smooth", 2, seed=3)
    write_images(folder / "small", "smooth", 1, seed=4, size=16)  # smaller than the 32-pixel crop
    result = invoke("attribute", folder, "--json", "--small", "skip", *base)
    assert result.exit_code == EXIT_OK, result.output
    statuses = sorted(r["status"] for r in json_lines(result.stdout))
    assert statuses == ["ok", "ok", "skipped"]
    assert "smooth_00.png" in result.stderr and "smaller than the crop" in result.stderr


def test_ctrl_c_says_how_far_it_got_and_keeps_the_rows(tmp_path, base, image_tree, monkeypatch):
    import osma_cli.api

    real = osma_cli.api.attribute_files

    def interrupted(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(osma_cli.api, "attribute_files", interrupted)
    out = tmp_path / "out.csv"
    result = invoke("attribute", image_tree, "--csv", out, *base)
    assert result.exit_code == EXIT_INTERRUPTED
    assert f"interrupted after 3 of 10 files; 3 results in {out}" in " ".join(result.stderr.split())
    assert len(list(csv.DictReader(out.open()))) == 3


# ------------------------------------------------------------------------------ errors you can trace


def test_each_problem_names_its_file_and_the_table_says_why(tmp_path, base):
    folder = tmp_path / "mixed"
    write_images(folder, "smooth", 2, seed=9)
    (folder / "empty.png").write_bytes(b"")
    result = invoke("attribute", folder, *base)
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED
    assert f"{folder / 'empty.png'}: empty file (0 bytes)" in " ".join(result.stderr.split())
    [row] = [line for line in result.stdout.splitlines() if "empty.png" in line]
    assert "error" in row and "empty file (0 bytes)" in row


def test_names_that_are_not_utf8_survive_json_and_csv(tmp_path, base):
    folder = tmp_path / "names"
    write_images(folder, "smooth", 2, seed=9)
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    os.rename(folder / "smooth_00.png", raw)
    result = invoke("attribute", folder, "--json", "--csv", tmp_path / "out.csv", *base)
    assert result.exit_code == EXIT_OK, result.output
    records = json_lines(result.stdout)
    assert [r["status"] for r in records] == ["ok", "ok"]
    odd = records[0]
    assert odd["path"].endswith("caf\\xe9.png") and base64.b64decode(odd["path_bytes_b64"]) == raw
    assert records[1]["path_bytes_b64"] is None
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert len(rows) == 2 and base64.b64decode(rows[0]["path_bytes_b64"]) == raw


def test_a_fifo_in_the_folder_does_not_hang_the_batch(tmp_path, base):
    folder = tmp_path / "withfifo"
    write_images(folder, "smooth", 2, seed=9)
    fifo = folder / "pipe.png"
    os.mkfifo(fifo)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(r=invoke("attribute", folder, "--json", *base)), daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("the batch blocked on a FIFO")
    result = box["r"]
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED
    records = {Path(r["path"]).name: r for r in json_lines(result.stdout)}
    assert records["pipe.png"]["status"] == "error" and "FIFO" in records["pipe.png"]["error"]
    assert [records[f"smooth_0{i}.png"]["status"] for i in range(2)] == ["ok", "ok"]


def test_an_unreadable_subfolder_is_reported_and_the_rest_goes_on(tmp_path, base, image_tree, monkeypatch):
    locked = image_tree / "checkergan"
    deny_listing(monkeypatch, locked)
    result = invoke("attribute", image_tree, "--json", *base)
    assert result.exit_code == EXIT_SOME_INPUTS_FAILED, result.output
    records = json_lines(result.stdout)
    assert [r["path"] for r in records if r["status"] == "error"] == [str(locked)]
    assert sum(r["status"] == "ok" for r in records) == 5
    assert f"{locked}: cannot list folder: permission denied" in " ".join(result.stderr.split())


def test_damaged_files_are_attributed_with_a_warning(tmp_path, base):
    from tests.data.test_data_integrity import flip

    folder = tmp_path / "damaged"
    [png] = write_images(folder, "smooth", 1, seed=9)
    png.write_bytes(png.read_bytes()[:-6])
    jpeg = folder / "flipped.jpg"
    Image.open(png).save(jpeg, quality=90, restart_marker_blocks=2)
    data = jpeg.read_bytes()
    jpeg.write_bytes(flip(data, data.index(b"\xff\xd0") + 1, 1))  # RST0 -> RST2
    out = tmp_path / "out.csv"
    result = invoke("attribute", folder, "--json", "--csv", out, *base)
    assert result.exit_code == EXIT_OK, result.output
    records = {Path(r["path"]).name: r for r in json_lines(result.stdout)}
    assert records["smooth_00.png"]["status"] == "ok" and "png: cut short" in records["smooth_00.png"]["warnings"][0]
    assert records["flipped.jpg"]["status"] == "ok" and "restart marker" in records["flipped.jpg"]["warnings"][0]
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert "restart marker" in rows["flipped.jpg"]["warnings"]
    assert "flipped.jpg: jpeg: restart marker" in " ".join(result.stderr.split())


def test_build_and_enroll_list_the_unreadable_files(tmp_path, base, tiny_weights):
    root = tmp_path / "train"
    write_images(root / "smoothgan", "smooth", 2, seed=1)
    for name in ("a.png", "b.png"):
        (root / "brokengan").mkdir(parents=True, exist_ok=True)
        (root / "brokengan" / name).write_bytes(b"not an image")
    result = invoke("build", root, "--out", tmp_path / "r.h5", "--model", tiny_weights, "--workers", 0)
    assert result.exit_code == EXIT_ERROR
    text = " ".join(result.stderr.split())
    for name in ("a.png", "b.png"):
        assert f"{root / 'brokengan' / name}: not an image" in text
    result = invoke("enroll", root / "brokengan", "--name", "broken", *base)
    assert result.exit_code == EXIT_ERROR
    text = " ".join(result.stderr.split())
    assert f"{root / 'brokengan' / 'a.png'}: not an image" in text and "listed above" in text


def test_enroll_names_the_damaged_files_it_used(tmp_path, base):
    folder = tmp_path / "newgan"
    paths = write_images(folder, "checker", 3, seed=11)
    paths[0].write_bytes(paths[0].read_bytes()[:-6])
    result = invoke("enroll", folder, "--name", "newgan", *base)
    assert result.exit_code == EXIT_OK, result.output
    assert f"{paths[0].name}: png: cut short" in " ".join(result.stderr.split())
    assert "(used anyway)" in result.stderr
