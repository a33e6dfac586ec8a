"""A long run, measured end to end with the shipped default model (docs/scale.md).

Makes N generated 256x256 JPEGs (quality 90), then, each step as the command a user types,
in a fresh process:

1. one uninterrupted ``osma attribute DIR --out whole.jsonl``: images/s, peak memory;
2. the same run killed (SIGKILL) three times at random moments and resumed each time: the
   final file must equal step 1's byte for byte;
3. two shards (``--shard 1/2``, ``2/2``) and ``osma merge``: the merged file against step 1's;
4. ``--cache`` filling the cache, an enrolment into a copy of the store, then re-scoring
   every image with ``--from-cache``: its wall time, and that it described nothing.

Usage (from the repository root): python -m benchmarks.long_run [--n 10000] [--work DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.attribute_throughput import make_jpegs


def osma(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "osma_cli", *map(str, args)]


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of the command in a fresh process; exit code 0 required."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def killed_and_resumed(cmd: list[str], out: Path, kills: int, rng: random.Random, expected_s: float) -> list[int]:
    """Run ``cmd`` and SIGKILL it ``kills`` times at random moments, resuming each time; the
    records present at each kill."""
    seen = []
    for _ in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.15, 0.35) * expected_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(out.read_bytes().count(b"\n") if out.exists() else 0)
    run(cmd)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/osma-long-run"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", default="whole,killed,shards,cache")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    images = work / "images"
    if not images.exists():
        t0 = time.perf_counter()
        make_jpegs(images, args.n, seed=args.seed)
        print(f"made {args.n} JPEGs in {time.perf_counter() - t0:.0f} s", flush=True)
    result: dict = {"n_images": args.n, "cpus": os.cpu_count()}
    whole = work / "whole.jsonl"
    if "whole" in steps or not whole.exists():
        whole.unlink(missing_ok=True)
        wall, rss = run(osma("attribute", images, "--out", whole))
        result["whole"] = {"wall_s": round(wall, 1), "img_s": round(args.n / wall, 1), "peak_rss_mb": round(rss)}
        print("whole", result["whole"], flush=True)
    expected_s = result.get("whole", {}).get("wall_s", args.n / 30)
    reference = whole.read_bytes()

    if "killed" in steps:
        out = work / "killed.jsonl"
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        at = killed_and_resumed(osma("attribute", images, "--out", out), out, 3, random.Random(args.seed), expected_s)
        result["killed"] = {
            "records_at_each_kill": at,
            "identical": out.read_bytes() == reference,
            "total_wall_s": round(time.perf_counter() - t0, 1),
        }
        print("killed", result["killed"], flush=True)

    if "shards" in steps:
        parts = [work / f"shard{i}.jsonl" for i in (1, 2)]
        walls = []
        for i, part in enumerate(parts, start=1):
            part.unlink(missing_ok=True)
            walls.append(run(osma("attribute", images, "--shard", f"{i}/2", "--out", part))[0])
        merged = work / "merged.jsonl"
        wall, _ = run(osma("merge", *parts, "--out", merged, "--inputs", images))
        result["shards"] = {
            "records": [p.read_bytes().count(b"\n") for p in parts],
            "shard_wall_s": [round(w, 1) for w in walls],
            "merge_wall_s": round(wall, 1),
            "identical": merged.read_bytes() == reference,
        }
        print("shards", result["shards"], flush=True)

    if "cache" in steps:
        home = work / "home"
        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "OSMA_HOME": str(home)}
        filled = work / "cache-fill.jsonl"
        filled.unlink(missing_ok=True)
        fill_s, _ = run(osma("attribute", images, "--cache", "--out", filled), env)
        newgan = work / "newgan"
        if not newgan.exists():
            make_jpegs(newgan, 12, seed=args.seed + 1)
        run(osma("enroll", "--name", "newgan", newgan), env)
        rescored = work / "rescored.jsonl"
        rescored.unlink(missing_ok=True)
        wall, rss = run(osma("attribute", images, "--from-cache", "--out", rescored), env)
        records = [json.loads(line) for line in rescored.read_text().splitlines()]
        result["cache"] = {
            "fill_wall_s": round(fill_s, 1),
            "rescore_wall_s": round(wall, 1),
            "rescore_img_s": round(args.n / wall),
            "rescore_peak_rss_mb": round(rss),
            "rescored_ok": sum(r["status"] == "ok" for r in records),
            "now_newgan": sum(r["verdict"] == "newgan" for r in records),
        }
        print("cache", result["cache"], flush=True)
    (work / "long_run.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
