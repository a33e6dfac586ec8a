"""Sample images for ``osma demo``, made from what osma ships (no download, no data folder).

Two files, so that a first run shows both answers osma gives:

- a camera photograph (CC0, from the zoo's shipped photos, a held-out *test* photo: the
  default model never trained on it), expected ``real``;
- another held-out camera photo re-synthesised by a zoo generator that the default model
  never saw in training and whose references are not shipped, expected ``unknown``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

DEMO_GENERATOR = "resup-kair-s0"
"""An architecture unknown of split1: not among the default model's training classes."""

TILE = 256


@dataclass(frozen=True)
class DemoImage:
    path: Path
    what: str
    expected: str


def write_demo_images(folder: Path) -> list[DemoImage]:
    """Write the two sample images into ``folder`` (created; files replaced atomically)."""
    from PIL import Image

    from osma_cli.atomic import atomic_write
    from osma_cli.data.crops import extract_crops
    from osma_cli.zoo.photos import PhotoSet
    from osma_cli.zoo.render import deterministic_torch, render
    from osma_cli.zoo.store import load_generator, shipped_zoo_dir, weights_path

    photos = PhotoSet.open()
    test = sorted((p for p in photos.photos if p.domain == "cameras" and p.part == "test"), key=lambda p: p.id)
    real_photo, other_photo = test[0], test[1]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    real_path = folder / f"camera-photo{Path(real_photo.path).suffix.lower()}"
    atomic_write(real_path, lambda tmp: shutil.copyfile(photos.file(real_photo), tmp))

    model, _ = load_generator(weights_path(shipped_zoo_dir(), DEMO_GENERATOR))
    with deterministic_torch():
        centre = extract_crops(photos.read(other_photo), TILE)[0].transpose(1, 2, 0)  # on the 8-pixel grid
        made = render(model, centre)
    made_path = folder / f"made-by-{DEMO_GENERATOR}.png"
    atomic_write(made_path, lambda tmp: Image.fromarray(made).save(tmp, format="PNG"))

    camera = real_photo.id.removeprefix("cam-").rsplit("-", 1)[0].replace("_", " ")
    return [
        DemoImage(real_path, f"a photograph straight from a {camera} camera (CC0)", "real"),
        DemoImage(
            made_path,
            f"a photograph re-synthesised by osma's zoo generator {DEMO_GENERATOR}, which the default model never saw",
            "unknown",
        ),
    ]
