"""How the core reports progress without knowing who draws it (the CLI's bars, or nothing).

A ``ProgressFactory`` is ``progress(description, total)`` -> a context manager yielding
``advance(n)``, as ``osma_cli.cli.output.progress_bar``; a ``Log`` takes one line for people.
Defined once here, so the benchmark, its sources and the zoo's build take the same callbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
Log = Callable[[str], None]


@contextlib.contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress factory that shows nothing, for callers without a display."""
    yield lambda n: None


def no_log(message: str) -> None:
    """A log that drops every line, for callers without a display."""
