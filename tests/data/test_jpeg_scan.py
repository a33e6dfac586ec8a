"""The compressed-data check of sequential JPEGs: silent on intact files, names constructed damage.

Two kinds of files: Pillow's (libjpeg's encoder, many settings) and camera photos, which
must pass; and tiny JPEGs written here bit by bit with two small Huffman tables, whose
exact block counts and fault positions are known, to check the MCU arithmetic and each
fault's message.
"""

from __future__ import annotations

import io
import os
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osma_cli.data.decode import decode_image
from osma_cli.data.integrity import jpeg_warnings
from osma_cli.data.jpeg_scan import BUDGET_VARIABLE, DEFAULT_BUDGET, check_budget, scan_warnings
from osma_cli.errors import UsageError

CAMERAS = Path("/work/shared/data/real/cameras")


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    smooth = np.stack([xx * 2.0, yy * 2.0, (xx + yy) * 1.0], -1) % 256
    return np.clip(smooth + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)


def pillow_jpeg(width: int = 64, height: int = 48, mode: str = "RGB", **options) -> bytes:
    image = Image.fromarray(picture(width, height))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def scan_start(data: bytes) -> int:
    """Where the first scan's compressed data begins."""
    at = data.index(b"\xff\xda")
    return at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]


def cut_in_the_middle(data: bytes) -> bytes:
    """The first half of the compressed data, then EOI: the markers stay intact."""
    middle = (scan_start(data) + len(data)) // 2
    while data[middle - 1] == 0xFF:
        middle -= 1
    return data[:middle] + b"\xff\xd9"


CLEAN_KINDS = {
    **{f"q{q}": dict(quality=q) for q in (10, 30, 50, 75, 90, 95, 100)},
    **{f"subsampling-{s}": dict(quality=90, subsampling=s) for s in (0, 1, 2)},
    "optimized-tables": dict(quality=85, optimize=True),
    "restart-every-3-blocks": dict(quality=90, restart_marker_blocks=3),
    "restart-every-row": dict(quality=90, restart_marker_rows=1),
    "odd-size-37x21": dict(quality=90, size=(37, 21)),
    "odd-size-1x1": dict(quality=90, size=(1, 1)),
    "odd-size-250x3": dict(quality=90, size=(250, 3), subsampling=2),
    "greyscale": dict(quality=90, mode="L"),
    "greyscale-odd": dict(quality=75, mode="L", size=(13, 29)),
    "cmyk": dict(quality=90, mode="CMYK"),
}


def make_kind(kind: str) -> bytes:
    options = dict(CLEAN_KINDS[kind])
    width, height = options.pop("size", (64, 48))
    return pillow_jpeg(width, height, **options)


@pytest.mark.parametrize("kind", sorted(CLEAN_KINDS))
def test_intact_pillow_jpegs_pass_and_are_really_checked(kind):
    data = make_kind(kind)
    assert scan_warnings(data, None) == []
    # the same file with half its compressed data gone is caught: the check did run on this kind
    [warning] = scan_warnings(cut_in_the_middle(data), None)
    assert warning.startswith("jpeg: ") and warning.endswith("(corrupt data)")


def test_progressive_jpegs_are_not_checked():
    data = pillow_jpeg(progressive=True)
    assert scan_warnings(data, None) == []
    assert scan_warnings(cut_in_the_middle(data), None) == []


def camera_photos(every: int) -> list[Path]:
    if not CAMERAS.is_dir():
        return []
    files = sorted(p for p in CAMERAS.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
    return files[::every]


@pytest.mark.skipif(not camera_photos(1), reason=f"no camera photos under {CAMERAS}")
@pytest.mark.parametrize("index", range(6))
def test_camera_photos_pass_in_full(index):
    photos = camera_photos(40)
    if index >= len(photos):
        pytest.skip("fewer camera photos than sampled")
    data = photos[index].read_bytes()
    assert scan_warnings(data, None) == []


def test_a_run_of_one_bits_is_a_bad_huffman_code():
    """No Huffman table libjpeg writes has a 16-bit code of all ones."""
    data = pillow_jpeg(96, 96, quality=90)
    at = (scan_start(data) + len(data)) // 2
    while data[at - 1] == 0xFF:
        at += 1
    damaged = data[:at] + b"\xff\x00" * 8 + data[at + 16 :]
    [warning] = jpeg_warnings(damaged)
    assert warning.startswith("jpeg: bad Huffman code in the compressed data near byte ")
    near = int(warning.split("near byte ")[1].split()[0])
    assert at <= near <= at + 16


@pytest.mark.parametrize("extra", [1, 5, 40])
def test_garbage_before_the_end_marker_is_extraneous(extra):
    data = pillow_jpeg(quality=90)
    damaged = data[:-2] + bytes(range(1, extra + 1)) + data[-2:]
    [warning] = jpeg_warnings(damaged)
    assert "extraneous bytes after the last block" in warning
    assert warning.startswith(f"jpeg: {extra} extraneous bytes after the last block near byte ")


def test_cut_short_compressed_data_ends_early():
    data = pillow_jpeg(quality=90)
    [warning] = jpeg_warnings(cut_in_the_middle(data))
    assert warning.startswith("jpeg: compressed data ends before the last block at byte ")


def test_damage_reaches_the_file_record(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut_in_the_middle(pillow_jpeg(quality=90)))
    decoded = decode_image(path)
    assert decoded.pixels.shape == (48, 64, 3)
    assert any("compressed data ends before the last block" in w for w in decoded.warnings)


def test_random_damage_never_raises():
    rng = random.Random(0)
    sources = [make_kind(kind) for kind in ("q90", "restart-every-3-blocks", "greyscale", "optimized-tables")]
    for trial in range(300):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(2, len(data))] ^= 1 << rng.randrange(8)
        if trial % 3 == 0:
            data = data[: rng.randrange(2, len(data))] + b"\xff\xd9"
        found = scan_warnings(bytes(data), rng.choice([None, 64, 500]))
        assert len(found) <= 1 and all(isinstance(w, str) for w in found)


