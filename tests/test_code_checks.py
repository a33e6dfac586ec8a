"""The code stays lint-clean (ruff) and type-clean (mypy), as configured in pyproject.toml.

Both tools come with the test extra (``pip install -e '.[test]'``), so CI runs these; a
missing tool fails rather than skips, so that a CI without it cannot pass unchecked.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run_tool(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]' (the test extra installs it)")
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"{module} {' '.join(args)} found problems:\n{done.stdout}{done.stderr}"


def test_ruff_finds_nothing():
    run_tool("ruff", "check", ".")


def test_mypy_finds_nothing():
    run_tool("mypy")


def test_ruff_format_changes_nothing():
    run_tool("ruff", "format", "--check", ".")
