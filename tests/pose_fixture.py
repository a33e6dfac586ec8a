"""A tiny benchmark in exactly the POSE layout, for tests that read or run benchmarks.

Same file names, ``./dataset/OSMA/...`` paths, TAB separators, real images under
``real/`` (one file name with spaces, as in POSE), per-kind unknown files, and POSE's
label numbering of unknowns. Each generator leaves its own "fingerprint": a periodic tile
added to smooth content, as up-sampling layers do. The unseen-seed generator shares half of
its known sibling's tile, the unseen-architecture one has a tile of another period, and the
unseen-dataset one reuses a known tile on other content: easy to tell apart in principle,
not trivially.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from osma_cli.evaluation.sources import PoseAnnotations, write_pose_annotations

SPLIT = "split1"
CLASS_NAMES = ("real", "ProGAN/multiseed_celeba/seed_v0", "styleGAN/cat")
"""The class names ``load_pose_split`` derives from the fixture's folders, by label."""
UNKNOWN_GENERATORS = {
    "seed": "ProGAN/multiseed_celeba/seed_v1",
    "arch": "MMDGAN/celeba",
    "dataset": "styleGAN/airplane",
}
"""The one unknown generator of each kind, by the name derived from its folder."""
KNOWN_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class _Generator:
    folders: tuple[str, ...]
    tile: np.ndarray | None
    hue: float


def _tile(seed: int, period: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, size=(period, period, 3))


def _generators() -> dict[str, _Generator]:
    progan = _tile(101, 4)
    stylegan = _tile(202, 4)
    root = "dataset/OSMA"
    return {
        "real": _Generator((f"{root}/real/FF_c23_youtube/000", f"{root}/real/summer"), None, 0.0),
        "progan_v0": _Generator((f"{root}/fake/ProGAN/multiseed_celeba/seed_v0",), progan, 0.3),
        "stylegan_cat": _Generator((f"{root}/fake/styleGAN/cat",), stylegan, 1.2),
        "progan_v1": _Generator(
            (f"{root}/fake/ProGAN/multiseed_celeba/seed_v1",), (progan + _tile(303, 4)) / np.sqrt(2), 0.3
        ),
        "mmdgan": _Generator((f"{root}/fake/MMDGAN/celeba",), _tile(404, 8), 0.3),
        "stylegan_airplane": _Generator((f"{root}/fake/styleGAN/airplane",), stylegan, 2.4),
    }


def _image(gen: _Generator, rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    channel = np.array([0.0, 2.1, 4.2]) + gen.hue
    content = 128 + 60 * np.sin(xx[..., None] / 9.0 + phase[0] + channel) * np.cos(yy[..., None] / 11.0 + phase[1])
    if gen.tile is not None:
        reps = (size // gen.tile.shape[0] + 1, size // gen.tile.shape[1] + 1, 1)
        content = content + 18 * np.tile(gen.tile, reps)[:size, :size]
    content = content + rng.normal(0, 2, size=content.shape)
    return np.clip(content, 0, 255).astype(np.uint8)


def _write(root: Path, gen: _Generator, part: str, n: int, seed: int, size: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = gen.folders[i % len(gen.folders)]
        name = f"2011-06-26 19:33:{i:02d}_{part}.png" if folder.endswith("summer") else f"{part}_{i:03d}.png"
        relative = f"{folder}/{name}"
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(gen, rng, size), mode="RGB").save(target)
        paths.append(relative)
    return paths


def make_pose_fixture(root: Path, n_per_class: int = 4, size: int = 48) -> Path:
    """Write the images and annotations of split1 under ``root``; return the data root.

    Three known classes (0 "real", 1 and 2 generators) with ``n_per_class`` images in each
    of train, val and test, and one unknown generator of each kind (seed, arch, dataset)
    with ``n_per_class`` images. Images are ``size`` x ``size`` RGB PNGs, seeded, so two
    calls write identical files.
    """
    root = Path(root)
    gens = _generators()
    known = ("real", "progan_v0", "stylegan_cat")
    lines: dict[str, list[tuple[str, int]]] = {part: [] for part in KNOWN_PARTS}
    for label, key in enumerate(known):
        for p, part in enumerate(KNOWN_PARTS):
            paths = _write(root, gens[key], part, n_per_class, seed=100 * label + p, size=size)
            lines[part].extend((path, label) for path in paths)
    order = np.random.default_rng(7).permutation(len(lines["train"]))
    lines["train"] = [lines["train"][i] for i in order]
    unknown = {}
    for k, (kind, key) in enumerate((("seed", "progan_v1"), ("arch", "mmdgan"), ("dataset", "stylegan_airplane"))):
        paths = _write(root, gens[key], "test", n_per_class, seed=1000 + k, size=size)
        unknown[kind] = [(path, 0) for path in paths]
    write_pose_annotations(
        root, SPLIT, PoseAnnotations(train=lines["train"], val=lines["val"], test=lines["test"], unknown=unknown)
    )
    return root
