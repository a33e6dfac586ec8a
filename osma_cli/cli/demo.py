"""``osma demo``: a first run on sample images that ship with osma."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from osma_cli.cli import output
from osma_cli.cli.options import DeviceOpt, JsonOpt, ModelOpt, RefsOpt


def demo(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the sample images. Default: $OSMA_HOME/demo.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    refs: RefsOpt = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Write two sample images (a camera photo, a generated image) and attribute them.

    --json: the records of `osma attribute --json` (one per line), each with the image's
    `expected` verdict; the notes go to stderr.
    """
    from osma_cli.cli.attribute import attribute_paths
    from osma_cli.demo import write_demo_images
    from osma_cli.home import osma_home

    folder = out if out is not None else osma_home() / "demo"
    images = write_demo_images(folder)
    say = output.stderr if json_out else output.stdout
    say.print(f"Sample images in {output.escape(str(folder))}:")
    for image in images:
        say.print(
            f"  {output.escape(image.path.name)}: {output.escape(image.what)}; expected verdict: {image.expected}"
        )
    say.print(f"Next: `osma attribute YOUR_IMAGES/`, or `osma attribute {output.escape(str(folder))} --top 3`.\n")
    attribute_paths(
        [image.path for image in images],
        top=1,
        threshold=None,
        json_out=json_out,
        csv_out=None,
        model=model,
        refs=refs,
        device=device,
        batch_size=32,
        workers=0,
        crops=1,
        small="pad",
        max_pixels=None,
        command="demo",
        extra={image.path: {"expected": image.expected} for image in images},
    )
