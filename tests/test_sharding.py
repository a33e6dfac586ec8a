"""``--shard i/n``: a partition of any file list, stable when files are added."""

from __future__ import annotations

from pathlib import Path

import pytest

from osma_cli.errors import UsageError
from osma_cli.sharding import Shard, shard_of


def names(n: int, prefix: str = "img") -> list[Path]:
    return [Path(f"data/{prefix}_{i:05d}.png") for i in range(n)]


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_partition_the_list_in_order(count: int):
    files = names(2000)
    shards = [Shard(i, count).select(files) for i in range(1, count + 1)]
    assert sorted(p for shard in shards for p in shard) == sorted(files)  # each file exactly once
    for shard in shards:
        assert shard == [p for p in files if p in set(shard)]  # listing order kept
        assert abs(len(shard) - len(files) / count) < 5 * (len(files) / count) ** 0.5  # about 1/n each


def test_adding_files_moves_no_file_to_another_shard():
    before = names(500)
    after = sorted(before + names(120, prefix="late"))
    for i in (1, 2, 3, 4):
        shard = Shard(i, 4)
        assert set(shard.select(before)) == set(shard.select(after)) & set(before)


def test_the_shard_is_the_path_hash_known_answer():
    import hashlib

    digest = hashlib.sha256(b"data/img_00007.png").digest()
    assert shard_of("data/img_00007.png", 5) == int.from_bytes(digest[:8], "big") % 5
    assert shard_of(Path("data/img_00007.png"), 5) == shard_of("data/img_00007.png", 5)


@pytest.mark.parametrize(
    "text,message",
    [
        ("0/4", "counted from 1"),
        ("5/4", "between 1/4 and 4/4"),
        ("1/0", "between"),
        ("a/b", "not of the form"),
        ("3", "not of the form"),
    ],
)
def test_bad_shard_specs_are_refused(text: str, message: str):
    with pytest.raises(UsageError) as err:
        Shard.parse(text)
    assert message in str(err.value) + str(err.value.hint or "")


def test_parse_round_trips():
    assert Shard.parse(" 2 / 8 ") == Shard(2, 8) and str(Shard(2, 8)) == "2/8"
