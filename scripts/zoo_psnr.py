"""PSNR of every zoo generator by content: held-out camera tiles, held-out KAIR tiles, and
fresh dead-leaves images (seed other than the training set's), as a Markdown table.

    python scripts/zoo_psnr.py [--root $OSMA_HOME/benchmarks/zoo] [--weights weights/zoo]

Camera and KAIR figures come from a finished build (real tile vs generated tile, every
tile the generator made); dead-leaves figures re-run each generator on 4 new images.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from osma_cli.data.decode import load_rgb
from osma_cli.zoo.deadleaves import dead_leaves_set
from osma_cli.zoo.materialise import default_root, read_manifest
from osma_cli.zoo.photos import PhotoSet
from osma_cli.zoo.recipe import REAL, default_recipe
from osma_cli.zoo.render import deterministic_torch, psnr, render
from osma_cli.zoo.store import load_generator, shipped_zoo_dir, weights_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    root, weights = args.root or default_root(), args.weights or shipped_zoo_dir()
    recipe = default_recipe()
    manifest = read_manifest(root)
    if manifest is None:
        raise SystemExit(f"no finished build in {root}")
    domain = {p.id: p.domain for p in PhotoSet.open(recipe.photos).photos}
    fresh = dead_leaves_set(4, recipe.tile, seed=recipe.training.deadleaves_seed + 1)
    print("| generator | trained on | PSNR cameras | PSNR KAIR | PSNR dead leaves | stored PSNR |")
    print("|---|---|---|---|---|---|")
    for spec in recipe.generators:
        scores = defaultdict(list)
        prefix = f"dataset/zoo/fake/{spec.name}/"
        for relpath in manifest.images:
            if relpath.startswith(prefix):
                name = relpath[len(prefix) : -4]
                real = f"dataset/zoo/{REAL}/{name}.png"
                photo = name.rsplit("-y", 1)[0]
                scores[domain[photo]].append(psnr(load_rgb(root / real), load_rgb(root / relpath)))
        model, record = load_generator(weights_path(weights, spec.name))
        with deterministic_torch():
            scores["deadleaves"] = [psnr(im, render(model, im)) for im in fresh]
        cells = [f"{np.mean(scores[d]):.2f}" for d in ("cameras", "kair", "deadleaves")]
        print(
            f"| {spec.name} | {spec.dataset} | {' | '.join(cells)} | "
            f"{record.metrics.get('psnr_heldout', float('nan')):.2f} |"
        )


if __name__ == "__main__":
    main()
