"""Fixtures the CLI tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app


@pytest.fixture
def built_store(tmp_path: Path, tiny_weights: Path, image_tree: Path) -> Path:
    """A reference store made by ``osma build`` from the two-generator tree with the tiny model."""
    refs = tmp_path / "refs.h5"
    result = CliRunner().invoke(
        app,
        ["build", str(image_tree), "--out", str(refs), "--model", str(tiny_weights), "--workers", "0"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return refs
