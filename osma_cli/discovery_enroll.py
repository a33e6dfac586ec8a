"""Enrolling a cluster found by ``osma discover``: exactly the files the analyst looked at.

The analyst decides from a contact sheet, so the enrolment must take the files of that run,
not of a new clustering. A run's ``clusters.json`` therefore records what it was made with
(``run_identity``: the weights' sha256, the store file's path and sha256, the working folder
that relative paths are relative to) and each clustered file's sha256. ``enroll_cluster``
refuses, naming what differs, when the model or the store changed since that run (another
enrolment changes which images are unknown, so the clustering is stale: run discover
again), when the cluster number is not in the record, or when a listed file vanished or
its bytes changed. It then hands the files to ``api.enroll_generator``, the one enrolment
path (``osma enroll``): same statistics, same provenance hashes, same atomic write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from osma_cli.embed import EmbedOptions
from osma_cli.errors import DataError, ReferenceStoreError, UsageError

if TYPE_CHECKING:
    from osma_cli.api import EnrollResult
    from osma_cli.embed import Embedder
    from osma_cli.weights import WeightsMeta

RECORD_NAME = "clusters.json"
RERUN = "run `osma discover ... --out DIR` again and look at the new contact sheets"


def run_identity(store_path: Path | str, meta: WeightsMeta) -> dict:
    """What a discover run was made with, for ``clusters.json``: weights, store bytes, working folder."""
    from osma_cli.data.files import file_sha256

    return {
        "model_sha256": meta.sha256,
        "store": {"path": str(Path(store_path).resolve()), "sha256": file_sha256(store_path)},
        "cwd": os.getcwd(),
    }


def record_path(source: Path | str) -> Path:
    """``--from``: a run's ``--out`` folder (its clusters.json) or the JSON file itself."""
    source = Path(source)
    return source / RECORD_NAME if source.is_dir() else source


def load_record(source: Path | str) -> tuple[Path, dict]:
    """The record of a discover run, refused with the reason when it is missing, not JSON or too old."""
    path = record_path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="give the --out folder of an `osma discover` run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable discover record ({exc})", hint=RERUN) from None
    if not isinstance(data, dict) or data.get("command") != "discover" or not isinstance(data.get("clusters"), list):
        raise DataError(f"{path}: not the record of an `osma discover` run", hint=RERUN)
    if "model_sha256" not in data or "store" not in data:
        raise DataError(
            f"{path}: the record does not say which model and store made it (an older osma wrote it)", hint=RERUN
        )
    return path, data


def cluster_of(data: dict, cluster_id: int, path: Path) -> dict:
    """The cluster numbered ``cluster_id`` in the record, or a message listing the numbers there are."""
    for cluster in data["clusters"]:
        if cluster.get("id") == cluster_id:
            return cluster
    ids = ", ".join(str(c.get("id")) for c in data["clusters"]) or "none"
    raise UsageError(
        f"{path}: no cluster {cluster_id} (clusters in this run: {ids})",
        hint="pick a number from the run's table or its cluster-ID.png sheets",
    )


def check_same_run(data: dict, path: Path, store_path: Path, meta: WeightsMeta) -> None:
    """Refuse when the model or the store is not the one the record was made with."""
    from osma_cli.data.files import file_sha256

    if data["model_sha256"] != meta.sha256:
        raise ReferenceStoreError(
            f"{path} was made with other weights (sha256 {str(data['model_sha256'])[:12]}) than the model in use "
            f"({meta.architecture}, sha256 {meta.sha256[:12]})",
            hint="pass the --model of that run, or " + RERUN,
        )
    recorded = data["store"] or {}
    now = file_sha256(store_path)
    if now is None:
        raise ReferenceStoreError(
            f"the reference store {store_path} cannot be read", hint="pass the --refs of that run"
        )
    if recorded.get("sha256") != now:
        raise ReferenceStoreError(
            f"the reference store {store_path} is not the one {path} was made with ({recorded.get('path')}, "
            f"sha256 {str(recorded.get('sha256'))[:12]}): it was changed since, or it is another store",
            hint="an enrolment since that run changes which images are unknown; " + RERUN,
        )


def checked_files(cluster: dict, data: dict, path: Path) -> list[Path]:
    """The cluster's files (relative ones from the run's folder), each with the bytes that were clustered."""
    from osma_cli.data.files import file_sha256

    files, hashes = cluster.get("files") or [], cluster.get("sha256") or []
    if len(files) != len(hashes):
        raise DataError(
            f"{path}: cluster {cluster.get('id')} lists {len(files)} files and {len(hashes)} hashes", hint=RERUN
        )
    base = Path(data.get("cwd") or ".")
    out, problems = [], []
    for name, expected in zip(files, hashes):
        file = Path(name) if Path(name).is_absolute() else base / name
        actual = file_sha256(file)
        if actual is None:
            problems.append(f"{file}: {'vanished' if not file.exists() else 'cannot be read'}")
        elif actual != expected:
            problems.append(f"{file}: its bytes changed since the run")
        out.append(file)
    if problems:
        raise DataError(
            f"cluster {cluster.get('id')} of {path} is not what was clustered: " + "; ".join(problems),
            hint="restore the files, or " + RERUN,
        )
    return out


def enroll_cluster(
    embedder: Embedder,
    store_path: Path | str,
    source: Path | str,
    cluster_id: int,
    name: str,
    *,
    options: EmbedOptions = EmbedOptions(),
    on_progress: Callable[[int], None] | None = None,
    command: str | None = None,
) -> tuple[EnrollResult, list[Path]]:
    """Enrol cluster ``cluster_id`` of the discover run recorded at ``source`` as generator ``name``.

    Every check (module docstring) comes before anything is embedded or written; the
    enrolment itself is ``api.enroll_generator``'s. Returns its result and the files enrolled.
    """
    from osma_cli.api import enroll_generator

    path, data = load_record(source)
    cluster = cluster_of(data, cluster_id, path)
    store_path = Path(store_path)
    check_same_run(data, path, store_path, embedder.meta)
    files = checked_files(cluster, data, path)
    result = enroll_generator(
        embedder, store_path, name, files, options=options, on_progress=on_progress, command=command
    )
    return result, files
