"""``--help`` for every command: nothing swallowed, no Python internals, ``-h`` and ``--version``."""

from __future__ import annotations

import re

import typer.main
from typer.testing import CliRunner

from osma_cli.cli.app import app
from tests.cli.test_cli import all_commands

runner = CliRunner()
TAG = re.compile(r"<[A-Za-z_]+>")


def flat(text: str) -> str:
    """Help text without its box drawing and whitespace (rich folds lines anywhere)."""
    return re.sub(r"[\s│╭╮╰╯─┃]+", "", text)


def test_every_help_shows_its_tags_and_no_python_internals():
    root = typer.main.get_command(app)
    for name, cmd in [("", root), *all_commands(root)]:
        for flag in ("--help", "-h"):
            result = runner.invoke(app, [*name.split(), flag], catch_exceptions=False)
            assert result.exit_code == 0, (name, flag, result.output)
            shown = flat(result.output)
            texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
            for tag in {t for text in texts for t in TAG.findall(text)}:
                assert tag in shown, f"`osma {name} {flag}` swallows {tag}"
            for internal in ("<bool>", "<list[", "{paths}", "{root}", "{name}", "{dirs}"):
                assert internal not in result.output, f"`osma {name} {flag}` shows {internal}"


def test_version():
    import osma_cli

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"osma {osma_cli.__version__}"


def test_max_pixels_default_is_shown_and_is_the_decoders():
    from osma_cli.cli.options import MAX_PIXELS
    from osma_cli.data import DEFAULT_MAX_PIXELS

    assert MAX_PIXELS == DEFAULT_MAX_PIXELS
    text = flat(runner.invoke(app, ["attribute", "--help"]).output)
    assert "67,108,864" in text and "MBperdecodeworker" in text


def test_benchmark_help_lists_the_builtin_splits():
    from osma_cli.cli.evaluate import BUILTIN_SPLITS
    from osma_cli.zoo.recipe import default_recipe

    assert list(BUILTIN_SPLITS) == [s.name for s in default_recipe().splits]
    shown = flat(runner.invoke(app, ["benchmark", "--help"]).output)
    assert all(split in shown for split in BUILTIN_SPLITS)
