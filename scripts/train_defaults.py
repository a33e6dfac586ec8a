"""Train osma's shipped MISLNet model (`--model mislnet`) and its references with osma's own commands.

What it does, in order (each step is skipped when its output is already there, so an
interrupted run resumes; every command it runs is printed):

1. ``osma zoo build``: the built-in benchmark (its split1 known generators are training
   classes of the default model; its unknowns stay unseen).
2. ``scripts/shared_data_split.py``: the fixed train/val/test split of ``../shared/data``
   (six real generators and camera photos; the test part is listed in
   ``docs/shared_data_test_files.txt`` and never used here).
3. Folder trees of symbolic links: ``train/<class>`` (zoo split1 train known classes and the
   shared train part; ``real`` merges the zoo's real photos and the shared camera photos,
   leaving out the photos whose content is in the zoo benchmark's val or test part),
   ``val.txt`` (zoo split1 val and the shared val part, labels as ``train/``'s folders),
   ``refs-train/`` and ``refs-val/`` (the shared data only: the generators a user knows).
4. With ``--pretrain``: ``osma pretrain --simulate-cameras``, pre-training on simulated
   camera pipelines over the real training photos. The shipped model does *not* use it:
   at this budget it measured worse (docs/defaults.md).
5. ``osma train``: ProxyNCA++ (from scratch, or from the pre-trained network).
6. ``osma build`` and ``osma calibrate``: the references of ``real`` and the six real
   generators, tau accepting 95% of their validation images.
7. With ``--install``: copy weights and references into ``weights/`` (``osma-mislnet.safetensors``,
   ``references-mislnet.h5``). The default model, ``fsd``, is made by ``scripts/train_fsd_default.py``.

CPU budget (this is what the shipped defaults used, on 2 cores): 128-pixel crops; see
docs/defaults.md. The paper's recipe (256-pixel crops, 30 long epochs) is ``osma train``'s
default for users with a GPU.

Usage:
    python scripts/train_defaults.py --work /tmp/osma-scratch [--install]    # the shipped model
    python scripts/train_defaults.py --work /tmp/osma-defaults --pretrain    # the comparison
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ZOO_SPLIT = "split1"

CROP = 128
PRETRAIN = [
    "--simulate-cameras",
    "16",
    "--epochs",
    "10",
    "--samples-per-epoch",
    "3200",
    "--decay-every",
    "3",
    "--lr-decay",
    "0.65",
]
TRAIN = ["--epochs", "80", "--lr", "7e-4", "--decay-every", "10", "--lr-decay", "0.6"]


def run(args: list[str], log: Path) -> None:
    """Run one osma command, echoing it, with its output kept in ``log``."""
    print("$ " + shlex.join(args), flush=True)
    with open(log, "w") as handle:
        done = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}); see {log}")


def link(target: Path, link_path: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if not link_path.exists():
        os.symlink(target.resolve(), link_path)


def zoo_photos_in_benchmark_val_test() -> set[str]:
    """Link names (``<camera>_<nn>.jpg``, as the shared split names them) of the camera photos
    whose content the zoo benchmark uses for validation or test."""
    from osma_cli.zoo.photos import PhotoSet

    return {
        "_".join(Path(p.path).parts[1:])
        for p in PhotoSet.open().photos
        if p.domain == "cameras" and p.role == "heldout" and p.part in ("val", "test")
    }


def compose_trees(work: Path, zoo_root: Path, shared: Path) -> list[str]:
    """The training and validation trees; returns the training class names (label order)."""
    from osma_cli.evaluation.sources import load_pose_split

    split = load_pose_split(zoo_root, ZOO_SPLIT)
    names = split.class_names
    for part, images in (("train", split.train), ("val", split.val)):
        for im in images:
            link(Path(im.path), work / part / names[im.label] / f"zoo-{Path(im.path).name}")
    excluded = zoo_photos_in_benchmark_val_test()
    for part in ("train", "val"):
        for folder in sorted((shared / part).iterdir()):
            for f in sorted(folder.iterdir()):
                if folder.name == "real" and f.name in excluded:
                    continue
                link(f, work / part / folder.name / f"shared-{f.name}")
                link(f, work / f"refs-{part}" / folder.name / f.name)
    classes = sorted(p.name for p in (work / "train").iterdir())
    lines = [
        f"val/{c}/{f.name}\t{classes.index(c)}\n"
        for c in sorted(p.name for p in (work / "val").iterdir())
        for f in sorted((work / "val" / c).iterdir())
    ]
    (work / "val.txt").write_text("".join(lines))
    return classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (resumable)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument(
        "--pretrain", action="store_true", help="pre-train on simulated camera pipelines first (not the shipped recipe)"
    )
    parser.add_argument("--install", action="store_true", help="copy the results into weights/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    osma = [sys.executable, "-m", "osma_cli"]

    from osma_cli.zoo import builtin_benchmark_root

    zoo_root = builtin_benchmark_root()
    run(osma + ["zoo", "build"], work / "zoo-build.log")
    shared = work / "shared"
    if not (shared / "train").is_dir():
        run(
            [
                sys.executable,
                str(REPO / "scripts" / "shared_data_split.py"),
                "--data",
                str(args.data),
                "--out",
                str(shared),
                "--test-list",
                str(work / "shared-test-files.txt"),
            ],
            work / "split.log",
        )
    if not (work / "val.txt").is_file():
        classes = compose_trees(work, zoo_root, shared)
        print(f"{len(classes)} training classes: {', '.join(classes)}")

    seed = ["--seed", str(args.seed)]
    init: list[str] = []
    if args.pretrain:
        pretrained = work / "pretrained.safetensors"
        if not pretrained.is_file():
            run(
                osma
                + [
                    "pretrain",
                    str(work / "train" / "real"),
                    "--crop",
                    str(CROP),
                    *PRETRAIN,
                    *seed,
                    "--cache-decoded",
                    "--out",
                    str(pretrained),
                    "--force",
                ],
                work / "pretrain.log",
            )
        init = ["--init", str(pretrained)]
    model = work / "osma-default.safetensors"
    if not model.is_file():
        run(
            osma
            + [
                "train",
                str(work / "train"),
                "--val-annotations",
                str(work / "val.txt"),
                "--crop",
                str(CROP),
                *TRAIN,
                *init,
                *seed,
                "--cache-decoded",
                "--out",
                str(model),
                "--force",
            ],
            work / "train.log",
        )
    refs = work / "references.h5"
    if not refs.is_file():
        run(osma + ["build", str(work / "refs-train"), "--model", str(model), "--out", str(refs)], work / "build.log")
        run(
            osma
            + ["calibrate", str(work / "refs-val"), "--model", str(model), "--refs", str(refs), "--acceptance", "0.95"],
            work / "calibrate.log",
        )
    if args.install:
        for f, name in ((model, "osma-mislnet.safetensors"), (refs, "references-mislnet.h5")):
            shutil.copyfile(f, REPO / "weights" / name)
            print(f"installed {REPO / 'weights' / name}")


if __name__ == "__main__":
    main()
