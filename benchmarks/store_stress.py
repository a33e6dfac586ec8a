"""Can a reference store be lost? Kill ``osma enroll`` and ``osma refs remove`` with SIGKILL
hundreds of times, run enrolments at once, and check every store after each step.

Works in a temporary folder with a tiny untrained model (nothing downloaded, CPU only):

1. kills: ``python -m osma_cli enroll`` (four runs in five) or ``refs remove --yes`` (one
   in five) on one store, each killed (SIGKILL): half (``--targeted``) the moment the
   writer's temporary file appears, i.e. inside the write; the others after a random delay
   around the time an uninterrupted run takes.
   After each: the store loads and validates, every enrolment or removal that finished
   (exit 0) is there (or gone), nothing appears that no command asked for, and the
   temporaries left behind belong to dead writers (the next writer clears them);
2. concurrent: rounds of N enrolments started at once into one store: all must land;
3. seeding race: N enrolments at once into a fresh ``$OSMA_HOME`` seeded from a shipped
   store on first use: all must land beside the shipped generators, the shipped file unchanged.

Prints a summary; exits 1 when any check failed.

Usage: python benchmarks/store_stress.py [--kills 200] [--concurrent 4] [--rounds 3]
                                         [--targeted 0.5] [--window 0.4,1.1] [--seed 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osma_cli.errors import OsmaError  # noqa: E402
from osma_cli.references import ReferenceStore  # noqa: E402

IMAGES_PER_GENERATOR = 3


@dataclass
class Tally:
    kills: int = 0
    targeted: int = 0
    hit_write: int = 0
    finished_first: int = 0
    left_temporary: int = 0
    max_temporaries: int = 0
    unreadable: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    concurrent_started: int = 0
    concurrent_landed: int = 0
    seeded_started: int = 0
    seeded_landed: int = 0
    shipped_changed: bool = False
    temporaries_at_end: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.unreadable
            or self.lost
            or self.unexpected
            or self.failed_runs
            or self.shipped_changed
            or self.temporaries_at_end
            or self.concurrent_landed != self.concurrent_started
            or self.seeded_landed != self.seeded_started
        )


def save_tiny_model(path: Path) -> Path:
    """An untrained mislnet as osma weights (as ``tests/conftest.py`` does)."""
    import torch

    from osma_cli.nets import get_model
    from osma_cli.weights import WeightsMeta, save_weights

    torch.manual_seed(0)
    model = get_model("mislnet")
    crop = max(32, model.min_input_size)
    save_weights(
        path,
        model,
        WeightsMeta(
            architecture="mislnet",
            embedding_dim=model.embedding_dim,
            crop_size=crop,
            l2_normalize=False,
            arch_kwargs={},
        ),
    )
    return path


def write_images(folder: Path, n: int, seed: int, size: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = np.clip(rng.normal(128, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:02d}.png")


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".seed-" in p.name)


class Osma:
    """Runs ``python -m osma_cli`` with a fixed model, home and shipped folder."""

    def __init__(self, model: Path, home: Path, shipped: Path) -> None:
        self.model = model
        self.env = {
            **os.environ,
            "OSMA_HOME": str(home),
            "OSMA_WEIGHTS_DIR": str(shipped),
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "osma_cli", *args],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def enroll(self, folder: Path, name: str, refs: Path | None) -> subprocess.Popen:
        where = [] if refs is None else ["--refs", str(refs)]
        return self.start(
            "enroll",
            str(folder),
            "--name",
            name,
            "--model",
            str(self.model),
            "--workers",
            "0",
            "--device",
            "cpu",
            *where,
        )


def kill_inside_write(proc: subprocess.Popen, folder: Path, timeout: float) -> bool:
    """SIGKILL ``proc`` as soon as its temporary file appears in ``folder`` (mid-write)."""
    mark = f".{proc.pid}."
    deadline = time.perf_counter() + timeout
    while proc.poll() is None and time.perf_counter() < deadline:
        with os.scandir(folder) as entries:
            if any(mark in e.name and e.name.endswith(".tmp") for e in entries):
                os.kill(proc.pid, signal.SIGKILL)
                return True
        time.sleep(0.0002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return False


def finish(proc: subprocess.Popen, what: str, tally: Tally) -> bool:
    _, err = proc.communicate()
    if proc.returncode != 0:
        tally.failed_runs.append(f"{what}: exit {proc.returncode}: {err.decode(errors='replace').strip()[-300:]}")
    return proc.returncode == 0


def check_store(path: Path, must_have: set[str], may_have: set[str], step: str, tally: Tally) -> set[str]:
    try:
        names = set(ReferenceStore.load(path).names)
    except OsmaError as exc:
        tally.unreadable.append(f"{step}: {exc.message}")
        return set()
    tally.lost += [f"{step}: {n}" for n in sorted(must_have - names)]
    tally.unexpected += [f"{step}: {n}" for n in sorted(names - must_have - may_have)]
    return names


def kill_phase(osma: Osma, store: Path, folders: list[Path], args, rng: random.Random, tally: Tally) -> None:
    """Enrolments and removals killed at random points; ``present`` is what must be in the store."""
    present: set[str] = set(ReferenceStore.load(store).names)
    uncertain: set[str] = set()  # killed: may or may not have landed
    durations = []
    for i in range(2):  # how long an uninterrupted run takes, for the kill window
        t0 = time.perf_counter()
        if finish(osma.enroll(folders[i % len(folders)], f"timing{i}", store), "timing run", tally):
            present.add(f"timing{i}")
        durations.append(time.perf_counter() - t0)
    typical = float(np.median(durations))
    lo, hi = (float(x) for x in args.window.split(","))
    print(f"an uninterrupted enrolment takes {typical:.2f} s; killing after {lo:.2f}-{hi:.2f} of that", file=sys.stderr)
    for i in range(args.kills):
        removable = sorted(present - {"base-a", "base-b"})
        removing = bool(removable) and rng.random() < 0.2
        if removing:
            name = rng.choice(removable)
            proc = osma.start("refs", "remove", name, "--refs", str(store), "--yes")
        else:
            name = f"gen{i}"
            proc = osma.enroll(folders[i % len(folders)], name, store)
        if rng.random() < args.targeted:
            tally.targeted += 1
            tally.hit_write += kill_inside_write(proc, store.parent, 3 * typical)
        else:
            try:
                proc.wait(timeout=rng.uniform(lo, hi) * typical)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        tally.finished_first += proc.wait() == 0
        tally.kills += 1
        _, err = proc.communicate()
        if proc.returncode == -signal.SIGKILL:  # either outcome is right, not a third one
            present.discard(name)
            uncertain.add(name)
        elif proc.returncode == 0:
            (present.discard if removing else present.add)(name)
        else:
            tally.failed_runs.append(f"kill {i}: exit {proc.returncode}: {err.decode(errors='replace')[-300:]}")
        left = temporaries(store.parent)
        tally.left_temporary += bool(left)
        tally.max_temporaries = max(tally.max_temporaries, len(left))
        step = f"after kill {i} ({'refs remove' if removing else 'enroll'} {name})"
        names = check_store(store, present, uncertain, step, tally)
        present |= names & uncertain  # now known: it landed (or the removal did not)
        uncertain.clear()
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{args.kills} kills, {len(present)} generators", file=sys.stderr)
    if finish(osma.enroll(folders[0], "final", store), "final enrolment", tally):
        present.add("final")
    check_store(store, present, uncertain, "final", tally)
    tally.temporaries_at_end += temporaries(store.parent)


def concurrent_phase(osma: Osma, store: Path, folders: list[Path], args, tally: Tally) -> None:
    for r in range(args.rounds):
        names = [f"together{r}-{j}" for j in range(args.concurrent)]
        procs = [osma.enroll(folders[j % len(folders)], n, store) for j, n in enumerate(names)]
        tally.concurrent_started += len(names)
        for n, p in zip(names, procs):
            finish(p, f"concurrent {n}", tally)
        landed = set(ReferenceStore.load(store).names) & set(names)
        tally.concurrent_landed += len(landed)
    tally.temporaries_at_end += temporaries(store.parent)


def seeding_phase(model: Path, work: Path, base: Path, folders: list[Path], args, tally: Tally) -> None:
    shipped = work / "shipped"
    shipped.mkdir()
    shutil.copyfile(base, shipped / "references-fsd.h5")
    before = hashlib.sha256((shipped / "references-fsd.h5").read_bytes()).hexdigest()
    for r in range(args.rounds):
        home = work / f"home-seed{r}"
        osma = Osma(model, home, shipped)
        names = [f"first-use{r}-{j}" for j in range(args.concurrent)]
        procs = [osma.enroll(folders[j % len(folders)], n, None) for j, n in enumerate(names)]
        tally.seeded_started += len(names)
        for n, p in zip(names, procs):
            finish(p, f"seeding {n}", tally)
        store = home / "references-fsd.h5"
        got = check_store(store, {"base-a", "base-b", *names}, set(), f"seeding round {r}", tally)
        tally.seeded_landed += len(got & set(names))
        tally.temporaries_at_end += temporaries(home)
    after = hashlib.sha256((shipped / "references-fsd.h5").read_bytes()).hexdigest()
    tally.shipped_changed = before != after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of concurrent enrolments.")
    parser.add_argument(
        "--window", default="0.4,1.1", help="Kill after this fraction range of an uninterrupted run's time."
    )
    parser.add_argument(
        "--targeted",
        type=float,
        default=0.5,
        help="Fraction of kills aimed at the write itself (sent when the writer's "
        "temporary file appears); the others after a random delay.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="Work here and keep it (default: a temporary folder).")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="osma-stress-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    start = time.perf_counter()
    model = save_tiny_model(work / "tiny.safetensors")
    folders = []
    for j in range(8):
        folders.append(work / "images" / f"g{j}")
        write_images(folders[-1], IMAGES_PER_GENERATOR, seed=j)
    empty = work / "no-shipped"
    empty.mkdir()
    osma = Osma(model, work / "home", empty)
    store = work / "stores" / "references-fsd.h5"
    store.parent.mkdir()
    tally = Tally()
    for name, folder in (("base-a", folders[6]), ("base-b", folders[7])):
        finish(osma.enroll(folder, name, store), f"base {name}", tally)
    base = work / "base.h5"
    shutil.copyfile(store, base)

    kill_phase(osma, store, folders, args, rng, tally)
    concurrent_phase(osma, store, folders, args, tally)
    seeding_phase(model, work, base, folders, args, tally)

    elapsed = time.perf_counter() - start
    print(f"""
