"""The answer to a name nobody registered (a model, a rule, a benchmark source), written once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from osma_cli.errors import UsageError


def unknown_name(what: str, name: str, known: Iterable[str], *, listing: str, n: int = 2) -> UsageError:
    """``unknown <what> 'name'; did you mean ...?`` with every registered name in the hint.

    ``listing`` names them in the hint (``available <listing>: ...``); ``n`` is how many close
    names are offered. A typo costs one reading of the message, not a search of the docs.
    """
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    suggestion = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UsageError(f"unknown {what} {name!r}{suggestion}", hint=f"available {listing}: {', '.join(names) or 'none'}")
