"""Check a sequential Huffman JPEG's compressed data, block by block, as libjpeg decodes it.

A flipped bit inside a JPEG's entropy-coded data leaves every marker in place, so the
structure check (``integrity``) passes, and libjpeg's complaints about it ("bad Huffman
code", "extraneous bytes before marker", "premature end of data segment") are warnings
that Pillow discards. This module walks the compressed data of every scan of a baseline
or extended sequential Huffman JPEG (SOF0/SOF1), one code at a time, and says where the
bit stream stops making sense: a code that is not in its Huffman table, a magnitude
category beyond the sample precision, an AC coefficient past index 63, data that ends
before the last block of a scan (or of a restart interval), or whole bytes left over
after it. Pixels are not reconstructed: a code's magnitude bits are skipped, not read.

Progressive, lossless, arithmetic-coded and hierarchical JPEGs are not checked (their
files get no finding here), nor scans that use a Huffman table the file never defines
(motion-JPEG frames rely on the standard tables), nor a frame whose height comes in a
DNL marker.

Speed: each Huffman table becomes 65536-entry lookups indexed by the next 16 bits of the
stream, giving at once how many bits the codes there and their magnitudes take and how far
the coefficient index moves (as many whole codes as the 16 bits hold: two or three short
ones per lookup), so a few codes cost one lookup and a few integer operations. Bits are
read through a list of 32-bit windows, one per byte of the de-stuffed data.
That is still Python (about 7 MB/s on one core), slower than libjpeg decoding the pixels:
``DEFAULT_BUDGET`` bounds the compressed bytes checked per file.
"""

from __future__ import annotations

import functools
import operator
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from osma_cli.errors import UsageError

DEFAULT_BUDGET = 32 * 1024
"""Compressed bytes checked per file by default (about 4 ms): all of a 256x256 or 384x384 q90 image,
the first part of a camera photo. ``$OSMA_JPEG_CHECK_BYTES`` (a number or ``all``) changes it."""
BUDGET_VARIABLE = "OSMA_JPEG_CHECK_BYTES"

