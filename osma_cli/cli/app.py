"""The ``osma`` Typer application: every command registered behind the error boundary.

``command`` registers a function through ``boundary.handle_errors`` (one clean message and
the error's exit code for an anticipated ``OsmaError``; see ``osma_cli.cli.boundary``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from osma_cli.cli import attribute, demo, detect, discover, evaluate, info, merge, references, train
from osma_cli.cli.boundary import handle_errors
from osma_cli.cli.options import HELP_SETTINGS, Command, Group
from osma_cli.cli.zoo import zoo_app


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
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="Show osma's version and exit.", callback=show_version, is_eager=True)
    ] = False,
) -> None:
    pass


command(app, "attribute", attribute.attribute)
command(app, "merge", merge.merge)
command(app, "detect", detect.detect)
command(app, "discover", discover.discover)
command(app, "build", references.build)
command(app, "enroll", references.enroll)
command(app, "calibrate", evaluate.calibrate)
command(app, "train", train.train)
command(app, "pretrain", train.pretrain)
command(app, "benchmark", evaluate.benchmark)
command(app, "info", info.info)
command(app, "demo", demo.demo)
refs_app = typer.Typer(
    help="List, show and remove the generators in a reference store.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    cls=Group,
)
command(refs_app, "list", references.refs_list)
command(refs_app, "show", references.refs_show)
command(refs_app, "remove", references.refs_remove)
app.add_typer(refs_app, name="refs")
app.add_typer(zoo_app, name="zoo")


def main() -> None:
    app()
