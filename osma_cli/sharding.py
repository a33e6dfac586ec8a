"""Which files a shard of a run takes: ``--shard i/n``, for a Slurm array or any scheduler.

Each file goes to the shard given by a hash of its path as listed, not by its position in
the list: so the shards partition any list (every file in exactly one shard), each takes
about 1/n of it, and a file added to the folders later joins one shard without moving any
other file to another. The shards of one run must be given the same paths, written the
same way (``data/`` and ``./data/`` are different texts); ``osma merge`` then checks that
every file is in exactly one part.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from osma_cli.errors import UsageError

T = TypeVar("T")

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def shard_of(path: str | os.PathLike, count: int) -> int:
    """The 0-based shard of ``path`` among ``count``: its path's bytes hashed, modulo ``count``."""
    digest = hashlib.sha256(os.fsencode(path)).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based, as people count: ``1/4`` .. ``4/4``) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UsageError(
                f"--shard {self.index}/{self.count}: the shard must be between 1/{self.count} "
                f"and {self.count}/{self.count}",
                hint="shards are counted from 1 (a 0-based array index i is --shard $((i+1))/n)",
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SPEC.match(text)
        if match is None:
            raise UsageError(f"--shard {text!r} is not of the form i/n", hint="for example --shard 2/8")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, path: str | os.PathLike) -> bool:
        return shard_of(path, self.count) == self.index - 1

    def select(self, paths: Sequence[T], key=lambda p: p) -> list[T]:
        """The items of ``paths`` this shard takes, in their order (``key`` gives each one's path)."""
        return [p for p in paths if self.holds(key(p))]
