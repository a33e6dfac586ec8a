"""``osma demo``: a first run on sample images that ship with osma."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from osma_cli.cli import output
from osma_cli.cli.options import DeviceOpt, ModelOpt, RefsOpt


def demo(
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Where to write the sample images. Default: $OSMA_HOME/demo.",
        file_okay=False, show_default=False)] = None,
    model: ModelOpt = None,
    refs: RefsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Write two sample images (a camera photo, a generated image) and attribute them."""
    from osma_cli.cli.attribute import attribute
    from osma_cli.demo import write_demo_images
    from osma_cli.home import osma_home

    folder = out if out is not None else osma_home() / "demo"
    images = write_demo_images(folder)
    output.stdout.print(f"Sample images in {folder}:")
    for image in images:
        output.stdout.print(f"  {image.path.name}: {output.escape(image.what)}; expected verdict: "
                            f"{image.expected}")
    output.stdout.print(f"Next: `osma attribute YOUR_IMAGES/`, or `osma attribute {folder} --top 3`.\n")
    attribute([image.path for image in images], top=1, threshold=None, json_out=False, csv_out=None,
              model=model, refs=refs, device=device, batch_size=32, workers=0, crops=1, small="pad",
              max_pixels=None)
