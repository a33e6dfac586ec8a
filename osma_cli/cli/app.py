"""The ``osma`` Typer application and its error boundary.

Every command is registered through ``command``, which turns an anticipated ``OsmaError``
into one clean message on stderr and the error's exit code (the same under Typer's test
runner as in a shell). A reader of stdout that goes away (``osma ... | head -1``) ends the
command quietly with 141, the status of a process killed by SIGPIPE. Unanticipated errors
keep their traceback: they are bugs.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Callable

import typer

from osma_cli.cli import attribute, demo, detect, evaluate, info, references, train
from osma_cli.cli.options import HELP_SETTINGS, Command, Group
from osma_cli.cli.zoo import zoo_app
from osma_cli.errors import EXIT_BROKEN_PIPE, OsmaError, TooFewReadable


def handle_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
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


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer)
        pass


def command(target: typer.Typer, name: str, func: Callable) -> None:
    target.command(name, cls=Command)(handle_errors(func))


app = typer.Typer(
    name="osma",
    help="Open-set model attribution: which known generator made an image, or unknown.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
    cls=Group,
    context_settings=HELP_SETTINGS,  # -h as well as --help, for every command (inherited)
)


def show_version(value: bool) -> None:
    if value:
        import osma_cli

        typer.echo(f"osma {osma_cli.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option(
        "--version", help="Show osma's version and exit.", callback=show_version, is_eager=True)] = False) -> None:
    pass

command(app, "attribute", attribute.attribute)
command(app, "detect", detect.detect)
command(app, "build", references.build)
command(app, "enroll", references.enroll)
command(app, "calibrate", evaluate.calibrate)
command(app, "train", train.train)
command(app, "pretrain", train.pretrain)
command(app, "benchmark", evaluate.benchmark)
command(app, "info", info.info)
command(app, "demo", demo.demo)
refs_app = typer.Typer(help="List, show and remove the generators in a reference store.",
                       no_args_is_help=True, rich_markup_mode="markdown", cls=Group)
command(refs_app, "list", references.refs_list)
command(refs_app, "show", references.refs_show)
command(refs_app, "remove", references.refs_remove)
app.add_typer(refs_app, name="refs")
app.add_typer(zoo_app, name="zoo")


def main() -> None:
    app()