osma store stress ({elapsed:.0f} s, work folder {work})
  commands started to be killed         {tally.kills} ({tally.finished_first} finished before the kill)
  kills aimed at the write              {tally.targeted} ({tally.hit_write} sent while the temporary file existed)
  checks that found a dead temporary    {tally.left_temporary} (cleared by the next writer that takes the lock)
  most temporaries present at once      {tally.max_temporaries}
  stores that failed to load/validate   {len(tally.unreadable)}
  finished enrolments/removals lost     {len(tally.lost)}
  generators nobody asked for           {len(tally.unexpected)}
  commands that failed (not killed)     {len(tally.failed_runs)}
  concurrent enrolments landed          {tally.concurrent_landed}/{tally.concurrent_started} ({args.rounds} rounds of {args.concurrent})
  first-use (seeding) enrolments landed {tally.seeded_landed}/{tally.seeded_started}, shipped store changed: {tally.shipped_changed}
  temporaries left at the end           {len(tally.temporaries_at_end)}""")  # noqa: E501 (a table: one line a row)
    for label, items in (
        ("unreadable", tally.unreadable),
        ("lost", tally.lost),
        ("unexpected", tally.unexpected),
        ("failed", tally.failed_runs),
        ("left", tally.temporaries_at_end),
    ):
        for item in items[:10]:
            print(f"  {label}: {item}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print("OK" if tally.ok else "FAILED")
    sys.exit(0 if tally.ok else 1)


if __name__ == "__main__":
    main()
