"""The output and input checks attribute, detect and discover share (``osma_cli.cli.paths``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from osma_cli.cli.app import app
from osma_cli.cli.paths import check_record_outputs, image_inputs
from osma_cli.errors import EXIT_USAGE, UsageError
from tests.conftest import write_images

runner = CliRunner()


def test_json_and_csv_on_stdout_are_refused():
    with pytest.raises(UsageError, match="both write to stdout"):
        check_record_outputs(True, Path("-"))


def test_csv_destinations(tmp_path):
    assert check_record_outputs(False, Path("-")) is True
    assert check_record_outputs(True, tmp_path / "out.csv") is False
    assert check_record_outputs(True, None) is False
    with pytest.raises(UsageError, match="is a folder"):
        check_record_outputs(False, tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        check_record_outputs(False, tmp_path / "missing" / "out.csv")


def test_image_inputs_lists_images_and_refuses_nothing(tmp_path):
    images = write_images(tmp_path / "in", "smooth", 2, seed=1, size=32)
    files, unlisted = image_inputs([tmp_path / "in"])
    assert sorted(files) == sorted(images) and unlisted == []
    with pytest.raises(UsageError, match="no image files found"):
        image_inputs([])


@pytest.mark.parametrize("command", ["attribute", "detect"])
def test_each_command_refuses_json_with_csv_to_stdout_before_loading(command, tmp_path):
    image = write_images(tmp_path / "in", "smooth", 1, seed=1, size=32)[0]
    result = runner.invoke(app, [command, str(image), "--json", "--csv", "-"])
    assert result.exit_code == EXIT_USAGE
    assert "both write to stdout" in " ".join(result.stderr.split())