_SOF_CHECKED = frozenset({0xC0, 0xC1})
_SOF_OTHER = frozenset({0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_MARKER = re.compile(rb"\xff+([^\x00\xff])")
_PAD = 4096
"""Zero bytes after the data: more than one MCU can read (10 blocks of at most 1921 bits)."""

_EOB = 128
_BAD_CODE = 256
_BAD_CATEGORY = 512
"""An AC entry is ``bits | step << 5``; these steps mark the ends that are not a coefficient.

After a block's loop the index ``k`` tells how it ended: exactly 64 (coefficient 63 was
coded), 65..127 (a coefficient past 63, or several codes at once ran past the block's
end), 129..191 (end of block), 192..255 (an end of block after such a run), 257.. (no such
code), 513.. (a category the precision does not allow)."""


_Tables = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""A component's ``first``, ``many`` and ``one`` lookups (``_block_tables``)."""


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    components: dict[int, tuple[int, int]]
    """Component id -> (horizontal, vertical) sampling factor."""
    precision: int


@dataclass(frozen=True)
class _Piece:
    """One restart interval's data: where it starts in the file and in the de-stuffed buffer."""

    file_start: int
    destuffed: bytes
    buffer_start: int


class _Unchecked(Exception):
    """The file is of a kind, or has a structure, this check does not cover."""


def check_budget() -> int | None:
    """The compressed bytes to check per file: ``$OSMA_JPEG_CHECK_BYTES`` (None for ``all``), else the default.

    Read at each call, so decode workers (which inherit the environment) follow it.
    """
    value = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not value:
        return DEFAULT_BUDGET
    if value.lower() == "all":
        return None
    if value.isdigit():
        return int(value)
    raise UsageError(f"${BUDGET_VARIABLE} must be a number of bytes or 'all', not {value!r}")


def scan_warnings(data: bytes, budget: int | None = DEFAULT_BUDGET) -> list[str]:
    """What is wrong with the compressed data of ``data`` (a whole JPEG file), at most one finding.

    ``budget`` bounds the de-stuffed compressed bytes checked (all scans together); None
    checks everything. Data past the budget is not checked, and an unchecked kind of JPEG
    gives no finding: an empty list means "nothing found", not "intact".
    """
    try:
        return _walk(data, budget)
    except _Unchecked:
        return []


def _walk(data: bytes, budget: int | None) -> list[str]:
    tables: dict[tuple[int, int], bytes] = {}
    frame: _Frame | None = None
    restart = 0
    left = budget
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise _Unchecked
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return []
        if marker in _STANDALONE:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        body = data[pos + 4 : pos + 2 + length]
        end = pos + 2 + length
        if marker in _SOF_OTHER:
            raise _Unchecked
        if marker in _SOF_CHECKED:
            frame = _parse_frame(body)
        elif marker == 0xC4:
            tables.update(_parse_tables(body))
        elif marker == 0xDD and len(body) >= 2:
            restart = struct.unpack(">H", body[:2])[0]
        elif marker == 0xDA:
            if frame is None:
                raise _Unchecked
            scan_end, pieces = _pieces(data, end)
            plan, mcus = _scan_plan(body, frame, tables)
            finding, used = _check_scan(pieces, plan, mcus, restart, left)
            if finding is not None:
                return [finding]
            if left is not None:
                left -= used
                if left <= 0:
                    return []
            pos = scan_end
            continue
        pos = end
    return []


def _parse_frame(body: bytes) -> _Frame:
    if len(body) < 6:
        raise _Unchecked
    precision, height, width, count = struct.unpack(">BHHB", body[:6])
    if height == 0 or width == 0 or count == 0 or len(body) < 6 + 3 * count or precision not in (8, 12):
        raise _Unchecked
    components = {}
    for i in range(count):
        ident, factors = body[6 + 3 * i], body[7 + 3 * i]
        h, v = factors >> 4, factors & 15
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise _Unchecked
        components[ident] = (h, v)
    return _Frame(width, height, components, precision)


def _parse_tables(body: bytes) -> dict[tuple[int, int], bytes]:
    """(class, id) -> the table's 16 counts and its symbols; class 0 is DC, 1 is AC."""
    out = {}
    at = 0
    while at + 17 <= len(body):
        kind = body[at]
        size = 17 + sum(body[at + 1 : at + 17])
        if at + size > len(body) or kind >> 4 > 1:
            raise _Unchecked
        out[(kind >> 4, kind & 15)] = bytes(body[at + 1 : at + size])
        at += size
    return out


def _scan_plan(body: bytes, frame: _Frame, tables: dict[tuple[int, int], bytes]) -> tuple[list[_Tables], int]:
    """The (DC, AC) lookup tables of each block of one MCU, in order, and the scan's MCU count."""
    if not body:
        raise _Unchecked
    count = body[0]
    if count == 0 or len(body) < 1 + 2 * count + 3:
        raise _Unchecked
    h_max = max(h for h, _ in frame.components.values())
    v_max = max(v for _, v in frame.components.values())
    plan = []
    for i in range(count):
        ident, selectors = body[1 + 2 * i], body[2 + 2 * i]
        if ident not in frame.components:
            raise _Unchecked
        dc = tables.get((0, selectors >> 4))
        ac = tables.get((1, selectors & 15))
        if dc is None or ac is None:
            raise _Unchecked
        lookups = _block_tables(frame.precision, dc, ac)
        h, v = frame.components[ident]
        if count == 1:
            blocks_x = _ceil(_ceil(frame.width * h, h_max), 8)
            blocks_y = _ceil(_ceil(frame.height * v, v_max), 8)
            return [lookups], blocks_x * blocks_y
        plan += [lookups] * (h * v)
    if len(plan) > 10:
        raise _Unchecked
    return plan, _ceil(frame.width, 8 * h_max) * _ceil(frame.height, 8 * v_max)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=32)
def _block_tables(precision: int, dc_spec: bytes, ac_spec: bytes) -> _Tables:
    """One component's lookups, each indexed by the next 16 bits of the stream (cached: tables repeat).

    ``first``: a block's DC code and magnitude, then as many whole AC codes as fit in the
    16 bits (``bits | step << 5``; 0 for no such DC code, -1 for a category out of range).
    ``many``: as many whole AC codes as fit, ``bits | step << 5``. ``one``: one AC code,
    for the exact end of a block that ``many`` may have run past.
    """
    dc_length, dc_symbol = _codes(dc_spec)
    one_bits, one_step = _ac_single(ac_spec, precision + 2)
    dc_bad = (dc_length == 0) | (dc_symbol > precision + 3)
    dc_bits = np.where(dc_bad, 0, dc_length + dc_symbol)
    first_bits, first_step = _greedy(dc_bits, np.zeros_like(dc_bits), dc_bad, one_bits, one_step, 62)
    first = np.where(dc_length == 0, 0, np.where(dc_bad, -1, first_bits | first_step << 5))
    many_bits, many_step = _greedy(one_bits, one_step, one_step >= _BAD_CODE, one_bits, one_step, 63)
    return _shared(first), _shared(many_bits | many_step << 5), _shared(one_bits | one_step << 5)


def _codes(spec: bytes) -> tuple[np.ndarray, np.ndarray]:
    """For each 16-bit value: the length of the Huffman code it starts with (0: none) and its symbol."""
    lengths = np.zeros(65536, np.int32)
    symbols = np.zeros(65536, np.int32)
    code = 0
    at = 16
    for length in range(1, 17):
        count = spec[length - 1]
        if count:
            if code + count > 1 << length:
                raise _Unchecked  # libjpeg refuses such a table: the decode fails, not this check
            shift = 16 - length
            lengths[code << shift : (code + count) << shift] = length
            symbols[code << shift : (code + count) << shift] = np.repeat(
                np.frombuffer(spec[at : at + count], np.uint8), 1 << shift
            )
            at += count
            code += count
        code <<= 1
    return lengths, symbols


def _ac_single(spec: bytes, max_category: int) -> tuple[np.ndarray, np.ndarray]:
    """Bits and index step of the one AC code each 16-bit value starts with."""
    length, symbol = _codes(spec)
    run, size = symbol >> 4, symbol & 15
    bits = np.where(size == 0, length, length + size)
    step = np.where(size == 0, np.where(run == 15, 16, _EOB), run + 1)  # libjpeg: any run/0 but ZRL ends the block
    bad_category = (length > 0) & (size > max_category)
    bits = np.where((length == 0) | bad_category, 0, bits)
    step = np.where(length == 0, _BAD_CODE, np.where(bad_category, _BAD_CATEGORY, step))
    return bits, step


def _greedy(
    bits: np.ndarray, step: np.ndarray, stop: np.ndarray, ac_bits: np.ndarray, ac_step: np.ndarray, max_step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each 16-bit value's first code (``bits``, ``step``), then the AC codes that follow it whole
    within the 16 bits, up to an end of block and while the index steps add up to ``max_step``."""
    bits, step = bits.copy(), step.copy()
    values = np.flatnonzero(~stop & (step < _EOB) & (bits < 16))
    while values.size:
        more = (values << bits[values]) & 0xFFFF
        next_bits, next_step = ac_bits[more], ac_step[more]
        take = (
            (bits[values] + next_bits <= 16)
            & (next_step < _BAD_CODE)
            & ((next_step == _EOB) | (step[values] + next_step <= max_step))
        )
        values, next_bits, next_step = values[take], next_bits[take], next_step[take]
        bits[values] += next_bits
        step[values] += next_step
        values = values[(next_step < _EOB) & (bits[values] < 16)]
    return bits, step


_INTS = list(range(-1, 32 + (_BAD_CATEGORY + 64) * 32))
"""Every entry value once, so that a table's 65536 entries share a few hundred int objects."""


def _shared(values: np.ndarray) -> tuple[int, ...]:
    """``values`` as a tuple of shared int objects (65536 distinct ints would take 1.8 MB per table)."""
    return operator.itemgetter(*(values + 1).tolist())(_INTS)


def _pieces(data: bytes, start: int) -> tuple[int, list[_Piece]]:
    """Where the scan's data ends (its closing marker) and its restart intervals, de-stuffed."""
    pieces = []
    at = 0
    piece_start = start
    for match in _MARKER.finditer(data, start):
        raw = data[piece_start : match.start()]
        destuffed = raw.replace(b"\xff\x00", b"\xff")
        pieces.append(_Piece(piece_start, destuffed, at))
        at += len(destuffed)
        marker = match.group(1)[0]
        if not 0xD0 <= marker <= 0xD7:
            return match.end() - 2, pieces
        piece_start = match.end()
    raise _Unchecked


def _check_scan(
    pieces: list[_Piece], plan: list[_Tables], mcus: int, restart: int, budget: int | None
) -> tuple[str | None, int]:
    """The first fault in one scan's data, and how many de-stuffed bytes were checked."""
    per_piece = restart if restart else mcus
    due = _ceil(mcus, per_piece)
    buffer = b"".join(piece.destuffed for piece in pieces)
    limit = len(buffer) if budget is None else min(len(buffer), max(budget, 0))
    windows = _windows(buffer[:limit])
    for index, piece in enumerate(pieces):
        begin = piece.buffer_start * 8
        end = begin + len(piece.destuffed) * 8
        if index >= due:
            return (
                f"jpeg: {len(piece.destuffed)} extraneous bytes after the last block of the scan at byte "
                f"{piece.file_start} (corrupt data)"
            ), limit
        stop = min(end, limit * 8)
        count = min(per_piece, mcus - index * per_piece)
        bit, fault = _decode(windows, begin, stop, count, plan)
        if stop < end and bit >= stop:
            return None, limit  # the budget ran out inside this piece: the rest is not checked
        if fault is None and bit > end:
            fault = "ends"
        if fault is not None:
            return _describe(fault, piece, bit - begin, index, due), limit
        extra = (end - bit) // 8
        if extra:
            return (
                f"jpeg: {extra} extraneous bytes after the last block near byte "
                f"{_file_offset(piece, (bit - begin + 7) // 8)} (corrupt data)"
            ), limit
    if len(pieces) < due:
        return (
            f"jpeg: compressed data ends early: {due - len(pieces)} of {due} restart intervals missing (corrupt data)"
        ), limit
    return None, limit


def _windows(buffer: bytes) -> list[int]:
    """Entry i: bytes i..i+3 as one big-endian 32-bit number (the stream is zero-padded)."""
    values = np.frombuffer(buffer + bytes(_PAD), dtype=np.uint8).astype(np.uint32)
    return ((values[:-3] << 24) | (values[1:-2] << 16) | (values[2:-1] << 8) | values[3:]).tolist()


def _decode(windows: list[int], bit: int, stop: int, count: int, plan: list[_Tables]) -> tuple[int, str | None]:
    """Decode ``count`` MCUs from ``bit``; where it got to and the fault that stopped it, if any.

    Checks ``bit > stop`` after each MCU only: the padding after the data lets an MCU read
    past the end without an index error, and the caller tells running out from a fault.
    """
    for _ in range(count):
        for first, many, one in plan:
            entry = first[(windows[bit >> 3] >> (16 - (bit & 7))) & 0xFFFF]
            if entry <= 0:
                return bit, "code" if entry == 0 else "category"
            bit += entry & 31
            k = 1 + (entry >> 5)
            while k < 64:
                entry = many[(windows[bit >> 3] >> (16 - (bit & 7))) & 0xFFFF]
                bit += entry & 31
                k += entry >> 5
            if k != 64 and not _EOB < k < _EOB + 64:
                if k < _BAD_CODE:
                    bit, k = _one_by_one(windows, bit - (entry & 31), k - (entry >> 5), one)
                if k != 64 and not _EOB < k < _BAD_CODE:
                    return bit, "index" if k < _EOB else "code" if k < _BAD_CATEGORY else "category"
        if bit > stop:
            return bit, None
    return bit, None


def _one_by_one(windows: list[int], bit: int, k: int, one: tuple[int, ...]) -> tuple[int, int]:
    """The rest of a block one code at a time: several codes at once ran past its end (or past 63)."""
    while k < 64:
        entry = one[(windows[bit >> 3] >> (16 - (bit & 7))) & 0xFFFF]
        bit += entry & 31
        k += entry >> 5
    return bit, k


def _describe(fault: str, piece: _Piece, bit: int, index: int, due: int) -> str:
    """The warning for a fault at ``bit`` of a piece; one in padding (the one bits that end it) means the data ended."""
    near = _file_offset(piece, min(bit // 8, len(piece.destuffed)))
    left = len(piece.destuffed) * 8 - bit
    if fault == "ends" or left <= 0 or (left < 8 and piece.destuffed[-1] & ((1 << left) - 1) == (1 << left) - 1):
        where = f" (restart interval {index} of {due})" if due > 1 else ""
        return f"jpeg: compressed data ends before the last block{where} at byte {near} (corrupt data)"
    what = {
        "code": "bad Huffman code",
        "category": "magnitude category out of range",
        "index": "AC coefficient index past 63",
    }[fault]
    return f"jpeg: {what} in the compressed data near byte {near} (corrupt data)"


def _file_offset(piece: _Piece, index: int) -> int:
    """Byte ``index`` of a piece's de-stuffed data -> its offset in the file (each 0xFF was two bytes)."""
    return piece.file_start + index + piece.destuffed.count(b"\xff", 0, index)
