"""The benchmark's files, written by the core: what ``osma benchmark --out`` writes, without the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from osma_cli.attribution import is_accepted
from osma_cli.embed import Embedder, EmbedOptions
from osma_cli.evaluation.outputs import SCORE_FIELDS, write_benchmark_outputs
from osma_cli.evaluation.protocol import run_benchmark
from osma_cli.evaluation.sources import load_pose_split
from osma_cli.records import record
from tests.pose_fixture import SPLIT, make_pose_fixture


def test_the_files_hold_the_run(tmp_path: Path, tiny_weights: Path) -> None:
    embedder = Embedder.from_file(tiny_weights, device="cpu")
    split = load_pose_split(make_pose_fixture(tmp_path / "pose", n_per_class=4, size=48), SPLIT)
    run = run_benchmark(embedder, split, options=EmbedOptions(workers=0))
    out = tmp_path / "out"
    write_benchmark_outputs(run, out)

    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(record("benchmark", run.to_dict())))
    with (out / "scores.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == SCORE_FIELDS
    assert [r["path"] for r in rows] == [str(im.path) for im in run.test_images]
    assert [int(r["accepted"]) for r in rows] == is_accepted(run.scores, run.threshold.value).astype(int).tolist()
    np.testing.assert_allclose([float(r["score"]) for r in rows], run.scores, rtol=1e-5)
    for name in ("references.h5", "roc.png", "oscr.png", "af1_crr.png", "scores.png"):
        assert (out / name).stat().st_size > 0
