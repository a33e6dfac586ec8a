"""A grid of thumbnails, to see at a glance what a group of images has in common."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from osma_cli.atomic import atomic_write

THUMB = 96
MAX_THUMBS = 16
COLUMNS = 4
BACKGROUND = (32, 32, 32)


def contact_sheet(
    paths: Sequence[Path], *, thumb: int = THUMB, limit: int = MAX_THUMBS, columns: int = COLUMNS
) -> Image.Image:
    """Up to ``limit`` images as ``thumb``-pixel thumbnails, ``columns`` to a row; unreadable ones left blank."""
    shown = list(paths)[:limit]
    cols = max(1, min(columns, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    sheet = Image.new("RGB", (cols * thumb, rows * thumb), BACKGROUND)
    for i, path in enumerate(shown):
        try:
            with Image.open(path) as image:
                small = image.convert("RGB")
                small.thumbnail((thumb, thumb))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        x, y = (i % cols) * thumb, (i // cols) * thumb
        sheet.paste(small, (x + (thumb - small.width) // 2, y + (thumb - small.height) // 2))
    return sheet


def write_contact_sheet(path: Path | str, paths: Sequence[Path], **kwargs) -> None:
    """``contact_sheet`` as a PNG at ``path``, written atomically."""
    sheet = contact_sheet(paths, **kwargs)
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