def test_budget_bounds_the_check():
    data = cut_in_the_middle(pillow_jpeg(256, 256, quality=95))
    assert scan_warnings(data, None) != []
    assert scan_warnings(data, 1000) == []  # the fault is past the first 1000 bytes


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.delenv(BUDGET_VARIABLE, raising=False)
    assert check_budget() == DEFAULT_BUDGET
    monkeypatch.setenv(BUDGET_VARIABLE, "all")
    assert check_budget() is None
    monkeypatch.setenv(BUDGET_VARIABLE, "5000")
    assert check_budget() == 5000
    monkeypatch.setenv(BUDGET_VARIABLE, "lots")
    with pytest.raises(UsageError, match=BUDGET_VARIABLE):
        check_budget()


# Tiny JPEGs written bit by bit. DC table: "0" category 0, "10" category 12 (beyond 8 bits),
# "11" no code. AC table: "00" end of block, "01" run 0 size 1 (+1 bit), "100" ZRL,
# "101" run 15 size 1 (+1 bit), "110" run 0 size 11 (beyond 8 bits), "111" no code.
DC_TABLE = bytes([1, 1] + [0] * 14) + bytes([0x00, 0x0C])
AC_TABLE = bytes([0, 2, 3] + [0] * 13) + bytes([0x00, 0x01, 0xF0, 0xF1, 0x0B])
EMPTY = "0" + "00"
"""A block: DC difference 0, end of block."""
FULL = "0" + "011" * 63
"""A block with all 63 AC coefficients coded: it ends without an end-of-block code."""


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def entropy_bytes(bits: str) -> bytes:
    """Padded with ones to a whole byte, each 0xFF stuffed with 0x00."""
    bits += "1" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    return raw.replace(b"\xff", b"\xff\x00")


def tiny_jpeg(
    width: int, height: int, factors: list[tuple[int, int]], scans: list[tuple[list[int], list[str]]], restart: int = 0
) -> tuple[bytes, list[int]]:
    """A JPEG with components of ``factors``; each scan: (its component indices, its intervals' bits).

    Returns the file and where each scan's compressed data begins.
    """
    frame = struct.pack(">BHHB", 8, height, width, len(factors)) + b"".join(
        bytes([i + 1, h << 4 | v, 0]) for i, (h, v) in enumerate(factors)
    )
    out = b"\xff\xd8" + segment(0xDB, bytes([0] + [1] * 64)) + segment(0xC0, frame)
    out += segment(0xC4, b"\x00" + DC_TABLE + b"\x10" + AC_TABLE)
    if restart:
        out += segment(0xDD, struct.pack(">H", restart))
    starts = []
    for components, intervals in scans:
        out += segment(
            0xDA, bytes([len(components)]) + b"".join(bytes([c + 1, 0]) for c in components) + bytes([0, 63, 0])
        )
        starts.append(len(out))
        out += b"".join(
            entropy_bytes(bits) + (bytes([0xFF, 0xD0 + i % 8]) if i < len(intervals) - 1 else b"")
            for i, bits in enumerate(intervals)
        )
    return out + b"\xff\xd9", starts


def blocks(n: int, block: str = EMPTY) -> str:
    return block * n


# 37x21 pixels, 4:2:0: luma 5x3 blocks, chroma ceil(19/8) x ceil(11/8) = 3x2; interleaved 3x2 MCUs of 6 blocks.
SUBSAMPLED = [(2, 2), (1, 1), (1, 1)]


def test_tiny_jpegs_decode_in_pillow():
    """The hand-made files are real JPEGs: libjpeg decodes them without complaint."""
    for data, _ in (
        tiny_jpeg(16, 8, [(1, 1)], [([0], [FULL + EMPTY])]),
        tiny_jpeg(37, 21, SUBSAMPLED, [([0, 1, 2], [blocks(36)])]),
        tiny_jpeg(37, 21, SUBSAMPLED, [([0], [blocks(15)]), ([1], [blocks(6)]), ([2], [blocks(6)])]),
    ):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size in ((16, 8), (37, 21))


