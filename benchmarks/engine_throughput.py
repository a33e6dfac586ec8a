"""Single process vs the Ray Data engine: images/s, peak memory per process, same records.

Makes N generated 256x256 JPEGs (``attribute_throughput.make_jpegs``), then runs each engine
in a fresh child process of its own, so that each process's peak memory is its own:

1. ``single``: ``osma_cli.api.attribute_files`` (what ``osma attribute`` calls), loader
   workers as the CLI picks them;
2. ``ray``: ``osma_cli.ray_engine.attribute_files_ray`` on a local Ray started by the child
   (its start-up timed apart), actors reporting their own peak RSS.

``attribute_s`` counts from the call to the last record, ``first_record_s`` to the first (for
Ray: actors starting, importing torch and loading the model, then one block).

Then checks that the two runs gave the same records (paths in order, errors, regimes,
verdicts, candidates, scores to float tolerance). Model: the shipped default (and its
shipped store, read only), or ``--model PATH --refs PATH``.

Usage: python benchmarks/engine_throughput.py [--n 300] [--model M --refs R] [--device cpu]
       [--ray-cpus K] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attribute_throughput import make_jpegs  # the benchmark folder, put on the path above


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_and_store(model: str | None, refs: str | None) -> tuple[Path, Path | None]:
    """The weights and store to use: given, else the shipped default and its shipped store."""
    from osma_cli.home import DEFAULT_MODEL, default_model_path, shipped_references
    from osma_cli.weights import read_meta

    weights = Path(model) if model else default_model_path()
    if read_meta(weights).is_classifier:
        return weights, None
    store = Path(refs) if refs else shipped_references(DEFAULT_MODEL)
    if store is None:
        raise SystemExit("no shipped reference store: pass --refs")
    return weights, store


def tau_for(weights: Path, store_path: Path | None):
    """tau as ``osma attribute`` resolves it without --threshold."""
    from osma_cli.attribution import resolve_threshold
    from osma_cli.classifier import resolve_classifier_threshold
    from osma_cli.regime_store import load_store
    from osma_cli.weights import read_meta

    if store_path is None:
        return resolve_classifier_threshold(weights, read_meta(weights), None)
    return resolve_threshold(load_store(store_path), None)


def timed(records, t0: float, result: dict) -> list:
    """All the records, noting in ``result`` when the first came (the engine's fixed cost)."""
    out = []
    for record in records:
        if not out:
            result["first_record_s"] = time.perf_counter() - t0
        out.append(record)
    return out


def run_engine(args: argparse.Namespace) -> None:
    """One engine over the listed files, in this (child) process; results to ``args.records``."""
    from osma_cli.embed import EmbedOptions

    paths = [Path(line) for line in Path(args.files).read_text().splitlines()]
    weights, store_path = Path(args.model), None if args.refs == "-" else Path(args.refs)
    tau = tau_for(weights, store_path)
    options = EmbedOptions(batch_size=args.batch_size, workers=args.workers)
    result: dict = {"engine": args.engine}
    if args.engine == "single":
        from osma_cli.api import attribute_files
        from osma_cli.embed import Embedder
        from osma_cli.regime_store import load_store

        t0 = time.perf_counter()
        embedder = Embedder.from_file(weights, device=args.device)
        store = None if store_path is None else load_store(store_path)
        result["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        records = timed(attribute_files(embedder, store, paths, threshold=tau, options=options), t0, result)
        result["attribute_s"] = time.perf_counter() - t0
    else:
        import logging

        import ray

        from osma_cli.ray_engine import attribute_files_ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        result["ray_start_s"] = time.perf_counter() - t0
        actors: dict[int, float] = {}
        t0 = time.perf_counter()
        records = timed(
            attribute_files_ray(
                weights,
                store_path,
                paths,
                device=args.device,
                threshold=tau,
                options=options,
                on_worker_report=lambda r: actors.__setitem__(r.pid, max(r.peak_rss_mb, actors.get(r.pid, 0.0))),
            ),
            t0,
            result,
        )
        result["attribute_s"] = time.perf_counter() - t0
        result["actors"] = len(actors)
        result["actor_peak_rss_mb"] = sorted(round(v, 1) for v in actors.values())
        ray.shutdown()
    result["img_s"] = len(paths) / result["attribute_s"]
    result["driver_peak_rss_mb"] = round(peak_rss_mb(), 1)
    with open(args.records, "wb") as handle:
        pickle.dump(records, handle)
    print(json.dumps(result))


def same_records(a: list, b: list) -> list[str]:
    """What differs between two runs' records (empty: the same)."""
    import math

    problems = []
    if [r.path for r in a] != [r.path for r in b]:
        return ["the files are not the same, or not in the same order"]
    for x, y in zip(a, b):
        if (x.error, x.warnings, x.skipped, x.regime) != (y.error, y.warnings, y.skipped, y.regime):
            problems.append(f"{x.path}: error, warnings or regime differ")
        elif (x.attribution is None) != (y.attribution is None):
            problems.append(f"{x.path}: attributed in one run only")
        elif x.attribution is not None:
            p, q = x.attribution, y.attribution
            if (p.candidate, p.verdict) != (q.candidate, q.verdict) or not math.isclose(
                p.score, q.score, rel_tol=1e-5, abs_tol=1e-6
            ):
                problems.append(f"{x.path}: {p.candidate} {p.verdict} {p.score} vs {q.candidate} {q.verdict} {q.score}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--model", default=None)
    parser.add_argument("--refs", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--engine", choices=["single", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        run_engine(args)
        return

    weights, store_path = model_and_store(args.model, args.refs)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        paths = make_jpegs(tmp / "images", args.n)
        print(
            f"made {args.n} JPEGs in {time.perf_counter() - t0:.1f}s; model {weights}, store {store_path}",
            file=sys.stderr,
        )
        files = tmp / "files.txt"
        files.write_text("\n".join(str(p) for p in paths))
        results, records = {}, {}
        for engine in ("single", "ray"):
            out = tmp / f"{engine}.pkl"
            cmd = [
                sys.executable,
                __file__,
                "--engine",
                engine,
                "--files",
                str(files),
                "--records",
                str(out),
                "--model",
                str(weights),
                "--refs",
                "-" if store_path is None else str(store_path),
                "--device",
                args.device,
                "--batch-size",
                str(args.batch_size),
                "--ray-cpus",
                str(args.ray_cpus),
            ]
            cmd += [] if args.workers is None else ["--workers", str(args.workers)]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
            results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
            results[engine]["process_wall_s"] = time.perf_counter() - t0
            with open(out, "rb") as handle:
                records[engine] = pickle.load(handle)
        problems = same_records(records["single"], records["ray"])
        summary = {
            "n_images": args.n,
            "model": str(weights),
            "device": args.device,
            "cpus": os.cpu_count(),
            "batch_size": args.batch_size,
            **results,
            "records_equal": not problems,
            "speedup": results["ray"]["img_s"] / results["single"]["img_s"],
        }
        print(json.dumps(summary, indent=2))
        if problems:
            raise SystemExit("the engines disagree:\n" + "\n".join(problems[:20]))


if __name__ == "__main__":
    main()
