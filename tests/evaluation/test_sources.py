"""The benchmark-source registry: every source by name, duplicates refused, typos answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from osma_cli.errors import UsageError
from osma_cli.evaluation.sources import get_source, list_sources, load_pose_split, open_split, register_source
from tests.pose_fixture import SPLIT, make_pose_fixture


def test_every_source_is_registered() -> None:
    assert list_sources() == ["builtin", "manifest", "pose"]


def test_a_second_source_of_one_name_is_refused() -> None:
    with pytest.raises(UsageError, match="already registered"):
        register_source("pose")(get_source("pose"))
    assert list_sources() == ["builtin", "manifest", "pose"]


def test_an_unknown_source_is_answered_with_the_close_names() -> None:
    with pytest.raises(UsageError, match="did you mean 'pose'"):
        get_source("poses")


def test_open_split_reads_what_the_loader_reads(tmp_path: Path) -> None:
    root = make_pose_fixture(tmp_path / "pose", n_per_class=3, size=16)
    assert open_split("pose", root, SPLIT) == load_pose_split(root, SPLIT)


def test_a_source_without_its_location_says_what_it_needs() -> None:
    with pytest.raises(UsageError, match="data root"):
        open_split("pose", None, SPLIT)
    with pytest.raises(UsageError, match="manifest"):
        open_split("manifest")