def test_block_counts_of_interleaved_and_single_component_scans():
    interleaved, _ = tiny_jpeg(37, 21, SUBSAMPLED, [([0, 1, 2], [blocks(36)])])
    assert scan_warnings(interleaved, None) == []
    separate, _ = tiny_jpeg(37, 21, SUBSAMPLED, [([0], [blocks(15)]), ([1], [blocks(6)]), ([2], [blocks(6)])])
    assert scan_warnings(separate, None) == []
    short, _ = tiny_jpeg(37, 21, SUBSAMPLED, [([0], [blocks(15)]), ([1], [blocks(5)]), ([2], [blocks(6)])])
    [warning] = scan_warnings(short, None)
    assert warning.startswith("jpeg: compressed data ends before the last block")
    long, starts = tiny_jpeg(37, 21, SUBSAMPLED, [([0], [blocks(15 + 8)]), ([1], [blocks(6)]), ([2], [blocks(6)])])
    # 23 blocks of 3 bits: 69 bits, 9 bytes; 15 blocks need 45 bits: 6 bytes, 3 left over
    assert scan_warnings(long, None) == [
        f"jpeg: 3 extraneous bytes after the last block near byte {starts[0] + 6} (corrupt data)"
    ]


def test_a_block_may_end_at_coefficient_63_without_end_of_block():
    data, _ = tiny_jpeg(16, 8, [(1, 1)], [([0], [FULL + EMPTY])])
    assert scan_warnings(data, None) == []


@pytest.mark.parametrize(
    "bits, what, byte",
    [
        ("0" + "111", "bad Huffman code", 6),  # the AC code at bit 49
        ("11", "bad Huffman code", 6),  # the DC code at bit 48
        ("10" + "0" * 12, "magnitude category out of range", 6),
        ("0" + "110" + "0" * 11, "magnitude category out of range", 6),
        ("0" + "100" * 3 + "1011", "AC coefficient index past 63", 7),  # found after the code that ends at bit 62
    ],
)
def test_each_fault_is_named_where_it_is(bits, what, byte):
    # 16 empty blocks (48 bits, 6 bytes), then the fault in block 17 of 18
    data, [start] = tiny_jpeg(144, 8, [(1, 1)], [([0], [blocks(16) + bits + EMPTY])])
    assert scan_warnings(data, None) == [f"jpeg: {what} in the compressed data near byte {start + byte} (corrupt data)"]


def test_restart_intervals_are_counted():
    """6 MCUs with a restart every 2: three intervals of 2 MCUs (12 blocks) each."""
    good, _ = tiny_jpeg(37, 21, SUBSAMPLED, [([0, 1, 2], [blocks(12)] * 3)], restart=2)
    assert scan_warnings(good, None) == []
    missing, _ = tiny_jpeg(37, 21, SUBSAMPLED, [([0, 1, 2], [blocks(12)] * 2)], restart=2)
    assert scan_warnings(missing, None) == [
        "jpeg: compressed data ends early: 1 of 3 restart intervals missing (corrupt data)"
    ]
    extra, starts = tiny_jpeg(37, 21, SUBSAMPLED, [([0, 1, 2], [blocks(12)] * 4)], restart=2)
    [warning] = scan_warnings(extra, None)
    assert warning.startswith("jpeg: 5 extraneous bytes after the last block of the scan at byte ")
    short, _ = tiny_jpeg(37, 21, SUBSAMPLED, [([0, 1, 2], [blocks(12), blocks(11), blocks(12)])], restart=2)
    [warning] = scan_warnings(short, None)
    assert warning.startswith("jpeg: compressed data ends before the last block (restart interval 1 of 3)")


def test_extended_sequential_12_bit_allows_wider_categories():
    data, _ = tiny_jpeg(16, 8, [(1, 1)], [([0], ["10" + "0" * 12 + "00" + EMPTY])])
    data = data.replace(b"\xff\xc0", b"\xff\xc1", 1)
    at = data.index(b"\xff\xc1") + 4
    assert scan_warnings(data[:at] + b"\x0c" + data[at + 1 :], None) == []  # 12-bit: DC category 12 is valid
    assert scan_warnings(data, None) != []  # 8-bit: it is not


@pytest.mark.skipif(os.environ.get("OSMA_SLOW_TESTS") != "1", reason="all camera photos: set OSMA_SLOW_TESTS=1")
def test_all_camera_photos_pass_in_full():
    assert [p for p in camera_photos(1) if scan_warnings(p.read_bytes(), None)] == []


def test_a_bad_budget_in_the_environment_is_a_usage_error_before_any_work(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from osma_cli.cli.app import app
    from osma_cli.errors import EXIT_USAGE

    monkeypatch.setenv(BUDGET_VARIABLE, "lots")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.jpg")
    result = CliRunner().invoke(app, ["attribute", str(tmp_path / "a.jpg")])
    assert result.exit_code == EXIT_USAGE and BUDGET_VARIABLE in result.stderr and "Traceback" not in result.output
