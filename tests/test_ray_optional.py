"""Ray stays optional: everything imports without it, and the engine says how to install it.

Runs whether Ray is installed or not: a child process hides it (``sys.modules["ray"] = None``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WITHOUT_RAY = """
import sys
sys.modules["ray"] = None
import osma_cli, osma_cli.api, osma_cli.cli.app, osma_cli.ray_engine
from osma_cli.errors import UsageError
assert "ray" not in [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] == "ray"]
try:
    osma_cli.ray_engine.import_ray()
except UsageError as exc:
    print(exc.hint)
"""


def test_osma_imports_without_ray_and_the_engine_names_the_extra():
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pip install 'osma[ray]'"
