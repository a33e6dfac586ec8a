"""The CLI's error boundary: how an anticipated failure reaches the user.

Every command runs through ``handle_errors``, which turns an ``OsmaError`` into one clean
message on stderr and the error's exit code (the same under Typer's test runner as in a
shell). A reader of stdout that goes away (``osma ... | head -1``) ends the command quietly
with 141, the status of a process killed by SIGPIPE. Unanticipated errors keep their
traceback: they are bugs.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import typer

from osma_cli.errors import EXIT_BROKEN_PIPE, OsmaError, TooFewReadable


def handle_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            check_environment()
            return func(*args, **kwargs)
        except OsmaError as exc:
            from osma_cli.cli import output

            for path, reason in exc.unreadable if isinstance(exc, TooFewReadable) else ():
                output.file_problem(path, reason)
            output.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None

    return wrapper


def check_environment() -> None:
    """Settings read from the environment, checked before any work (decode workers read them too,
    where a bad value would surface per file instead of once, as a usage error)."""
    from osma_cli.data.jpeg_scan import check_budget

    check_budget()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer)
        pass
